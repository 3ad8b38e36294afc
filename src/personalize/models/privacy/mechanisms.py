"""Noise mechanisms for differential privacy and the record of a guarantee.

The analytic Gaussian mechanism (Balle & Wang, ICML 2018, Theorem 8 / Algorithm 1): adding
N(0, sigma^2 I) to a function with L2 sensitivity Delta is (epsilon, delta)-DP if and only if

    Phi(Delta / (2 sigma) - epsilon sigma / Delta) - e^epsilon Phi(-Delta / (2 sigma) - epsilon sigma / Delta)
        <= delta,

with Phi the standard normal CDF. The left side falls as sigma grows, so the smallest such sigma
is found by bisection. It holds for every epsilon > 0, unlike the classic calibration
sigma = sqrt(2 ln(1.25 / delta)) Delta / epsilon, which is proven only for epsilon < 1 and is
larger than needed where it holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.stats import norm


def gaussian_privacy_loss(sigma: float, epsilon: float, sensitivity: float) -> float:
    """The delta achieved by Gaussian noise of std ``sigma`` at ``epsilon`` for L2 ``sensitivity``
    (the left side of Balle & Wang's condition; e^epsilon Phi(.) is evaluated in log space)."""
    if sigma <= 0 or epsilon <= 0 or sensitivity <= 0:
        raise ValueError("sigma, epsilon and sensitivity must be positive")
    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    return float(norm.cdf(a - b) - math.exp(epsilon + norm.logcdf(-a - b)))


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float, rtol: float = 1e-12) -> float:
    """The smallest noise std (same unit as ``sensitivity``) for which the Gaussian mechanism is
    (``epsilon``, ``delta``)-DP, to relative tolerance ``rtol``; the value returned always satisfies
    the condition (the upper end of the bisection bracket)."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not sensitivity > 0:
        raise ValueError(f"sensitivity must be positive, got {sensitivity}")
    hi = sensitivity
    while gaussian_privacy_loss(hi, epsilon, sensitivity) > delta:
        hi *= 2.0
    lo = hi / 2.0
    while gaussian_privacy_loss(lo, epsilon, sensitivity) <= delta:
        hi, lo = lo, lo / 2.0
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        if gaussian_privacy_loss(mid, epsilon, sensitivity) <= delta:
            hi = mid
        else:
            lo = mid
    return hi


def classic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """sqrt(2 ln(1.25 / delta)) sensitivity / epsilon (Dwork & Roth, Theorem A.1); refuses
    epsilon >= 1, where that calibration carries no guarantee."""
    if not 0 < epsilon < 1:
        raise ValueError(f"the classic Gaussian calibration holds only for 0 < epsilon < 1, got {epsilon}")
    return math.sqrt(2.0 * math.log(1.25 / delta)) * sensitivity / epsilon


@dataclass(frozen=True)
class DPSpec:
    """A stated guarantee: ``unit`` (``user``: one user's whole history), ``epsilon``, ``delta``,
    the clipping norm ``clip`` (L2 bound on one unit's row), the noise std ``sigma`` and the
    ``mechanism`` that calibrated it. ``epsilon`` None: not private (clipping only, no noise)."""

    unit: str
    epsilon: float | None
    delta: float | None
    clip: float | None
    sigma: float
    mechanism: str

    def params(self) -> dict[str, float | str | None]:
        """Flat ``dp_*`` entries for logging beside the model's parameters."""
        return {
            "dp_unit": self.unit,
            "dp_epsilon": self.epsilon,
            "dp_delta": self.delta,
            "dp_clip": self.clip,
            "dp_sigma": self.sigma,
            "dp_mechanism": self.mechanism,
        }


def clip_rows(matrix, clip: float | None):
    """Rows of a sparse matrix scaled by min(1, clip / ||x_u||_2) (float64 CSR copy); None: unchanged."""
    x = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
    if clip is None:
        return x
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    scale = np.ones_like(norms)
    big = norms > clip
    scale[big] = clip / norms[big]
    return sp.csr_matrix(sp.diags(scale) @ x)
