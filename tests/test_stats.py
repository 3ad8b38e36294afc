"""Bootstrap intervals and paired tests."""

from __future__ import annotations

import numpy as np
import pytest

from personalize.evaluation.stats import bootstrap_ci, holm, paired_test


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.normal(0.3, 0.1, 100)
    large = rng.normal(0.3, 0.1, 10000)
    lo, hi = bootstrap_ci(small, seed=1)
    assert lo < small.mean() < hi
    lo2, hi2 = bootstrap_ci(large, seed=1)
    assert (hi2 - lo2) < (hi - lo) / 5
    # about 1.96 standard errors either side
    assert (hi2 - lo2) / 2 == pytest.approx(1.96 * large.std() / np.sqrt(len(large)), rel=0.15)
    assert bootstrap_ci(small, seed=1) == (lo, hi)  # seeded


def test_paired_tests():
    rng = np.random.default_rng(0)
    a = rng.random(500)
    assert paired_test(a, a) == 1.0
    for method in ("t", "wilcoxon", "permutation"):
        assert paired_test(a + 0.05, a + rng.normal(0, 0.01, 500), method) < 1e-3
        assert paired_test(a + rng.normal(0, 0.01, 500), a + rng.normal(0, 0.01, 500), method) > 0.01
    with pytest.raises(ValueError):
        paired_test(a, a[:10])


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(holm([np.nan, 0.5])[0])


def test_a_constant_nonzero_difference_is_certain_and_quiet():
    import warnings

    a = np.array([0.5, 0.25, 0.75, 0.1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert paired_test(a + 0.1, a, "t") == 0.0  # zero variance: t is infinite
        assert paired_test(a, a, "t") == 1.0
