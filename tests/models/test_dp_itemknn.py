"""DP-ItemKNN: ItemKNN from DP-EASE's noisy clipped Gram matrix."""

from __future__ import annotations

import numpy as np
import pytest

from contract import RecommenderContract
from personalize.data.matrix import IdIndex, InteractionData
from personalize.models import create_model
from personalize.models.privacy.dp_ease import clipped_gram, noisy_clipped_gram
from personalize.models.privacy.mechanisms import analytic_gaussian_sigma
from personalize.models.privacy.noise import reproducible_noise


class TestDPItemKNN(RecommenderContract):
    model_type = "dp_itemknn"
    params = {"max_units": 1000, "epsilon": 8.0, "neighbours": 50}
    # 80 users at delta 1e-6 (N = 1000): the Gram noise outweighs their co-occurrences; the clipped
    # model below is held to beating random
    beats_random = False


class TestDPItemKNNNotPrivate(RecommenderContract):
    model_type = "dp_itemknn"
    params = {"clip": 3.0, "neighbours": 50}


@pytest.fixture(scope="module")
def train(ml100k_small):
    d = ml100k_small
    index = IdIndex.build(d.users, d.items, d.interactions)
    return InteractionData.build(d.interactions, index, d.users, d.items)


def test_without_noise_or_clipping_it_is_itemknn(train):
    ref = create_model("itemknn", {"neighbours": 30, "shrink": 10.0}).fit(train)
    dp = create_model("dp_itemknn", {"neighbours": 30, "shrink": 10.0, "clip": None}).fit(train)
    np.testing.assert_allclose(dp.weights_.toarray(), ref.weights_.toarray(), rtol=1e-6, atol=1e-7)
    assert dp.dp_.epsilon is None and dp.dp_.sigma == 0.0
    np.testing.assert_array_equal(dp.popularity_, ref.popularity_)


def test_it_releases_the_same_noisy_gram_as_dp_ease(train):
    """One noise draw of the same pattern: with the same seed and budget the noisy diagonal (the
    popularity fallback) is DP-EASE's, and sigma is the analytic one for sensitivity clip^2."""
    params = {"max_units": 1000, "epsilon": 2.0, "clip": 2.0}
    with reproducible_noise(4):
        knn = create_model("dp_itemknn", params, seed=4).fit(train)
        ease = create_model("dp_ease", params, seed=4).fit(train)
    np.testing.assert_array_equal(knn.popularity_, ease.popularity_)
    assert knn.dp_ == ease.dp_
    assert knn.dp_.sigma == pytest.approx(analytic_gaussian_sigma(2.0, 1e-6, 4.0))
    exact = np.diag(clipped_gram(train.matrix, 2.0))
    assert np.abs(knn.popularity_ - exact).std() > 0.5 * knn.dp_.sigma  # noisy, not the exact counts


def test_noisy_diagonal_is_floored(train):
    """At epsilon 0.5 some noisy diagonals are below sigma; none becomes a similarity blow-up."""
    with reproducible_noise(0):  # the same draw each time, to recompute the released Gram
        model = create_model(
            "dp_itemknn", {"max_units": 1000, "epsilon": 0.5, "clip": 1.0, "shrink": 0.0}, seed=0
        ).fit(train)
        gram, _ = noisy_clipped_gram(train.matrix, model.config)
        unfloored = create_model(
            "dp_itemknn",
            {"max_units": 1000, "epsilon": 0.5, "clip": 1.0, "shrink": 0.0, "diag_floor": 0.0},
            seed=0,
        ).fit(train)
    sigma = model.dp_.sigma
    assert (model.popularity_ < sigma).any()
    # |sim| <= |G~_ij| / (floor) with the floor sigma on both items: bounded by max |G~_ij| / sigma
    bound = np.abs(gram - np.diag(np.diag(gram))).max() / sigma
    assert np.abs(model.weights_.data).max() <= bound * (1 + 1e-6)
    assert np.abs(unfloored.weights_.data).max() > np.abs(model.weights_.data).max()


def test_noise_is_secret_unless_the_test_switch_is_on(train):
    a = create_model("dp_itemknn", {"max_units": 1000, "epsilon": 1.0}, seed=1).fit(train)
    b = create_model("dp_itemknn", {"max_units": 1000, "epsilon": 1.0}, seed=1).fit(train)
    assert (a.weights_ != b.weights_).nnz > 0
    with reproducible_noise(1):
        c = create_model("dp_itemknn", {"max_units": 1000, "epsilon": 1.0}, seed=1).fit(train)
        d = create_model("dp_itemknn", {"max_units": 1000, "epsilon": 1.0}, seed=1).fit(train)
    assert (c.weights_ != d.weights_).nnz == 0
