"""Noisy counts: user-level private item counts and the samplers every private count uses.

An exported model carries a popularity vector (the fallback for cold and unknown users). Its
exact counts n_j = number of users who chose item j are not private: one user moves them by
their item count. :func:`noisy_item_counts` releases them with each user's contribution bounded
and noise calibrated to that bound, in the unit of one user's whole history:

- ``laplace`` (pure epsilon-DP, delta 0): each user counts at most ``max_items_per_user`` = m
  items; a user with more contributes a uniformly random subset of m of their items (a sampling
  decision drawn from secret randomness, :mod:`.noise`, independently of everyone else's data).
  One user then moves the integer count vector by at most m in L1 norm, and **discrete** Laplace
  noise of scale b = m / epsilon per item (the two-sided geometric mechanism) gives epsilon-DP.
- ``gaussian`` ((epsilon, delta)-DP): each user's binary row is scaled to L2 norm at most
  ``clip`` (default sqrt(m): a user with at most m items counts fully, one with n > m items
  counts clip / sqrt(n) per item; every item is kept), so one user moves the counts by at most
  clip in L2 norm; Gaussian noise calibrated to that bound (:func:`gaussian_release`).

**Samplers** (:func:`laplace_release`, :func:`gaussian_release`; also DP popularity's and private
ALS's fallback counts): OpenDP's measurements, whose samplers are exact (integer arithmetic on a
CSPRNG, the Gaussian on floats sampled exactly on a fine grid and rounded), so the
floating-point attacks on textbook Laplace and Gaussian sampling (Mironov 2012; Jin et al. 2022)
do not apply, and whose privacy maps state what each release spends. The Gaussian's map is in
zero-concentrated DP (rho = Delta^2 / (2 sigma^2)); its (epsilon, delta) comes from OpenDP's
conversion (Canonne, Kamath & Steinke 2020), which needs about 5-8% more noise than the analytic
Gaussian calibration of a continuous sampler at the same (epsilon, delta): the price of an exact
sampler. Under the test switch (:func:`~.noise.reproducible_noise`) the same distributions are
drawn with NumPy from the test seed (not private).

Delta is set by the caller from a public bound N on the number of users
(:func:`~.mechanisms.resolve_delta`). Counts are of presence (a nonzero entry of the users x items
matrix), whatever its weight. Everything computed from the noisy vector (ranking, rounding,
clamping at 0) is post-processing.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.sparse as sp

from personalize.core.errors import ConfigError, DataError
from personalize.models.privacy.mechanisms import DPSpec, check_unit_bound, clip_rows, resolve_delta
from personalize.models.privacy.noise import Noise, fit_noise

MECHANISMS = ("laplace", "gaussian")
LAPLACE = "discrete_laplace"
GAUSSIAN = "gaussian_zcdp"


def _opendp():
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


def _gaussian_measurement(scale: float):
    dp = _opendp()
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l2_distance(T=float)
    return space >> dp.m.then_gaussian(scale=float(scale))


@functools.lru_cache(maxsize=256)
def zcdp_budget(epsilon: float, delta: float) -> float:
    """The largest rho such that rho-zCDP implies (``epsilon``, ``delta``)-DP by OpenDP's
    conversion (its binary search over the Gaussian's scale at sensitivity 1; rho = 1 / (2 s^2))."""
    if not (epsilon > 0 and 0 < delta < 1):
        raise ConfigError(f"expected epsilon > 0 and 0 < delta < 1, got epsilon {epsilon}, delta {delta}")
    dp = _opendp()

    def make(scale: float):
        return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(_gaussian_measurement(scale)), delta=delta)

    scale = dp.binary_search_param(make, d_in=1.0, d_out=(epsilon, delta), T=float)
    return float(_gaussian_measurement(scale).map(1.0))


def zcdp_epsilon(rho: float, delta: float) -> float:
    """The epsilon at ``delta`` of a rho-zCDP release, by OpenDP's conversion."""
    dp = _opendp()
    scale = 1.0 / math.sqrt(2.0 * rho)
    meas = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(_gaussian_measurement(scale)), delta=delta)
    return float(meas.map(1.0)[0])


