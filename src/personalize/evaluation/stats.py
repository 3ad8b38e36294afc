"""Uncertainty over users: bootstrap intervals and paired tests on per-user metric vectors."""

from __future__ import annotations

import numpy as np
from scipy import stats


def bootstrap_ci(
    values: np.ndarray, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped), resampling users."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return (np.nan, np.nan)
    if len(x) == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // len(x))
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, len(x), size=(stop - start, len(x)))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def paired_test(
    a: np.ndarray, b: np.ndarray, method: str = "t", seed: int = 0, resamples: int = 10000
) -> float:
    """Two-sided p-value that the per-user values ``a`` and ``b`` (same users) have equal means.

    ``t``: paired t-test; ``wilcoxon``: Wilcoxon signed-rank (zero differences dropped);
    ``permutation``: sign-flip permutation test of the mean difference. Pairs with a NaN are
    dropped. Identical vectors give p = 1; for the t-test, a constant nonzero difference gives p = 0.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired test needs the same users: shapes {a.shape} and {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    if len(d) < 2 or np.allclose(d, 0):
        return 1.0
    if method == "t":
        if np.allclose(d, d[0], rtol=1e-9, atol=1e-12):  # every user differs by the same amount:
            return 0.0  # zero variance, t is infinite (scipy would warn of precision loss)
        return float(stats.ttest_rel(a[keep], b[keep]).pvalue)
    if method == "wilcoxon":
        nz = d[d != 0]
        if len(nz) < 1:
            return 1.0
        return float(stats.wilcoxon(nz).pvalue)
    if method == "permutation":
        rng = np.random.default_rng(seed)
        observed = abs(d.mean())
        signs = rng.choice([-1.0, 1.0], size=(resamples, len(d)))
        null = np.abs((signs * d).mean(axis=1))
        return float((1 + (null >= observed - 1e-15).sum()) / (resamples + 1))
    raise ValueError(f"unknown paired test {method!r}; choose t, wilcoxon or permutation")


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given; NaN stays NaN)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    idx = np.flatnonzero(ok)
    if not len(idx):
        return out.tolist()
    order = idx[np.argsort(p[idx])]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()
