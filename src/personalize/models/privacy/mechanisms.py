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
from pydantic import Field, model_validator
from scipy.stats import norm

from personalize.config.model import ModelConfig
from personalize.core.errors import ConfigError


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
    ``mechanism`` that calibrated it. ``epsilon`` None: not private (clipping only, no noise).

    Iterative mechanisms (``dp_sgd``) also state the ``noise_multiplier`` (noise std / clip), the
    Poisson ``sample_rate`` q, the number of noisy ``steps`` composed, the ``accountant`` that
    composed them and the ``epsilon_spent`` it reports for those steps (at most ``epsilon``, the
    target the noise was calibrated to); None where they do not apply."""

    unit: str
    epsilon: float | None
    delta: float | None
    clip: float | None
    sigma: float
    mechanism: str
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    steps: int | None = None
    accountant: str | None = None
    epsilon_spent: float | None = None

    def params(self) -> dict[str, float | str | None]:
        """Flat ``dp_*`` entries for logging beside the model's parameters."""
        return {
            "dp_unit": self.unit,
            "dp_epsilon": self.epsilon,
            "dp_delta": self.delta,
            "dp_clip": self.clip,
            "dp_sigma": self.sigma,
            "dp_mechanism": self.mechanism,
            "dp_noise_multiplier": self.noise_multiplier,
            "dp_sample_rate": self.sample_rate,
            "dp_steps": self.steps,
            "dp_accountant": self.accountant,
            "dp_epsilon_spent": self.epsilon_spent,
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


def composed_gaussian_sigma(epsilon: float, delta: float, sensitivity: float, mechanisms: int) -> float:
    """Noise std for each of ``mechanisms`` Gaussian mechanisms of L2 ``sensitivity`` whose
    (adaptive) composition is (``epsilon``, ``delta``)-DP:
    ``analytic_gaussian_sigma(epsilon, delta, sensitivity) * sqrt(mechanisms)``.

    Derivation (Gaussian differential privacy, Dong, Roth & Su, JRSS-B 2022): Gaussian noise of
    std sigma on a statistic of L2 sensitivity Delta is mu-GDP with mu = Delta / sigma (Theorem
    2.7); k adaptively composed mu_i-GDP mechanisms are sqrt(sum mu_i^2)-GDP (Corollary 3.3); and
    mu-GDP is (epsilon, delta)-DP exactly when Balle & Wang's condition holds at sigma / Delta =
    1 / mu (Corollary 2.13), i.e. for mu <= mu* = sensitivity / analytic_gaussian_sigma(epsilon,
    delta, sensitivity). k mechanisms with sigma_i = sqrt(k) * analytic sigma have mu_i = mu* /
    sqrt(k) and compose to exactly mu*. ``mechanisms`` 1 is the analytic sigma itself."""
    if mechanisms < 1:
        raise ValueError(f"mechanisms must be at least 1, got {mechanisms}")
    return analytic_gaussian_sigma(epsilon, delta, sensitivity) * math.sqrt(mechanisms)


def gaussian_dp_mu(sensitivities, sigmas) -> float:
    """mu of the composition of Gaussian mechanisms (Dong, Roth & Su, Corollary 3.3):
    sqrt(sum_i (sensitivity_i / sigma_i)^2); it is (epsilon, delta)-DP for
    delta = ``gaussian_privacy_loss(1 / mu, epsilon, 1)``."""
    s = np.asarray(sensitivities, dtype=np.float64)
    g = np.broadcast_to(np.asarray(sigmas, dtype=np.float64), s.shape)
    if (s <= 0).any() or (g <= 0).any():
        raise ValueError("sensitivities and sigmas must be positive")
    return float(np.sqrt(np.sum((s / g) ** 2)))


class DPConfig(ModelConfig):
    """The privacy settings every differentially private model has (mixed into its config)."""

    epsilon: float | None = Field(
        default=None,
        gt=0,
        description="Privacy budget in the model's unit (user or event); null: not private (no noise).",
    )
    delta: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Privacy delta; null: 1 / (10 n), n = training units; must be below 1 / n.",
    )
    clip: float | None = Field(
        default=1.0,
        gt=0,
        description="L2 bound on each user's row; null: no clipping (only without epsilon).",
    )

    @model_validator(mode="after")
    def _noise_needs_clipping(self):
        if self.epsilon is not None and self.clip is None:
            raise ValueError("clip: a private model (epsilon set) needs a clipping norm")
        return self


def resolve_delta(epsilon: float | None, delta: float | None, n_units: int, unit: str) -> float | None:
    """delta for ``n_units`` units: None without epsilon; default 1 / (10 n); must be below 1 / n
    (ConfigError otherwise: such a delta allows publishing one unit's data outright)."""
    if epsilon is None:
        return None
    n = max(int(n_units), 1)
    delta = delta if delta is not None else 1.0 / (10.0 * n)
    if delta >= 1.0 / n:
        raise ConfigError(
            f"delta: {delta} is not below 1 / number of {unit} units (1 / {n}); a guarantee with such a "
            f"delta allows publishing one {unit}'s data outright"
        )
    return delta
