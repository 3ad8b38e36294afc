"""The recipe end to end on small data, logged to a temporary MLflow store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from personalize.config import EvaluationConfig
from personalize.core import columns as C
from personalize.data.matrix import IdIndex
from personalize.evaluation import Evaluator, make_target
from personalize.evaluation.evaluator import lists_from_frame
from personalize.recipe import load_experiment, run_experiment

TINY = {
    "name": "tiny",
    "seeds": [0, 1],
    "data": {"sample_users": 60, "write_processed": False},
    "models": [
        {"type": "popularity"},
        {"type": "ease", "params": {"l2": 100}},
        {"type": "als", "params": {"factors": 8, "iterations": 3}},
    ],
}


@pytest.fixture(scope="module")
def _store(tmp_path_factory, _mlflow_template):
    import shutil

    db = tmp_path_factory.mktemp("recipe") / "mlflow.db"
    shutil.copy(_mlflow_template, db)
    return f"sqlite:///{db}"


@pytest.fixture(scope="module")
def tiny_run(_store):
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", _store)
    try:
        result = run_experiment(load_experiment(data=TINY), progress=False, echo=None)
    finally:
        mp.undo()
    return result, mlflow.MlflowClient(tracking_uri=_store)


def _children(client, experiment_id, parent_id):
    return client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")


def test_run_hierarchy_and_params(tiny_run):
    result, client = tiny_run
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["personalize.kind"] == "experiment"
    params = parent.data.params
    assert params["data.fingerprint"] == result.dataset.fingerprint
    assert params["split.name"] == "user_temporal"
    assert params["git_commit"]
    assert params["version.numpy"] == np.__version__
    assert params["evaluation.ks"] == "[5, 10, 20]"
    models = _children(client, result.experiment_id, result.parent_run_id)
    assert sorted(r.info.run_name for r in models) == ["als", "ease", "popularity"]
    seeds = {r.info.run_name: _children(client, result.experiment_id, r.info.run_id) for r in models}
    assert len(seeds["als"]) == 2  # stochastic: one nested run per seed
    assert len(seeds["ease"]) == 1 and len(seeds["popularity"]) == 1
    als = next(r for r in models if r.info.run_name == "als")
    for key in (
        "test_ndcg_at_10",
        "valid_map_at_10",
        "fit_seconds",
        "eval_seconds",
        "test_ndcg_at_10_std",
        "test_ndcg_at_10_ci_low",
        "test_ndcg_at_10_ci_high",
    ):
        assert key in als.data.metrics, key
    assert als.data.params["params.iterations"] == "3"
    seed_run = seeds["als"][0]
    history = client.get_metric_history(seed_run.info.run_id, "valid_ndcg_at_10")
    assert sorted({m.step for m in history}) == [1, 2, 3]  # a learning curve
    assert client.get_metric_history(seed_run.info.run_id, "train_loss")
    assert (
        "p_vs_best"
        in next(r for r in models if r.info.run_name != result.leaderboard.iloc[0]["model"]).data.metrics
    )


def test_artifacts_let_anyone_recompute_the_metrics(tiny_run, tmp_path):
    result, client = tiny_run
    parent = result.parent_run_id
    names = {a.path for a in client.list_artifacts(parent)}
    assert {
        "leaderboard.csv",
        "leaderboard.md",
        "metrics.csv",
        "config.yaml",
        "protocol.md",
        "plots",
        "split",
        "data",
    } <= names
    assert {a.path for a in client.list_artifacts(parent, "plots")} == {"plots/ndcg_map_vs_k.png"}
    local = Path(client.download_artifacts(parent, "split", str(tmp_path)))
    train, valid, test = (pd.read_parquet(local / f"{p}.parquet") for p in ("train", "valid", "test"))
    ease = next(r for r in _children(client, result.experiment_id, parent) if r.info.run_name == "ease")
    recs = pd.read_parquet(
        client.download_artifacts(ease.info.run_id, "recommendations.parquet", str(tmp_path))
    )
    assert set(recs.columns) >= {C.USER, C.ITEM, C.RANK, C.SCORE}
    assert recs.groupby(C.USER).size().eq(20).all()
    d = result.dataset
    seen = pd.concat([train, valid])
    index = IdIndex.build(d.users, d.items, seen, test)
    target = make_target("test", test, seen, index)
    items, scores = lists_from_frame(recs, target, 20)
    recomputed = Evaluator(EvaluationConfig()).evaluate_lists(items, scores, target)
    assert recomputed.summary["ndcg@10"] == pytest.approx(ease.data.metrics["test_ndcg_at_10"], abs=1e-9)
    assert recomputed.summary["map@20"] == pytest.approx(ease.data.metrics["test_map_at_20"], abs=1e-9)


def test_leaderboard_has_intervals_and_paired_tests(tiny_run):
    result, _ = tiny_run
    table = result.leaderboard
    assert table["ndcg@10"].is_monotonic_decreasing
    assert (table["ndcg@10 low"] <= table["ndcg@10"]).all() and (
        table["ndcg@10"] <= table["ndcg@10 high"]
    ).all()
    assert np.isnan(table.loc[0, "p vs best"])
    assert table.loc[1:, "p vs best"].between(0, 1).all()
    assert set(table["seeds"]) == {"0", "0,1"}
    assert (table["fit s"] >= 0).all() and (table["eval s"] > 0).all()


def test_global_temporal_reports_warm_and_cold(_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _store)
    config = load_experiment(
        data={
            **TINY,
            "name": "tiny_global",
            "seeds": [0],
            "split": {"name": "global_temporal"},
            "data": {"sample_users": 200, "write_processed": False},
        },
    )
    result = run_experiment(config, progress=False, echo=None)
    table = result.leaderboard
    assert {"ndcg@10 warm", "ndcg@10 cold", "warm users", "cold users"} <= set(table.columns)
    assert (table["warm users"] + table["cold users"] == table["users"]).all()
    assert (table["cold users"] > 0).all()
    # a model that is not personal for cold users scores them exactly like popularity
    pop = result.outcomes[0].per_user()
    ease = result.outcomes[1].per_user()
    cold = ~pop["warm"].astype(bool)
    np.testing.assert_allclose(ease.loc[cold, "ndcg@10"], pop.loc[cold, "ndcg@10"])
    client = mlflow.MlflowClient(tracking_uri=_store)
    model_run = client.get_run(result.outcomes[1].run_id)
    assert (
        model_run.data.metrics["n_test_users_cold"]
        == table.loc[table["model"] == "ease", "cold users"].iloc[0]
    )


def test_grid_is_chosen_on_validation(_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _store)
    config = load_experiment(
        data={
            **TINY,
            "name": "tiny_grid",
            "seeds": [0],
            "models": [{"type": "ease", "grid": {"l2": [1.0, 100.0, 10000.0]}}],
        },
    )
    result = run_experiment(config, progress=False, echo=None)
    seed = result.outcomes[0].seeds[0]
    assert [row["l2"] for row in seed.grid] == [1.0, 100.0, 10000.0]
    best = max(seed.grid, key=lambda r: r["valid_ndcg@10"])
    assert seed.selected_params["l2"] == best["l2"]
    assert seed.valid.summary["ndcg@10"] == pytest.approx(best["valid_ndcg@10"])
    client = mlflow.MlflowClient(tracking_uri=_store)
    seed_runs = client.search_runs(
        [result.experiment_id], f"tags.mlflow.parentRunId = '{result.outcomes[0].run_id}'"
    )
    assert "grid.csv" in {a.path for a in client.list_artifacts(seed_runs[0].info.run_id)}
