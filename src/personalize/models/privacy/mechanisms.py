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

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field, model_validator
from scipy.stats import norm

from personalize.config.model import ModelConfig
from personalize.core.errors import ConfigError, DataError
from personalize.models.privacy.noise import SECRET

#: what a private model's fit reads or releases outside its guarantee, per unit
NOT_COVERED = {
    "user": (
        "the validation users, whose targets choose the grid point and the epoch; the evaluation report "
        "(test metrics, the membership attack, split statistics)"
    ),
    "event": (
        "a user's whole history (only each single interaction is protected; k interactions of one user "
        "have group privacy k epsilon); the validation interactions, which choose the epoch (ranked "
        "without masking the training items); the evaluation report (test metrics, the membership "
        "attack, split statistics)"
    ),
}


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
    target the noise was calibrated to); None where they do not apply.

    ``noise``: ``secret`` (drawn from OS entropy, never recorded: :mod:`.noise`) or
    ``reproducible`` (the test switch: the guarantee does not hold, :attr:`private` is False).
    ``max_units``: the public bound N on the number of units that delta and the sampling plan
    derive from. ``not_covered``: what the model's fit reads or releases outside the guarantee."""

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
    noise: str = SECRET
    max_units: int | None = None
    not_covered: str = ""

    @property
    def private(self) -> bool:
        """True when the guarantee holds: noise was added (epsilon set) from a secret source."""
        return self.epsilon is not None and self.noise == SECRET

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
            "dp_noise": self.noise if self.epsilon is not None else None,
            "dp_private": self.private,
            "dp_max_units": self.max_units,
            "dp_not_covered": self.not_covered or None,
        }


class PrivateModel:
    """What a private model adds to its non-private base (mixed in first): its guarantee
    ``dp_`` (:class:`DPSpec`), saved in ``model.json`` and restored on load."""

    dp_: DPSpec

    def _meta(self) -> dict[str, Any]:
        meta = super()._meta()  # type: ignore[misc]
        if getattr(self, "dp_", None) is not None:
            meta["privacy"] = dataclasses.asdict(self.dp_)
        return meta

    def _set_meta(self, meta: dict[str, Any]) -> None:
        super()._set_meta(meta)  # type: ignore[misc]
        if "privacy" in meta:
            self.dp_ = DPSpec(**meta["privacy"])


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
        description="Privacy delta; null: min(1e-6, 1 / max_units^2); must be below 1 / (10 max_units).",
    )
    max_units: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Public upper bound N on the number of units (users or interactions) the model is fitted "
            "on, stated by whoever configures it (not counted from the data): delta and DP-SGD's "
            "sampling rate and steps derive from it. Required with epsilon."
        ),
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
        if self.epsilon is not None and self.max_units is None:
            raise ValueError(
                "max_units: a private model (epsilon set) needs a public upper bound N on the number of "
                "units it is fitted on (e.g. max_units: 1000 for at most 1,000 users); delta and the "
                "sampling plan derive from it, never from the private count"
            )
        if self.epsilon is not None:
            try:
                resolve_delta(self.epsilon, self.delta, self.max_units, "unit")
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self


def default_delta(max_units: int) -> float:
    """min(1e-6, 1 / N^2) for the public bound N on the number of units."""
    return min(1e-6, 1.0 / float(max_units) ** 2)


def check_unit_bound(max_units: int | None, n_units: int | None, unit: str) -> None:
    """Refuse a missing public bound N, or data holding more units than N (DataError): the
    stated bound is what the guarantee's delta and sampling plan rest on."""
    if max_units is None:
        raise ConfigError(
            f"max_units: a private release needs a public upper bound N on the number of {unit}s"
        )
    if n_units is not None and n_units > max_units:
        raise DataError(
            f"max_units: the data holds more {unit}s than the configured public bound N = {max_units}; "
            f"raise max_units to a bound that holds for this data"
        )


def resolve_delta(
    epsilon: float | None, delta: float | None, max_units: int | None, unit: str, n_units: int | None = None
) -> float | None:
    """delta for a release over at most ``max_units`` = N units (a public bound): None without
    epsilon; default min(1e-6, 1 / N^2); refused (ConfigError) from 1 / (10 N) up, since a
    delta near 1 / N allows publishing a unit's data outright. ``n_units`` (the data's count,
    when known) must not exceed N (:func:`check_unit_bound`)."""
    if epsilon is None:
        return None
    check_unit_bound(max_units, n_units, unit)
    n = int(max_units)
    delta = delta if delta is not None else default_delta(n)
    if delta >= 1.0 / (10.0 * n):
        raise ConfigError(
            f"delta: {delta:g} is not below 1 / (10 N) = {1.0 / (10.0 * n):.3g} for the public bound "
            f"N = {n} {unit}s; a guarantee with such a delta allows publishing a {unit}'s data outright"
        )
    return delta