def gaussian_scale(sensitivity: float, rho: float) -> float:
    """The noise std whose Gaussian release of L2 ``sensitivity`` spends at most ``rho`` (zCDP):
    sensitivity / sqrt(2 rho), checked against OpenDP's privacy map (raised by 1e-9 relative
    steps until the map agrees, should its rounding ask for more)."""
    scale = sensitivity / math.sqrt(2.0 * rho)
    for _ in range(64):
        if _gaussian_measurement(scale).map(float(sensitivity)) <= rho:
            return scale
        scale *= 1.0 + 1e-9
    raise ConfigError(f"no Gaussian scale spends at most rho {rho} at sensitivity {sensitivity}")


def gaussian_release(values: np.ndarray, scale: float, noise: Noise) -> np.ndarray:
    """``values`` (float64, 1-D) plus Gaussian noise of std ``scale``: OpenDP's exact sampler on
    its CSPRNG; under the test switch NumPy's, from the test seed."""
    values = np.asarray(values, dtype=np.float64)
    if not noise.secret:
        return values + noise.numpy(101).normal(0.0, scale, size=values.shape)
    if not len(values):
        return values.copy()
    return np.asarray(_gaussian_measurement(scale)(values.tolist()), dtype=np.float64)


def laplace_release(
    counts: np.ndarray, scale: float, sensitivity: int, epsilon: float, noise: Noise
) -> np.ndarray:
    """Integer ``counts`` plus discrete Laplace noise of ``scale`` (P(k) proportional to
    exp(-|k| / scale)): OpenDP's exact sampler, its map checked to spend at most ``epsilon`` for
    L1 ``sensitivity``; under the test switch the difference of two geometric draws, from the
    test seed. Returns float64 (integer values)."""
    counts = np.asarray(counts, dtype=np.int64)
    if not noise.secret:
        rng = noise.numpy(102)
        p = -math.expm1(-1.0 / scale)
        return (counts + rng.geometric(p, counts.shape) - rng.geometric(p, counts.shape)).astype(np.float64)
    dp = _opendp()
    space = dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int)
    meas = space >> dp.m.then_laplace(scale=float(scale))
    if meas.map(int(sensitivity)) > epsilon * (1.0 + 1e-12):
        raise ConfigError(f"discrete Laplace of scale {scale} spends more than epsilon {epsilon}")
    if not len(counts):
        return counts.astype(np.float64)
    return np.asarray(meas(counts.tolist()), dtype=np.float64)


def _presence(matrix) -> sp.csr_matrix:
    if not (sp.issparse(matrix) or isinstance(matrix, np.ndarray)) or matrix.ndim != 2:
        raise DataError(
            f"noisy_item_counts: expected a 2-D users x items matrix (SciPy sparse or NumPy), got "
            f"{type(matrix).__name__}"
        )
    x = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
    x.eliminate_zeros()
    if x.nnz and (not np.isfinite(x.data).all() or (x.data < 0).any()):
        bad = int(np.count_nonzero(~np.isfinite(x.data) | (x.data < 0)))
        raise DataError(
            f"noisy_item_counts: {bad} interaction weights are negative or not finite; expected "
            "finite weights >= 0 (a nonzero weight marks an interaction)"
        )
    x.data[:] = 1.0
    return x


def bounded_rows(
    matrix,
    mechanism: str = "laplace",
    max_items_per_user: int = 50,
    rng: np.random.Generator | None = None,
    clip: float | None = None,
) -> sp.csr_matrix:
    """Each user's contribution before noise (module doc), one row per user: ``laplace``: the
    binary row, restricted to a random m-subset (drawn from ``rng``; default: a secret generator)
    when the user has more than m items; ``gaussian``: the binary row scaled to L2 norm <= clip
    (default sqrt(m)). The released count vector is the column sum of these rows plus noise."""
    _check_mechanism(mechanism, max_items_per_user, clip)
    x = _presence(matrix)
    if mechanism == "gaussian":
        return clip_rows(x, math.sqrt(max_items_per_user) if clip is None else clip)
    rng = Noise().numpy(0) if rng is None else rng
    counts = np.diff(x.indptr)
    keep = np.ones(x.nnz, dtype=bool)
    for u in np.flatnonzero(counts > max_items_per_user):
        lo = x.indptr[u]
        drop = np.ones(counts[u], dtype=bool)
        drop[rng.choice(counts[u], size=max_items_per_user, replace=False)] = False
        keep[lo + np.flatnonzero(drop)] = False
    x.data = keep.astype(np.float64)
    x.eliminate_zeros()
    return x


