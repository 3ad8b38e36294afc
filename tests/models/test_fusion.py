"""The fusion hybrid: the contract, the weight search on validation, refit, cold users, export."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from contract import COLD_USER, RecommenderContract
from personalize.config import EvaluationConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError
from personalize.evaluation import Evaluator
from personalize.evaluation.monitor import ValidationMonitor
from personalize.models import Recommender, create_model
from personalize.models.hybrid.fusion import weight_candidates
from personalize.scoring import transform

EASE = {"type": "ease", "params": {"l2": 50.0}}
GENRES = {"type": "content", "params": {"vectors": "genres"}}
ALS = {"type": "als", "params": {"factors": 8, "iterations": 3}}


class TestFusionMinmax(RecommenderContract):
    model_type = "fusion"
    params = {"components": [EASE, GENRES], "weights": [0.7, 0.3]}

    def test_blend_matches_a_reference_written_apart(self, fitted, contract_data):
        users = np.arange(10)
        np.testing.assert_allclose(reference_blend(fitted, users), fitted.score(users), rtol=1e-5, atol=1e-6)


class TestFusionRRF(TestFusionMinmax):
    params = {"components": [ALS, GENRES], "method": "rrf", "weights": [0.5, 0.5]}


def reference_blend(model, users) -> np.ndarray:
    """The fusion's scores, user by user from its components' scores, written independently of
    the scoring code's blend."""
    seen = model.seen_
    parts = [np.asarray(c.score(users), dtype=np.float64) for c in model.components_]
    weights = list(model.weights_)
    method, rrf_k = model.config.method, model.config.rrf_k
    positive = [i for i, w in enumerate(weights) if w > 0]
    if len(positive) == 1:
        return parts[positive[0]]
    out = np.zeros_like(parts[0])
    for row, u in enumerate(users):
        candidates = np.ones(seen.shape[1], dtype=bool)
        candidates[seen[u].indices] = False
        for w, s in zip(weights, parts):
            x = s[row]
            if method == "minmax":
                lo, hi = x[candidates].min(), x[candidates].max()
                value = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
            else:
                order = sorted(np.flatnonzero(candidates), key=lambda i: (-x[i], i))
                value = np.zeros_like(x)
                for rank, i in enumerate(order, start=1):
                    value[i] = 1.0 / (rrf_k + rank)
            out[row] += w * value
    return out


