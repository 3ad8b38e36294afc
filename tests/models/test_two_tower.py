import sys

import numpy as np
import pandas as pd
import pytest
import torch

from contract import IterativeContract
from personalize.config import EvaluationConfig, SplitConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError
from personalize.data.matrix import IdIndex, InteractionData
from personalize.data.splits import make_split
from personalize.evaluation import Evaluator
from personalize.models import create_model
from personalize.models.hybrid import towers
from personalize.models.hybrid.two_tower_features import encode_column

SMALL = {
    "id_dim": 8,
    "feature_dim": 4,
    "hidden": [16],
    "out_dim": 8,
    "negatives": 32,
    "epochs": 3,
    "batch_size": 256,
    "text": False,
}


class TestTwoTower(IterativeContract):
    model_type = "two_tower"
    epochs_param = "epochs"
    params = SMALL


@pytest.fixture(scope="module")
def cold_data(ml100k_small):
    """The small sample with two users' and one popular item's interactions removed from
    train (cold, but with attributes), plus a catalogue clone of a popular item that nobody
    has interacted with (same title, year and genres)."""
    d = ml100k_small
    counts = d.interactions[C.ITEM].value_counts()
    popular = int(counts.index[0])
    clone = int(d.items[C.ITEM].max()) + 1
    items = pd.concat(
        [d.items, d.items[d.items[C.ITEM] == popular].assign(**{C.ITEM: clone})], ignore_index=True
    )
    split = make_split(d.interactions, SplitConfig(), 0, d.users, items)
    by_user = split.train.groupby(C.USER).size().sort_values()
    cold = [int(u) for u in by_user.index[-2:]]  # two heavy users, so their attributes are informative
    train = split.train[~split.train[C.USER].isin(cold)]
    index = IdIndex.build(split.users, split.items, train, split.valid, split.test)
    data = InteractionData.build(train, index, split.users, split.items)
    return data, index, cold, popular, clone


@pytest.fixture(scope="module")
def cold_model(cold_data):
    data = cold_data[0]
    params = {**SMALL, "epochs": 6, "text": True}
    return create_model("two_tower", params, seed=0).fit(data)


@pytest.fixture(scope="module")
def new_items_model(cold_data):
    """Negatives drawn from interacted items only: never-interacted items are unknown."""
    data = cold_data[0]
    params = {**SMALL, "epochs": 6, "text": True, "negatives_from": "interacted"}
    return create_model("two_tower", params, seed=0).fit(data)


def test_cold_users_get_personalised_feature_driven_lists(cold_model, cold_data):
    data, index, cold, _, _ = cold_data
    recs = cold_model.recommend(cold, k=10)
    assert recs[C.PERSONALISED].all()
    lists = [recs[recs[C.USER] == u][C.ITEM].tolist() for u in cold]
    popular = list(index.items[np.argsort(-cold_model.popularity_, kind="stable")[:10]])
    assert lists[0] != lists[1]  # different attributes, different recommendations
    assert all(lst != popular for lst in lists)  # not the popularity fallback
    # features only: a cold user's scores are the user tower's output with the unknown ID
    u = index.user_index(cold)
    attrs = data.users.iloc[u][["age", "gender", "occupation", "zip_code"]]
    assert attrs.notna().all().all()
    values, _, _ = cold_model.user_features_.gather(u)
    assert (values[: len(u)] == 0).all()  # the ID table's unknown row


def test_users_with_the_same_attributes_and_no_history_score_the_same(cold_data):
    data, index, cold, _, _ = cold_data
    users = data.users.copy()
    twin = 10**7
    users = pd.concat([users, users.iloc[[index.user_index([cold[0]])[0]]].assign(**{C.USER: twin})])
    frame = data.frame
    train = pd.DataFrame(
        {
            C.USER: index.users[frame[C.USER_IDX]].to_numpy(),
            C.ITEM: index.items[frame[C.ITEM_IDX]].to_numpy(),
            C.TIMESTAMP: frame[C.TIMESTAMP].to_numpy(),
        }
    )
    idx2 = IdIndex.build(users, data.items, train)
    data2 = InteractionData.build(train, idx2, users, data.items)
    model = create_model("two_tower", SMALL, seed=1).fit(data2)
    a, b = idx2.user_index([cold[0], twin])
    scores = model.score(np.array([a, b]))
    np.testing.assert_array_equal(scores[0], scores[1])


def test_never_interacted_items_are_scored_from_their_features(cold_model, cold_data):
    model = cold_model
    data, index, _, _, clone = cold_data
    j = index.item_index([clone])[0]
    never = np.flatnonzero(data.item_counts == 0)
    assert j in never and len(never) > 100
    scores = model.score(np.arange(index.n_users))
    assert np.isfinite(scores[:, never]).all()
    rank = (scores[:, :, None] > scores[:, None, never]).sum(axis=1)  # catalogue rank (users, never items)
    median_rank = np.median(rank, axis=0)
    # the clone shares a popular item's title, year and genres (the text embedding too): its
    # features lift it above the typical never-interacted item
    assert median_rank[list(never).index(j)] < np.quantile(median_rank, 0.25)


def test_never_interacted_items_can_be_recommended(new_items_model, cold_data):
    data, index, _, _, clone = cold_data
    never = set(np.flatnonzero(data.item_counts == 0))
    recs = new_items_model.recommend(list(index.users), k=10)
    shown = index.item_index(recs[C.ITEM])
    assert len(set(shown) & never) >= 1  # never-interacted items reach top-10 lists
    assert clone in set(recs[C.ITEM])