def noisy_item_counts(
    matrix,
    epsilon: float | None,
    delta: float | None = None,
    mechanism: str = "laplace",
    max_items_per_user: int = 50,
    clip: float | None = None,
    max_users: int | None = None,
    noise: Noise | None = None,
) -> tuple[np.ndarray, DPSpec]:
    """User-level private item counts of a users x items ``matrix`` (module doc) and their
    guarantee: (noisy counts, float64 per item, DPSpec).

    ``epsilon`` None: the exact presence counts (not private; DPSpec mechanism "none").
    ``delta`` (Gaussian only) and ``max_users`` (the public bound N on the number of users):
    :func:`~.mechanisms.resolve_delta`. ``noise``: default the fit's (:func:`~.noise.fit_noise`:
    secret). The DPSpec's ``clip`` is the contribution bound (Laplace: the L1 bound m; Gaussian:
    the L2 bound) and its ``sigma`` the noise std (Laplace: about sqrt(2) m / epsilon)."""
    _check_mechanism(mechanism, max_items_per_user, clip)
    if epsilon is None:
        counts = np.asarray(_presence(matrix).sum(axis=0)).ravel()
        return counts, DPSpec("user", None, None, None, 0.0, "none")
    if not epsilon > 0 or not math.isfinite(epsilon):
        raise ConfigError(f"epsilon: expected a positive number, got {epsilon}")
    noise = fit_noise() if noise is None else noise
    x = _presence(matrix)
    n_users = int(np.count_nonzero(np.diff(x.indptr)))
    if mechanism == "laplace":
        if delta not in (None, 0, 0.0):
            raise ConfigError(f"delta: the Laplace mechanism is pure epsilon-DP (delta 0), got {delta}")
        check_unit_bound(max_users, n_users, "user")
        rows = bounded_rows(x, mechanism, max_items_per_user, noise.numpy(103), clip)
        sums = np.rint(np.asarray(rows.sum(axis=0)).ravel()).astype(np.int64)
        scale = max_items_per_user / epsilon
        noisy = laplace_release(sums, scale, max_items_per_user, epsilon, noise)
        spec = DPSpec(
            "user",
            epsilon,
            0.0,
            float(max_items_per_user),
            math.sqrt(2.0) * scale,
            LAPLACE,
            noise=noise.kind,
            max_units=max_users,
        )
        return noisy, spec
    bound = math.sqrt(max_items_per_user) if clip is None else float(clip)
    if delta is not None and not delta > 0:
        raise ConfigError(f"delta: expected a positive number, got {delta}")
    delta = resolve_delta(epsilon, delta, max_users, "user", n_users)
    rows = bounded_rows(x, mechanism, max_items_per_user, None, clip)
    sums = np.asarray(rows.sum(axis=0)).ravel()
    sigma = gaussian_scale(bound, zcdp_budget(epsilon, delta))
    noisy = gaussian_release(sums, sigma, noise)
    spec = DPSpec(
        "user",
        epsilon,
        delta,
        bound,
        sigma,
        GAUSSIAN,
        accountant="zcdp",
        noise=noise.kind,
        max_units=max_users,
    )
    return noisy, spec


def _check_mechanism(mechanism: str, max_items_per_user: int, clip: float | None) -> None:
    if mechanism not in MECHANISMS:
        raise ConfigError(f"mechanism: expected one of {list(MECHANISMS)}, got {mechanism!r}")
    if isinstance(max_items_per_user, bool) or not isinstance(max_items_per_user, int | np.integer):
        raise ConfigError(f"max_items_per_user: expected a positive integer, got {max_items_per_user!r}")
    if max_items_per_user < 1:
        raise ConfigError(f"max_items_per_user: expected a positive integer, got {max_items_per_user}")
    if clip is not None and not (clip > 0 and math.isfinite(clip)):
        raise ConfigError(f"clip: expected a positive number, got {clip}")
    if clip is not None and mechanism == "laplace":
        raise ConfigError("clip: the Laplace mechanism bounds contributions by max_items_per_user, not clip")
