"""Private ALS (billboard model): contract, sensitivity by removing one user, composition, fold-in."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from contract import IterativeContract
from personalize import scoring
from personalize.core.errors import ConfigError
from personalize.data.matrix import IdIndex, InteractionData
from personalize.models import create_model
from personalize.models.privacy.aggregates import zcdp_budget, zcdp_epsilon
from personalize.models.privacy.dp_als import (
    batched_symmetric_noise,
    clip_norms,
    item_statistics,
    item_step_sensitivity,
)
from personalize.models.privacy.noise import reproducible_noise


class TestDPALS(IterativeContract):
    model_type = "dp_als"
    params = {"max_units": 1000, "epsilon": 8.0}


class TestDPALSWithConfidence(IterativeContract):
    model_type = "dp_als"
    params = {"max_units": 1000, "epsilon": 8.0, "alpha": 2.0, "iterations": 2, "factors": 8}


class TestDPALSNotPrivate(IterativeContract):
    model_type = "dp_als"
    params = {"clip": None, "factor_clip": None, "factors": 16, "iterations": 4}


@pytest.fixture(scope="module")
def train(ml100k_small):
    d = ml100k_small
    index = IdIndex.build(d.users, d.items, d.interactions)
    return InteractionData.build(d.interactions, index, d.users, d.items)


def _presence(x) -> sp.csr_matrix:
    p = sp.csr_matrix(x, dtype=np.float64, copy=True)
    p.data[:] = 1.0
    return p


def _release(presence, weights, vectors, with_a) -> np.ndarray:
    """The released vector of one iteration: G's and every A_j's upper triangle, and b."""
    gram, a, b = item_statistics(presence, weights, vectors, with_a)
    iu = np.triu_indices(gram.shape[0])
    parts = [gram[iu], b.ravel()]
    if a is not None:
        parts.append(a[:, iu[0], iu[1]].ravel())
    return np.concatenate(parts)


def _user_weights(presence, clip):
    n = np.diff(presence.indptr).astype(float)
    return np.minimum(1.0, clip / np.sqrt(np.maximum(n, 1.0))) if clip is not None else np.ones(len(n))


@pytest.mark.parametrize("alpha", [1.0, 3.0])
def test_removing_one_user_moves_the_release_by_at_most_the_sensitivity(train, alpha):
    """For a fixed released Y, each user's vector depends only on their own history (billboard),
    so removing a user removes exactly their term; on a random sample of users the released
    statistics move by at most the stated Delta, which clipping makes attainable, not loose."""
    rng = np.random.default_rng(0)
    x = train.matrix
    presence = _presence(x)
    items = rng.normal(0.0, 0.3, size=(x.shape[1], 8))
    raw = scoring.als_user_vectors(items, x, 1.0, alpha)
    with_a = alpha != 1.0
    shortest = np.linalg.norm(raw, axis=1).min()
    for clip, factor_clip in ((1.0, 0.5 * shortest), (3.0, 0.9 * shortest)):
        weights = _user_weights(presence, clip)
        vectors = clip_norms(raw, factor_clip)
        full = _release(presence, weights, vectors, with_a)
        bound = item_step_sensitivity(clip, factor_clip, with_a)
        changes = []
        for u in rng.choice(x.shape[0], size=25, replace=False):
            keep = np.arange(x.shape[0]) != u
            changes.append(
                np.linalg.norm(full - _release(presence[keep], weights[keep], vectors[keep], with_a))
            )
        assert max(changes) <= bound * (1 + 1e-9)
        assert max(changes) > 0.7 * bound  # every row is clipped here: the bound is nearly attained
    # without the bounds one heavy user moves the statistics far beyond Delta(clip 1, F 0.1)
    ones = np.ones(x.shape[0])
    heavy = int(np.argmax(np.diff(presence.indptr)))
    keep = np.arange(x.shape[0]) != heavy
    moved = np.linalg.norm(
        _release(presence, ones, raw, with_a) - _release(presence[keep], ones[keep], raw[keep], with_a)
    )
    assert moved > 10 * item_step_sensitivity(1.0, 0.1, with_a)


def test_sensitivity_formula():
    assert item_step_sensitivity(2.0, 0.5, False) == pytest.approx(math.sqrt(0.5**4 + 4 * 0.25))
    assert item_step_sensitivity(2.0, 0.5, True) == pytest.approx(math.sqrt(0.5**4 * 5 + 4 * 0.25))


def test_iterations_compose_into_the_budget(train):
    """T iterations and the popularity counts: T + 1 Gaussian mechanisms, each spending rho / (T + 1)
    in zCDP, whose sum rho converts (OpenDP) to at most (epsilon, delta); the counts' scale spends
    its share by OpenDP's own privacy map."""
    import opendp.prelude as dp

    eps, t = 2.0, 4
    model = create_model(
        "dp_als", {"max_units": 1000, "epsilon": eps, "iterations": t, "clip": 2.0, "factor_clip": 0.5}
    ).fit(train)
    spec = model.dp_
    delta = 1e-6  # min(1e-6, 1 / 1000^2)
    sens = item_step_sensitivity(2.0, 0.5, False)
    assert spec.delta == pytest.approx(delta)
    rho = zcdp_budget(eps, delta)
    # composition in zCDP: the item steps' rho (Delta^2 / (2 sigma^2)) and the counts' (by OpenDP's map)
    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l2_distance(T=float)
    counts_rho = (space >> dp.m.then_gaussian(scale=model.popularity_sigma_)).map(2.0)
    total = t * sens**2 / (2 * spec.sigma**2) + counts_rho
    assert total == pytest.approx(rho, rel=1e-6) and total <= rho * (1 + 1e-9)
    assert zcdp_epsilon(total, delta) <= eps + 1e-9
    assert spec.steps == t + 1 and spec.noise_multiplier == pytest.approx(spec.sigma / sens)
    assert spec.accountant == "zcdp" and spec.epsilon_spent == eps
    # T iterations with one iteration's noise would spend (T + 1) times the budget
    assert zcdp_epsilon(rho * (t + 1), delta) > 2 * eps


