"""Noisy aggregates for what an exported model ships: user-level private item counts.

An exported model carries a popularity vector (the fallback for cold and unknown users). Its
exact counts n_j = number of users who chose item j are not private: one user moves them by
their item count. :func:`noisy_item_counts` releases them with each user's contribution bounded
and noise calibrated to that bound, in the unit of one user's whole history:

- ``laplace`` (pure epsilon-DP, delta 0): each user counts at most ``max_items_per_user`` = m
  items; a user with more contributes a uniformly random subset of m of their items (drawn from
  ``rng``, independently of everyone's data). One user then moves the count vector by at most m in
  L1 norm, and Laplace noise of scale b = m / epsilon per item (std sqrt(2) b) gives epsilon-DP
  (Dwork & Roth, Theorem 3.6).
- ``gaussian`` ((epsilon, delta)-DP): each user's binary row is scaled to L2 norm at most
  ``clip`` (default sqrt(m): a user with at most m items counts fully, one with n > m items
  counts clip / sqrt(n) per item; every item is kept), so one user moves the counts by at most
  clip in L2 norm; Gaussian noise of the analytic sigma at (epsilon, delta) for sensitivity clip
  (Balle & Wang) gives (epsilon, delta)-DP.

Counts are of presence (a nonzero entry of the users x items matrix), whatever its weight.
Everything computed from the noisy vector (ranking, rounding, clamping at 0) is post-processing.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from personalize.core.errors import ConfigError, DataError
from personalize.models.privacy.mechanisms import DPSpec, analytic_gaussian_sigma, clip_rows, resolve_delta

MECHANISMS = ("laplace", "gaussian")


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
    binary row, restricted to a random m-subset when the user has more than m items;
    ``gaussian``: the binary row scaled to L2 norm <= clip (default sqrt(m)). The released count
    vector is the column sum of these rows plus noise."""
    _check_mechanism(mechanism, max_items_per_user, clip)
    x = _presence(matrix)
    if mechanism == "gaussian":
        return clip_rows(x, math.sqrt(max_items_per_user) if clip is None else clip)
    rng = np.random.default_rng() if rng is None else rng
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
    rng: np.random.Generator | None = None,
    clip: float | None = None,
) -> tuple[np.ndarray, DPSpec]:
    """User-level private item counts of a users x items ``matrix`` (module doc) and their
    guarantee: (noisy counts, float64 per item, DPSpec).

    ``epsilon`` None: the exact presence counts (not private; DPSpec mechanism "none").
    ``delta`` (Gaussian only): default 1 / (10 n), n = users with at least one interaction; it must
    be below 1 / n. The DPSpec's ``clip`` is the contribution bound (Laplace: the L1 bound m;
    Gaussian: the L2 bound) and its ``sigma`` the noise std (Laplace: sqrt(2) m / epsilon)."""
    _check_mechanism(mechanism, max_items_per_user, clip)
    if epsilon is None:
        counts = np.asarray(_presence(matrix).sum(axis=0)).ravel()
        return counts, DPSpec("user", None, None, None, 0.0, "none")
    if not epsilon > 0 or not math.isfinite(epsilon):
        raise ConfigError(f"epsilon: expected a positive number, got {epsilon}")
    rng = np.random.default_rng() if rng is None else rng
    rows = bounded_rows(matrix, mechanism, max_items_per_user, rng, clip)
    sums = np.asarray(rows.sum(axis=0)).ravel()
    n_users = int(np.count_nonzero(np.diff(rows.indptr)))
    if mechanism == "laplace":
        if delta not in (None, 0, 0.0):
            raise ConfigError(f"delta: the Laplace mechanism is pure epsilon-DP (delta 0), got {delta}")
        scale = max_items_per_user / epsilon
        noisy = sums + rng.laplace(0.0, scale, size=sums.shape)
        spec = DPSpec("user", epsilon, 0.0, float(max_items_per_user), math.sqrt(2.0) * scale, "laplace")
        return noisy, spec
    bound = math.sqrt(max_items_per_user) if clip is None else float(clip)
    if delta is not None and not delta > 0:
        raise ConfigError(f"delta: expected a positive number, got {delta}")
    delta = resolve_delta(epsilon, delta, n_users, "user")
    sigma = analytic_gaussian_sigma(epsilon, delta, bound)
    noisy = sums + rng.normal(0.0, sigma, size=sums.shape)
    return noisy, DPSpec("user", epsilon, delta, bound, sigma, "analytic_gaussian")


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
