"""The membership-inference attacks and the ceiling differential privacy puts on them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from personalize.data.matrix import IdIndex, InteractionData
from personalize.evaluation.membership import auc, dp_auc_bound, event_attack, pair_scores, user_attack
from personalize.models.registry import create_model


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 1.0, 2.0, 4.0])
def test_pure_dp_ceiling_is_the_logistic_of_epsilon(epsilon):
    # delta = 0: the ROC envelope min(e^eps x, 1 - e^-eps (1 - x)) has area e^eps / (1 + e^eps)
    assert dp_auc_bound(epsilon, 0.0) == pytest.approx(math.exp(epsilon) / (1 + math.exp(epsilon)), abs=1e-6)


def test_ceiling_grows_with_epsilon_and_delta():
    values = [dp_auc_bound(e, 1e-4) for e in (0.5, 1, 2, 4, 8)]
    assert values == sorted(values) and values[-1] < 1.0 + 1e-12
    assert dp_auc_bound(1.0, 0.05) > dp_auc_bound(1.0, 0.0)
    assert dp_auc_bound(0.0, 0.0) == pytest.approx(0.5, abs=1e-6)
    assert dp_auc_bound(None) == 1.0


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 300).astype(float), rng.integers(0, 4, 200).astype(float)
    expected = roc_auc_score(np.r_[np.ones(300), np.zeros(200)], np.r_[a, b])
    assert auc(a, b) == pytest.approx(expected, abs=1e-12)


def _data(matrix: sp.csr_matrix) -> InteractionData:
    import pandas as pd

    from personalize.core import columns as C

    coo = matrix.tocoo()
    rows = pd.DataFrame({C.USER: coo.row, C.ITEM: coo.col, C.TIMESTAMP: np.arange(len(coo.row))})
    users = pd.DataFrame({C.USER: np.arange(matrix.shape[0])})
    items = pd.DataFrame({C.ITEM: np.arange(matrix.shape[1])})
    index = IdIndex.build(users, items, rows)
    return InteractionData.build(rows, index, users, items)


def _population(seed: int, n: int = 120, items: int = 60, per_user: int = 8) -> sp.csr_matrix:
    """Users with idiosyncratic histories (uniformly random items): a model that memorises
    co-occurrences explains its training users better than fresh ones."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n), per_user)
    cols = np.concatenate([rng.choice(items, per_user, replace=False) for _ in range(n)])
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, items))


def test_user_attack_catches_a_memorising_model_more_than_popularity():
    train, fresh = _population(1), _population(2)
    data = _data(train)
    ease = create_model("ease", {"l2": 1.0}).fit(data)
    caught = user_attack(ease, data.matrix, fresh, resamples=200)
    assert caught.unit == "user" and caught.n_members == 120 and caught.n_nonmembers == 120
    assert caught.auc > 0.9 and caught.low > 0.8
    popularity = create_model("popularity").fit(data)
    weaker = user_attack(popularity, data.matrix, fresh, resamples=200)
    # counts from 120 users leak a little (a member's items are counted), far less than EASE
    assert weaker.auc < caught.auc - 0.2


def test_private_model_stays_under_the_ceiling():
    train, fresh = _population(3), _population(4)
    data = _data(train)
    dp = create_model("dp_ease", {"max_units": 1000, "epsilon": 1.0, "l2": 1.0}).fit(data)
    result = user_attack(dp, data.matrix, fresh, resamples=200)
    assert result.low < dp_auc_bound(1.0, dp.dp_.delta)


def test_event_attack_scores_pairs():
    train = _population(5)
    data = _data(train)
    ease = create_model("ease", {"l2": 1.0}).fit(data)
    coo = data.matrix.tocoo()
    scores = ease.score(np.arange(train.shape[0]))
    got = pair_scores(ease, coo.row[:50], coo.col[:50], block=7)
    np.testing.assert_allclose(got, scores[coo.row[:50], coo.col[:50]], rtol=1e-6)
    rng = np.random.default_rng(0)
    users = rng.integers(0, train.shape[0], 400)
    items = rng.integers(0, train.shape[1], 400)
    fresh = np.asarray(data.matrix[users, items]).ravel() == 0
    result = event_attack(
        ease, (coo.row, coo.col), (users[fresh], items[fresh]), max_pairs=300, resamples=100
    )
    assert result.unit == "event" and result.n_members == 300
    assert 0.0 <= result.low <= result.auc <= result.high <= 1.0
