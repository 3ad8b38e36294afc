"""Noisy item counts for an exported model's popularity: contribution bounds and noise scale."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from personalize.core.errors import ConfigError, DataError
from personalize.models.privacy.aggregates import bounded_rows, noisy_item_counts, zcdp_budget
from personalize.models.privacy.mechanisms import analytic_gaussian_sigma
from personalize.models.privacy.noise import reproducible_noise


@pytest.fixture(scope="module")
def matrix():
    """300 users x 120 items; user u has between 1 and 60 items, a few weighted above 1."""
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for u in range(300):
        items = rng.choice(120, size=int(rng.integers(1, 61)), replace=False)
        rows += [u] * len(items)
        cols += list(items)
    x = sp.csr_matrix((rng.choice([1.0, 2.5], size=len(rows)), (rows, cols)), shape=(300, 120))
    return x


def test_laplace_rows_keep_at_most_m_of_the_users_own_items(matrix):
    m = 20
    rows = bounded_rows(matrix, "laplace", m, np.random.default_rng(1))
    n = np.diff(matrix.indptr)
    kept = np.diff(rows.indptr)
    np.testing.assert_array_equal(kept, np.minimum(n, m))
    assert set(np.unique(rows.data)) == {1.0}  # presence, whatever the weight
    for u in np.flatnonzero(n > m)[:20]:
        assert set(rows[u].indices) <= set(matrix[u].indices)
    for u in np.flatnonzero(n <= m)[:20]:
        np.testing.assert_array_equal(np.sort(rows[u].indices), np.sort(matrix[u].indices))
    again = bounded_rows(matrix, "laplace", m, np.random.default_rng(1))
    assert (again != rows).nnz == 0
    other = bounded_rows(matrix, "laplace", m, np.random.default_rng(2))
    assert (other != rows).nnz > 0


@pytest.mark.parametrize("mechanism, bound, order", [("laplace", 20.0, 1), ("gaussian", math.sqrt(20), 2)])
def test_removing_one_user_moves_the_counts_by_at_most_the_sensitivity(matrix, mechanism, bound, order):
    rng = np.random.default_rng(3)
    rows = bounded_rows(matrix, mechanism, 20, rng)
    full = np.asarray(rows.sum(axis=0)).ravel()
    changes = []
    for u in rng.choice(matrix.shape[0], size=60, replace=False):
        keep = np.arange(matrix.shape[0]) != u
        changes.append(np.linalg.norm(full - np.asarray(rows[keep].sum(axis=0)).ravel(), ord=order))
    assert max(changes) <= bound * (1 + 1e-9)
    assert max(changes) == pytest.approx(bound)  # attained by a user with more than 20 items
    # unbounded counts move by the user's item count: up to 60 in L1
    exact = noisy_item_counts(matrix, None)[0]
    heavy = int(np.argmax(np.diff(matrix.indptr)))
    keep = np.arange(matrix.shape[0]) != heavy
    assert np.abs(exact - noisy_item_counts(matrix[keep], None)[0]).sum() > 2 * 20


def test_laplace_noise_is_discrete_with_scale_sensitivity_over_epsilon(matrix):
    """OpenDP's discrete Laplace: integer counts, variance 2 e^(-1/b) / (1 - e^(-1/b))^2 (about
    2 b^2) with b = m / epsilon, plus the secret subset sampling's own small variance."""
    m, eps = 10, 0.5
    exact = np.asarray(bounded_rows(matrix, "laplace", m, np.random.default_rng(0)).sum(axis=0)).ravel()
    draws = np.array(
        [
            noisy_item_counts(matrix, eps, mechanism="laplace", max_items_per_user=m, max_users=300)[0]
            for _ in range(300)
        ]
    )
    spec = noisy_item_counts(matrix, eps, mechanism="laplace", max_items_per_user=m, max_users=300)[1]
    np.testing.assert_array_equal(draws, np.rint(draws))  # integers: no floating-point output to attack
    b = m / eps
    var = 2 * math.exp(-1 / b) / (1 - math.exp(-1 / b)) ** 2
    resid = draws - draws.mean(axis=0)
    assert resid.var(ddof=1) == pytest.approx(var, rel=0.06)
    assert abs(draws.mean() - exact.mean()) < 1.0
    assert spec.mechanism == "discrete_laplace" and spec.delta == 0.0 and spec.clip == m
    assert spec.sigma == pytest.approx(math.sqrt(2) * b) and spec.noise == "secret"
    assert spec.max_units == 300  # the public bound the guarantee rests on is part of its record