def _pair(backend_a: str, backend_b: str, data):
    a = create_model("two_tower", {**SMALL, "epochs": 1, "backend": backend_a}, seed=0).fit(data)
    net_b = a._make_net(a.user_features_, a.item_features_, backend_b)
    assert list(net_b.state_dict()) == list(a.net_.state_dict())
    net_b.load_state_dict(a.net_.state_dict())
    net_b.eval()
    return a, net_b


@pytest.mark.parametrize("source,target", [("torchrec", "torch"), ("torch", "torchrec")])
def test_torchrec_and_plain_torch_give_the_same_scores_for_the_same_weights(contract_data, source, target):
    _, index, train, _ = contract_data
    model, other = _pair(source, target, train)
    assert model.net_.user.backend == source and other.user.backend == target
    users, items = np.arange(index.n_users), np.arange(index.n_items)
    with torch.no_grad():
        for tower_a, tower_b, features, ids in (
            (model.net_.user, other.user, model.user_features_, users),
            (model.net_.item, other.item, model.item_features_, items),
        ):
            np.testing.assert_allclose(
                model._tower(tower_b, features, ids).numpy(),
                model._tower(tower_a, features, ids).numpy(),
                rtol=1e-6,
                atol=1e-6,
            )


def test_both_backends_train_to_the_same_model(contract_data):
    _, _, train, _ = contract_data
    a = create_model("two_tower", {**SMALL, "epochs": 2, "backend": "torchrec"}, seed=4).fit(train)
    b = create_model("two_tower", {**SMALL, "epochs": 2, "backend": "torch"}, seed=4).fit(train)
    np.testing.assert_allclose(a.score(np.arange(10)), b.score(np.arange(10)), rtol=1e-4, atol=1e-4)


def test_runs_without_torchrec(contract_data, monkeypatch, tmp_path):
    _, _, train, _ = contract_data
    monkeypatch.setitem(sys.modules, "torchrec", None)  # import torchrec now raises ImportError
    towers.torchrec_available.cache_clear()
    try:
        assert towers.resolve_backend("auto") == "torch"
        with pytest.raises(ImportError, match="torchrec"):
            towers.resolve_backend("torchrec")
        model = create_model("two_tower", {**SMALL, "epochs": 1}, seed=0).fit(train)
        assert model.backend_ == "torch"
        model.save(tmp_path / "m")
        loaded = type(model).load(tmp_path / "m")
        assert loaded.backend_ == "torch"
        np.testing.assert_allclose(loaded.score(np.arange(5)), model.score(np.arange(5)), rtol=1e-6)
    finally:
        monkeypatch.delitem(sys.modules, "torchrec")
        towers.torchrec_available.cache_clear()


def test_text_embeddings_feed_the_item_tower(cold_model, cold_data):
    index = cold_data[1]
    assert cold_model.item_features_.dense.shape == (index.n_items, 384)
    assert cold_model.net_.item.dense.in_features == 384


def test_feature_encoding():
    frame = pd.DataFrame(
        {
            "age": [10.0, 30.0, np.nan, 60.0],
            "zip_code": ["55413", "T8H1N", None, "55105"],
            "genres": [["Drama", "Comedy"], [], None, ["Drama"]],
        }
    )
    age = encode_column(frame, "age", table="user", bucket_edges=[18, 25, 35, 45, 50, 56])
    assert age.single.tolist() == [1, 3, 0, 7]
    zips = encode_column(frame, "zip_code", table="user", prefix=2)
    assert zips.labels == ["<unknown>", "55", "T8"] and zips.single.tolist() == [1, 2, 0, 1]
    genres = encode_column(frame, "genres", table="item")
    assert genres.labels == ["<unknown>", "Comedy", "Drama"]
    assert [sorted(genres.rows[i].indices.tolist()) for i in range(4)] == [[1, 2], [0], [0], [2]]
    with pytest.raises(ConfigError, match="'occupation' is not a column of the user table"):
        encode_column(frame, "occupation", table="user")


def test_recency_weights_halve_every_half_life(contract_data):
    _, _, train, _ = contract_data
    model = create_model("two_tower", {**SMALL, "recency_half_life_days": 10.0}, seed=0)
    model.index_ = train.index
    model._build(train)
    age = train.days_before_cutoff()
    w = model._weights
    assert w.sum() == pytest.approx(1.0)
    i, j = np.argmin(age), np.argmax(age)
    assert w[j] / w[i] == pytest.approx(0.5 ** ((age[j] - age[i]) / 10.0), rel=1e-9)
    fitted = create_model("two_tower", {**SMALL, "recency_half_life_days": 10.0, "epochs": 1}, seed=0).fit(
        train
    )
    again = create_model("two_tower", {**SMALL, "recency_half_life_days": 10.0, "epochs": 1}, seed=0).fit(
        train
    )
    np.testing.assert_array_equal(fitted.score(np.arange(5)), again.score(np.arange(5)))


def test_bpr_loss_learns(contract_data):
    _, _, train, valid = contract_data
    model = create_model("two_tower", {**SMALL, "loss": "bpr"}, seed=0).fit(train)
    ev = Evaluator(EvaluationConfig(ks=[10]))
    random = create_model("random", seed=0).fit(train)
    assert ev.evaluate(model, valid).summary["ndcg@10"] > ev.evaluate(random, valid).summary["ndcg@10"]