@pytest.mark.parametrize("method", ["minmax", "rrf"])
def test_the_scorer_is_a_blend_of_the_components_scorers(contract_data, method):
    _, _, train, _ = contract_data
    model = create_model(
        "fusion", {"components": [EASE, GENRES], "method": method, "weights": [0.6, 0.4]}
    ).fit(train)
    scorer = model.scorer()
    assert scorer.kind == "blend" and [p.kind for p in scorer.parts] == ["item_item", "factors"]
    users = np.arange(8)
    np.testing.assert_allclose(reference_blend(model, users), model.score(users), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def searched(contract_data):
    _, _, train, valid = contract_data
    monitor = ValidationMonitor(valid)
    model = create_model("fusion", {"components": [EASE, GENRES]}).fit(train, monitor)
    return model, monitor


def test_weights_are_chosen_on_validation_and_never_lose_to_a_component(searched, contract_data):
    model, _ = searched
    _, _, train, valid = contract_data
    assert [tuple(row["weights"]) for row in model.search_] == weight_candidates(model.config.weight_grid, 2)
    best = max(model.search_, key=lambda r: r["valid_ndcg@10"])
    assert list(model.weights_) == best["weights"]
    ev = Evaluator(EvaluationConfig(ks=[10]))
    alone = [ev.evaluate(create_model(c["type"], c["params"]).fit(train), valid) for c in (EASE, GENRES)]
    blended = ev.evaluate(model, valid).summary["ndcg@10"]
    # weight 1 / 0 is exactly a component: the search can only match or beat each one
    search = {tuple(r["weights"]): r["valid_ndcg@10"] for r in model.search_}
    assert search[(1.0, 0.0)] == pytest.approx(alone[0].summary["ndcg@10"], abs=1e-12)
    assert search[(0.0, 1.0)] == pytest.approx(alone[1].summary["ndcg@10"], abs=1e-12)
    assert blended >= max(a.summary["ndcg@10"] for a in alone)


def test_selected_config_refits_without_searching(searched, contract_data):
    model, _ = searched
    _, _, train, _ = contract_data
    selected = model.selected_config()
    assert selected.weights == [float(w) for w in model.weights_]
    assert [c.params["l2"] for c in selected.components[:1]] == [50.0]
    refit = create_model("fusion", selected.model_dump()).fit(train)  # no monitor needed now
    users = np.arange(20)
    np.testing.assert_allclose(refit.score(users), model.score(users), rtol=1e-6)
    assert refit.search_ == []


def test_component_grids_and_iterative_components_use_validation(contract_data):
    _, _, train, valid = contract_data
    monitor = ValidationMonitor(valid, patience=None)
    params = {
        "components": [{"type": "ease", "grid": {"l2": [1.0, 300.0]}}, ALS],
        "weight_grid": [0.0, 0.5, 1.0],
    }
    model = create_model("fusion", params).fit(train, monitor)
    ease_rows = model.component_search_[0]
    assert [r["l2"] for r in ease_rows] == [1.0, 300.0]
    chosen = max(ease_rows, key=lambda r: r["valid_ndcg@10"])["l2"]
    selected = model.selected_config()
    assert selected.components[0].params["l2"] == chosen and selected.components[0].grid == {}
    # the iterative component kept its best epoch on its own learning curve
    als = model.components_[1]
    assert len(model.component_histories_[1]) == 3
    assert selected.components[1].params["iterations"] == als.best_epoch_
    assert monitor.history == []  # the fusion's monitor is not polluted by the components
    assert len(model.search_) == 3


def test_rrf_search_and_ranks(contract_data):
    _, _, train, valid = contract_data
    model = create_model("fusion", {"components": [EASE, GENRES], "method": "rrf"}).fit(
        train, ValidationMonitor(valid)
    )
    assert len(model.search_) == 11
    scores = np.array([[3.0, 1.0, 2.0, -np.inf, 5.0]])
    seen = sp.csr_matrix(([1.0], ([0], [4])), shape=(1, 5))  # item 4 is seen: no rank, 0
    out = transform(scores, seen, "rrf", rrf_k=1.0)
    np.testing.assert_allclose(out[0, [0, 1, 2, 4]], [1 / 2, 1 / 4, 1 / 3, 0])
    assert np.isneginf(out[0, 3])
    minmax = transform(scores, seen, "minmax")
    np.testing.assert_allclose(minmax[0, [0, 1, 2, 4]], [1, 0, 0.5, 2])  # seen: same affine map


def test_cold_users_blend_when_a_component_answers_them(contract_data):
    _, index, train, _ = contract_data
    model = create_model(
        "fusion",
        {
            "components": [EASE, {"type": "recent_popularity", "params": {"half_life_days": 5.0}}],
            "weights": [0.5, 0.5],
        },
    ).fit(train)
    cold = index.user_index([COLD_USER])
    assert model.personalised(cold).all()  # recent popularity answers cold users itself
    recs = model.recommend([COLD_USER], k=5)
    assert recs[C.PERSONALISED].all()
    # EASE falls back to popularity for the cold user: the blend mixes popularity and recency
    pop = model.popularity_
    recent = model.components_[1].scores_
    expected = 0.5 * (pop - pop.min()) / (pop.max() - pop.min()) + 0.5 * (recent - recent.min()) / (
        recent.max() - recent.min()
    )
    np.testing.assert_allclose(model.score(cold)[0], expected, rtol=1e-5, atol=1e-6)
    # with only non-cold-handling components, a cold user gets the popularity fallback
    plain = create_model("fusion", {"components": [EASE, GENRES], "weights": [0.5, 0.5]}).fit(train)
    assert not plain.personalised(cold).any()
    np.testing.assert_array_equal(plain.score(cold)[0], pop)


def test_save_and_load_restore_components_chosen_by_search(contract_data, tmp_path):
    _, _, train, valid = contract_data
    params = {"components": [{"type": "ease", "grid": {"l2": [1.0, 300.0]}}, ALS], "weight_grid": [0, 0.5, 1]}
    model = create_model("fusion", params).fit(train, ValidationMonitor(valid, patience=None))
    model.save(tmp_path / "f")
    loaded = Recommender.load(tmp_path / "f")
    users = np.arange(20)
    np.testing.assert_allclose(loaded.score(users), model.score(users), rtol=1e-6)
    assert loaded.components_[1].best_epoch_ == model.components_[1].best_epoch_
    assert loaded.selected_config() == model.selected_config()


def test_save_and_load_keep_a_private_components_guarantee(contract_data, tmp_path):
    _, _, train, _ = contract_data
    private = {"type": "dp_popularity", "params": {"epsilon": 1.0, "max_units": 10_000}}
    model = create_model("fusion", {"components": [private, EASE], "weights": [0.5, 0.5]}).fit(train)
    model.save(tmp_path / "f")
    loaded = Recommender.load(tmp_path / "f")
    assert loaded.components_[0].dp_ == model.components_[0].dp_
    assert loaded.components_[0].dp_.epsilon == 1.0 and loaded.components_[0].dp_.max_units == 10_000


def test_bad_configs_are_clear_errors(contract_data):
    _, _, train, _ = contract_data
    with pytest.raises(ConfigError, match="must include 0 and 1"):
        create_model("fusion", {"components": [EASE, GENRES], "weight_grid": [0.2, 0.8]})
    with pytest.raises(ConfigError, match="at least 2 items"):
        create_model("fusion", {"components": [EASE]})
    with pytest.raises(ConfigError, match="unknown model type 'easy'"):
        create_model("fusion", {"components": [{"type": "easy"}, GENRES]})
    with pytest.raises(ConfigError, match="lambda"):
        create_model("fusion", {"components": [{"type": "ease", "params": {"lambda": 1}}, GENRES]})
    with pytest.raises(ConfigError, match="weights has 3 values for 2 components"):
        create_model("fusion", {"components": [EASE, GENRES], "weights": [0.2, 0.3, 0.5]})
    with pytest.raises(ConfigError, match="fit needs a ValidationMonitor"):
        create_model("fusion", {"components": [EASE, GENRES]}).fit(train)


def test_weight_candidates_cover_the_simplex():
    two = weight_candidates([0, 0.5, 1], 2)
    assert two == [(0, 1), (0.5, 0.5), (1, 0)]
    three = weight_candidates([0, 0.5, 1], 3)
    assert len(three) == 6 and all(abs(sum(w) - 1) < 1e-9 for w in three)
    assert (1, 0, 0) in three and (0, 0, 1) in three


def test_fusion_is_stochastic_only_through_its_components():
    from personalize.models.registry import get_model_class

    fusion = get_model_class("fusion")
    deterministic = {"components": [{"type": "ease"}, {"type": "popularity"}]}
    assert not fusion.is_stochastic(deterministic)
    assert fusion.is_stochastic({"components": [{"type": "als"}, {"type": "popularity"}]})