def test_gaussian_spends_its_budget_in_zcdp_by_opendp(matrix):
    counts, spec = noisy_item_counts(matrix, 1.0, mechanism="gaussian", max_items_per_user=16, max_users=300)
    assert spec.clip == 4.0 and spec.delta == 1e-6 and spec.max_units == 300  # delta: min(1e-6, 1 / 300^2)
    rho = zcdp_budget(1.0, 1e-6)
    assert spec.sigma == pytest.approx(4.0 / math.sqrt(2 * rho), rel=1e-6)
    assert spec.sigma > analytic_gaussian_sigma(1.0, 1e-6, 4.0)  # the exact sampler's price
    exact = np.asarray(bounded_rows(matrix, "gaussian", 16).sum(axis=0)).ravel()
    assert (counts - exact).std() == pytest.approx(spec.sigma, rel=0.2)
    _, spec2 = noisy_item_counts(matrix, 1.0, mechanism="gaussian", clip=2.0, max_users=300)
    assert spec2.clip == 2.0
    with pytest.raises(DataError, match="max_units"):
        noisy_item_counts(matrix, 1.0, mechanism="gaussian", max_users=299)


def test_bad_settings_and_data_are_refused(matrix):
    with pytest.raises(ConfigError, match="mechanism"):
        noisy_item_counts(matrix, 1.0, mechanism="exponential")
    with pytest.raises(ConfigError, match="delta"):
        noisy_item_counts(matrix, 1.0, delta=1 / 3000, mechanism="gaussian", max_users=300)
    with pytest.raises(ConfigError, match="max_units"):
        noisy_item_counts(matrix, 1.0, mechanism="gaussian")
    with pytest.raises(ConfigError, match="delta"):
        noisy_item_counts(matrix, 1.0, delta=1e-6, mechanism="laplace")
    with pytest.raises(ConfigError, match="max_items_per_user"):
        noisy_item_counts(matrix, 1.0, max_items_per_user=0)
    with pytest.raises(ConfigError, match="epsilon"):
        noisy_item_counts(matrix, -1.0)
    bad = matrix.copy()
    bad.data[0] = -1.0
    with pytest.raises(DataError, match="negative"):
        noisy_item_counts(bad, 1.0)
    counts, spec = noisy_item_counts(matrix, None)
    np.testing.assert_array_equal(counts, np.asarray((matrix != 0).sum(axis=0)).ravel())
    assert spec.epsilon is None and spec.sigma == 0.0


def test_export_ships_a_private_fallback(ml100k_small, tmp_path):
    """export.private_fallback: the served model's fallback is the noisy counts, its guarantee is
    in the state's info, and an unknown user is answered from them (not from exact counts)."""
    from personalize.config.serving import ExportConfig, PrivateFallbackConfig
    from personalize.models.registry import create_model
    from personalize.scoring import TopKScorer, load_state
    from personalize.serving.state import all_data, write_state

    data = all_data(ml100k_small)
    model = create_model("ease", {"l2": 100.0}).fit(data)
    private = PrivateFallbackConfig(epsilon=0.5, max_items_per_user=20, max_units=1000)
    with reproducible_noise(3):  # to recompute the same draw below
        folder = write_state(model, tmp_path / "private", ExportConfig(private_fallback=private))
        expected, _ = noisy_item_counts(model.seen_, 0.5, None, "laplace", 20, max_users=1000)
    exact = write_state(model, tmp_path / "exact", ExportConfig())
    shipped, plain = load_state(folder), load_state(exact)
    np.testing.assert_array_equal(plain.context.popularity, model.popularity_)
    np.testing.assert_allclose(shipped.context.popularity, expected.astype(np.float32))
    assert not np.allclose(shipped.context.popularity, plain.context.popularity)
    info = shipped.info["private_fallback"]
    assert info["dp_epsilon"] == 0.5 and info["dp_mechanism"] == "discrete_laplace" and info["dp_clip"] == 20
    assert info["dp_max_units"] == 1000
    served = TopKScorer.load(folder).recommend(["no such user"], k=5)
    top = np.argsort(-expected, kind="stable")[:5]
    assert list(served["item_id"]) == list(model.index_.items[top]) and not served["personalised"].any()
