"""The compatibility modes reproduce the peers' own functions on the same recommendations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from personalize.config import EvaluationConfig, SplitConfig
from personalize.core import columns as C
from personalize.data.matrix import IdIndex, InteractionData
from personalize.data.splits import make_split
from personalize.evaluation import Evaluator, make_target
from personalize.models import create_model

K = 10


@pytest.fixture(scope="module")
def evaluated(ml100k_small):
    d = ml100k_small
    split = make_split(d.interactions, SplitConfig(name="item_stratified"), 3, d.users, d.items)
    index = IdIndex.build(split.users, split.items, split.train, split.valid, split.test)
    seen = split.train_valid()
    model = create_model("ease", {"l2": 100}).fit(
        InteractionData.build(seen, index, split.users, split.items)
    )
    target = make_target("test", split.test, seen, index)
    return split, model, target


def _run(model, target, mode, **kw):
    ev = Evaluator(EvaluationConfig(ks=[5, K], mode=mode, **kw))
    return ev.evaluate(model, target)


def test_msr_mode_matches_microsoft_recommenders(evaluated):
    pe = pytest.importorskip("recommenders.evaluation.python_evaluation")
    split, model, target = evaluated
    result = _run(model, target, "msr")
    recs = result.recommendations
    # distinct predictions so that MSR's (unstable) sort cannot reorder ties
    pred = recs.assign(prediction=(K + 1 - recs[C.RANK]).astype(float))[[C.USER, C.ITEM, "prediction"]]
    true = split.test[[C.USER, C.ITEM, C.RATING]]
    cols = dict(col_user=C.USER, col_item=C.ITEM, col_rating=C.RATING, col_prediction="prediction", k=K)
    assert result.summary[f"precision@{K}"] == pytest.approx(pe.precision_at_k(true, pred, **cols), abs=1e-12)
    assert result.summary[f"recall@{K}"] == pytest.approx(pe.recall_at_k(true, pred, **cols), abs=1e-12)
    assert result.summary[f"ndcg@{K}"] == pytest.approx(pe.ndcg_at_k(true, pred, **cols), abs=1e-12)
    assert result.summary[f"map@{K}"] == pytest.approx(pe.map_at_k(true, pred, **cols), abs=1e-12)
    assert result.summary[f"map_r@{K}"] == pytest.approx(pe.map(true, pred, **cols), abs=1e-12)
    train = split.train_valid()[[C.USER, C.ITEM]]
    coverage = pe.catalog_coverage(train, pred[[C.USER, C.ITEM]], col_user=C.USER, col_item=C.ITEM)
    assert result.catalogue_metrics[f"coverage@{K}"] == pytest.approx(coverage, abs=1e-12)


@pytest.mark.parametrize("gains", ["binary", "graded"])
def test_ranx_mode_matches_ranx(evaluated, gains):
    ranx = pytest.importorskip("ranx")
    split, model, target_binary = evaluated
    target = target_binary
    if gains == "graded":
        target = make_target("test", split.test, split.train_valid(), target.index, gains="graded")
    result = _run(model, target, "ranx", gains=gains)
    recs = result.recommendations
    qrels_dict: dict[str, dict[str, int]] = {}
    for u, i, r in zip(split.test[C.USER], split.test[C.ITEM], split.test[C.RATING]):
        rel = int(r) if gains == "graded" else 1
        qrels_dict.setdefault(str(u), {})[str(i)] = max(rel, qrels_dict.get(str(u), {}).get(str(i), 0))
    run_dict: dict[str, dict[str, float]] = {}
    for u, i, rank in zip(recs[C.USER], recs[C.ITEM], recs[C.RANK]):
        run_dict.setdefault(str(u), {})[str(i)] = float(K + 1 - rank)
    metrics = [
        f"ndcg@{K}",
        f"ndcg_burges@{K}",
        f"map@{K}",
        f"precision@{K}",
        f"recall@{K}",
        f"mrr@{K}",
        f"hit_rate@{K}",
    ]
    scores = ranx.evaluate(ranx.Qrels(qrels_dict), ranx.Run(run_dict), metrics)
    assert result.summary[f"ndcg@{K}"] == pytest.approx(scores[f"ndcg@{K}"], abs=1e-9)
    assert result.summary[f"ndcg_burges@{K}"] == pytest.approx(scores[f"ndcg_burges@{K}"], abs=1e-9)
    assert result.summary[f"map@{K}"] == pytest.approx(scores[f"map@{K}"], abs=1e-9)
    assert result.summary[f"precision@{K}"] == pytest.approx(scores[f"precision@{K}"], abs=1e-9)
    assert result.summary[f"recall@{K}"] == pytest.approx(scores[f"recall@{K}"], abs=1e-9)
    assert result.summary[f"mrr@{K}"] == pytest.approx(scores[f"mrr@{K}"], abs=1e-9)
    assert result.summary[f"hit@{K}"] == pytest.approx(scores[f"hit_rate@{K}"], abs=1e-9)


def test_recbole_mode_rounds_to_four_decimals(evaluated):
    _, model, target = evaluated
    proto = _run(model, target, "protocol")
    rec = _run(model, target, "recbole")
    for name, value in rec.summary.items():
        assert value == round(proto.summary[name], 4)
    assert any(round(v, 4) != v for v in proto.summary.values())


def test_ranx_counts_users_without_relevant_items(evaluated):
    split, model, _ = evaluated
    index = evaluated[2].index
    target = make_target("test", split.test, split.train_valid(), index, min_rating=5)
    proto = _run(model, target, "protocol", min_rating=5)
    ranx_mode = _run(model, target, "ranx", min_rating=5)
    n_zero = int((target.n_relevant == 0).sum())
    assert n_zero > 0
    evaluated_users = int((target.n_relevant > 0).sum())
    assert ranx_mode.summary[f"ndcg@{K}"] == pytest.approx(
        proto.summary[f"ndcg@{K}"] * evaluated_users / (evaluated_users + n_zero)
    )
    assert np.isfinite(ranx_mode.summary[f"map@{K}"])
    assert isinstance(proto.per_user, pd.DataFrame)