def test_batched_noise_is_symmetric_with_the_stated_scale():
    noise = batched_symmetric_noise(300, 6, 2.0, np.random.default_rng(0))  # hardened: sum of 4, halved
    np.testing.assert_array_equal(noise, np.swapaxes(noise, 1, 2))
    iu = np.triu_indices(6)
    assert noise[:, iu[0], iu[1]].std() == pytest.approx(2.0, rel=0.03)
    assert noise[:, iu[0], iu[1]].mean() == pytest.approx(0.0, abs=0.05)


def test_item_step_solves_implicit_normal_equations_without_noise(train):
    """Non-private, unclipped: each item factor solves implicit's weighted least squares given the
    user vectors (written out densely: confidence alpha on observed pairs, 1 elsewhere)."""
    alpha, reg = 3.0, 2.0
    model = create_model(
        "dp_als", {"clip": None, "factor_clip": None, "alpha": alpha, "regularization": reg, "factors": 6}
    )
    model.fit(train)
    p = _presence(train.matrix).toarray()
    rng = np.random.default_rng(1)
    v = rng.normal(size=(p.shape[0], 6))
    gram, a, b = item_statistics(sp.csr_matrix(p), np.ones(p.shape[0]), v, True)
    got = model._solve_items(gram, a, b)
    for j in rng.choice(p.shape[1], size=20, replace=False):
        c = 1.0 + (alpha - 1.0) * p[:, j]
        want = np.linalg.solve(v.T @ (c[:, None] * v) + reg * np.eye(6), v.T @ (c * p[:, j]))
        np.testing.assert_allclose(got[j], want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(
    "params", [{"max_units": 1000, "epsilon": 4.0}, {"clip": None, "factor_clip": None, "alpha": 2.0}]
)
def test_users_are_solved_as_they_fold_in(train, params):
    """A training user's stored vector is the fold-in solve of their history against the released
    item factors (the user step), so a held-out user is answered exactly as training treated users."""
    model = create_model("dp_als", params, seed=2).fit(train)
    c = model.config
    again = scoring.als_user_vectors(model.item_factors_, train.matrix, c.regularization, c.alpha)
    np.testing.assert_allclose(model.user_factors_, again.astype(np.float32), rtol=1e-3, atol=1e-5)
    scorer = model.scorer()
    assert scorer.fold == "als" and scorer.folds_in


def test_noise_is_secret_and_only_the_noise_is_private(train):
    """The same seed gives other noise (secret); under the test switch it repeats, and a fit differs
    from another seed's only through the seeded initial factors and the noise."""
    a = create_model("dp_als", {"max_units": 1000, "epsilon": 1.0}, seed=1).fit(train)
    b = create_model("dp_als", {"max_units": 1000, "epsilon": 1.0}, seed=1).fit(train)
    assert not np.allclose(a.item_factors_, b.item_factors_)
    with reproducible_noise(3):
        c = create_model("dp_als", {"max_units": 1000, "epsilon": 1.0}, seed=1).fit(train)
        d = create_model("dp_als", {"max_units": 1000, "epsilon": 1.0}, seed=1).fit(train)
    np.testing.assert_array_equal(c.item_factors_, d.item_factors_)
    assert c.dp_.noise == "reproducible" and not c.dp_.private and a.dp_.private
    assert not np.allclose(a.popularity_, train.item_popularity)
    clip_only = create_model("dp_als", {"clip": 1.0}, seed=1).fit(train)
    assert clip_only.dp_.epsilon is None and clip_only.dp_.sigma == 0.0 and clip_only.dp_.clip == 1.0
    np.testing.assert_array_equal(clip_only.popularity_, train.item_popularity.astype(np.float32))


def test_private_settings_are_checked(train):
    with pytest.raises(ConfigError, match="factor_clip"):
        create_model("dp_als", {"max_units": 1000, "epsilon": 1.0, "factor_clip": None})
    with pytest.raises(ConfigError, match="clip"):
        create_model("dp_als", {"max_units": 1000, "epsilon": 1.0, "clip": None})
    with pytest.raises(ConfigError, match="delta"):
        create_model("dp_als", {"max_units": 1000, "epsilon": 1.0, "delta": 1e-4})
