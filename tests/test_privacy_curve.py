"""The privacy-utility curve: expansion of private models over the curve's points, and a tiny
curve end to end (few users, two epsilons, one seed) logged to a temporary MLflow store and read
back the way notebook 07 reads it."""

from __future__ import annotations

import re

import mlflow
import numpy as np
import pandas as pd
import pytest

from personalize.core.errors import ConfigError, PersonalizeError
from personalize.evaluation.membership import dp_auc_bound
from personalize.privacy.dp import load_curve
from personalize.recipe import load_experiment
from personalize.recipe.curve import curve_parts, expand_spec

TINY = {
    "name": "tiny_privacy",
    "seeds": [0],
    "data": {"sample_users": 150},
    "split": {"name": "user_holdout"},
    "privacy_curve": {"epsilons": [1, 8], "max_units": {"user": 150, "event": 22_500}},
    "evaluation": {"bootstrap_resamples": 200},
    "training": {"refit": False, "early_stopping_patience": 2},
    "models": [
        {"type": "dp_popularity"},
        {"type": "dp_ease", "grid": {"l2": [100, 1000]}},
        {"type": "dp_multvae", "params": {"epochs": 3, "hidden": 32, "latent": 16, "batch_size": 32}},
        {"type": "dp_neumf", "params": {"epochs": 1, "factors": 8, "mlp_embedding": 8, "mlp_layers": [8]}},
        {"type": "ease", "params": {"l2": 250}},
    ],
}


def _config(**changes):
    data = {**TINY, **changes}
    return load_experiment(data=data)


def test_private_models_expand_over_every_point():
    config = _config()
    specs = expand_spec(config.models[1], config)
    labels = [s.label for s, _ in specs]
    assert labels == [
        "dp_ease non-private",
        "dp_ease clipping only",
        "dp_ease eps=1",
        "dp_ease eps=8",
    ]
    by_label = {s.label: s for s, _ in specs}
    assert by_label["dp_ease non-private"].params == {"epsilon": None, "clip": None}
    assert by_label["dp_ease clipping only"].params == {"epsilon": None}
    assert by_label["dp_ease eps=8"].params == {"epsilon": 8.0, "max_units": 150}
    assert all(s.grid == {"l2": [100, 1000]} for s, _ in specs), (
        "the validation grid is the same at every point"
    )
    assert [p.epsilon for _, p in specs] == [None, None, 1.0, 8.0]
    # a model not private runs once; a private model with epsilon written down runs as written
    assert [s.label for s, _ in expand_spec(config.models[4], config)] == ["ease"]
    fixed = config.models[1].model_copy(update={"params": {"epsilon": 2.0}})
    ((spec, point),) = expand_spec(fixed, config)
    assert spec.label == "dp_ease" and point.point == "eps=2"


def test_units_run_on_their_own_split():
    parts = {p.unit: p for p in curve_parts(_config())}
    assert parts["user"].config.split.name == "user_holdout"
    assert parts["event"].config.split.name == "user_temporal"
    assert [s.type for s in parts["event"].config.models] == ["dp_neumf"] * 4 + ["ease"]
    # a model that is not private is a reference in every unit's experiment
    assert parts["event"].points["ease"].unit == "event" and parts["user"].points["ease"].unit == "user"
    assert "dp_neumf eps=8" not in parts["user"].points
    assert parts["user"].config.tracking.experiment == "tiny_privacy"
    assert parts["user"].config.privacy_curve is None


def test_curve_config_is_checked():
    with pytest.raises(ConfigError, match="epsilon"):
        _config(privacy_curve={"epsilons": [0, 1]})


def test_no_curve_in_the_store_says_how_to_make_one(tracking_store):
    with pytest.raises(PersonalizeError, match=re.escape("personalize run experiments/ml100k_privacy.yaml")):
        load_curve("ml100k_privacy", tracking_store, run_tiny_if_missing=False)


def test_tiny_curve_end_to_end(tracking_store, tmp_path):
    """The tiny version of experiments/ml100k_privacy.yaml, run by notebook 07's fallback."""
    record, tiny = load_curve("ml100k_privacy", tracking_store)
    assert tiny and record.experiment == "ml100k_privacy_tiny"
    table = record.table
    rows = {(r.model, r.point): r for r in table.itertuples(index=False)}
    for model in ("dp_popularity", "dp_ease", "dp_itemknn", "dp_als", "dp_multvae", "dp_neumf"):
        for point in ("non-private", "clipping only", "eps=1", "eps=8"):
            assert (model, point) in rows, (model, point)
    assert set(table.loc[table["model"] == "dp_neumf", "unit"]) == {"event"}
    assert set(table.loc[table["model"] == "popularity", "unit"]) == {"user", "event"}
    assert set(table.loc[table["model"] == "dp_neumf", "split"]) == {"user_temporal"}
    assert set(table.loc[table["model"] == "dp_ease", "split"]) == {"user_holdout"}
    # every row has an accuracy with its interval and an attack; private rows a ceiling
    assert table["ndcg@10"].between(0, 1).all()
    assert (table["ndcg@10 low"] <= table["ndcg@10"]).all() and (
        table["ndcg@10"] <= table["ndcg@10 high"]
    ).all()
    assert table["attack AUC"].between(0, 1).all()
    private = table[table["epsilon"].notna()]
    for _, r in private.iterrows():
        assert 0 < r["delta"] < 1
        assert r["AUC bound"] == pytest.approx(dp_auc_bound(r["epsilon"], r["delta"]))
    sgd = private[private["model"].isin(["dp_multvae", "dp_neumf"])]
    assert sgd["noise multiplier"].gt(0).all() and sgd["sample rate"].between(0, 1).all()
    assert (sgd["epsilon spent"] <= sgd["epsilon"] * 1.01).all()

    assert record.metric == "ndcg@10"
    client = mlflow.MlflowClient(tracking_store)
    artifacts = {a.path for a in client.list_artifacts(record.run_id, "plots")}
    assert "plots/privacy_curve.png" in artifacts
    experiment_id = client.get_run(record.run_id).info.experiment_id
    children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{record.run_id}'")
    assert {r.info.run_name for r in children} == {
        "ml100k_privacy_tiny user-level",
        "ml100k_privacy_tiny event-level",
    }
    # a private model run carries its guarantee; DP-SGD seed runs epsilon spent per epoch
    seed_runs = client.search_runs([experiment_id], "attributes.run_name = 'dp_multvae eps=8 seed=0'")
    (seed_run,) = seed_runs
    params = seed_run.data.params
    assert params["privacy.dp_unit"] == "user" and float(params["privacy.dp_epsilon"]) == 8.0
    for key in ("dp_delta", "dp_clip", "dp_noise_multiplier", "dp_sample_rate", "dp_accountant"):
        assert f"privacy.{key}" in params, key
    spent = client.get_metric_history(seed_run.info.run_id, "dp_epsilon_spent")
    assert len(spent) >= 1 and np.all(np.diff([m.value for m in sorted(spent, key=lambda m: m.step)]) >= 0)
    assert "attack_auc" in seed_run.data.metrics
    # what is not released: a private model's training loss (private batches, no noise) is not
    # logged; the clipped-only run, which promises nothing, logs it
    assert not client.get_metric_history(seed_run.info.run_id, "train_loss")
    (clipped,) = client.search_runs(
        [experiment_id], "attributes.run_name = 'dp_multvae clipping only seed=0'"
    )
    assert client.get_metric_history(clipped.info.run_id, "train_loss")
    assert params["privacy.dp_noise"] == "secret" and params["privacy.dp_private"] == "true"
    (model_run,) = client.search_runs([experiment_id], "attributes.run_name = 'dp_multvae eps=8'")
    assert model_run.data.metrics["dp_epsilon_total"] == 8.0 and model_run.data.metrics["dp_fits"] == 1
    assert client.get_run(record.run_id).data.metrics["dp_ease/eps_8/epsilon_total"] == 8.0
    # each point's total: grid points x seeds private fits, basic composition, beside the per-run epsilon
    ease = table[(table["model"] == "dp_ease") & table["epsilon"].notna()]
    assert (ease["epsilon total"] == ease["epsilon"] * ease["grid points"] * ease["seeds"]).all()
    assert (table.loc[table["epsilon"].isna(), "epsilon total"].isna()).all()
    # the result files the README's tables come from
    from typer.testing import CliRunner

    from personalize.cli import app

    out = tmp_path / "results"
    done = CliRunner().invoke(
        app,
        [
            "privacy",
            "curve",
            "--experiment",
            record.experiment,
            "--results",
            str(out),
            "--tracking-uri",
            tracking_store,
        ],
    )
    assert done.exit_code == 0, done.output
    tables = (out / "ml100k_privacy_tiny_curve.md").read_text()
    assert "ε 1" in tables and "ceiling (any attack)" in tables
    assert "| 8 (1 x 1) |" in tables  # the tiny curve keeps one grid point and one seed
    assert len(pd.read_csv(out / "ml100k_privacy_tiny_curve.csv")) == len(table)
    assert (out / "ml100k_privacy_tiny_curve.png").stat().st_size > 10_000


def test_an_event_level_private_model_chooses_on_unmasked_validation(ml100k_small):
    """Its validation users are its training users: masking their training items would make the
    epoch and grid choice read the private training events; the choice ranks every item instead."""
    from personalize.recipe import steps

    config = _config(split={"name": "user_temporal"}, evaluation={"membership_attack": False})
    prepared = steps.prepare_split(ml100k_small, config, config.seeds[0])
    spec = config.models[3]
    private = spec.model_copy(update={"params": {**spec.params, "epsilon": 1.0, "max_units": 100_000}})
    assert private.type == "dp_neumf" and prepared.valid_target.seen.nnz > 0
    assert steps.validation_target(spec, prepared) is prepared.valid_target  # not private: masked
    assert steps.validation_target(config.models[1], prepared) is prepared.valid_target  # user-level
    targets = []
    monitor, evaluate = steps.ValidationMonitor, steps.Evaluator.evaluate

    def watched_monitor(target, **kwargs):
        targets.append(target)
        return monitor(target, **kwargs)

    def watched_evaluate(self, model, target):
        targets.append(target)
        return evaluate(self, model, target)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(steps, "ValidationMonitor", watched_monitor)
        mp.setattr(steps.Evaluator, "evaluate", watched_evaluate)
        steps.fit_and_evaluate(private, 0, prepared, config, evaluate_test=False)
    validation = [t for t in targets if t.name == prepared.valid_target.name]
    assert len(validation) >= 2 and all(t.seen.nnz == 0 for t in validation)


def test_a_private_model_budget_cannot_vary_in_a_grid_or_search():
    """The total epsilon multiplies the fits by the chosen point's epsilon: a grid over the budget
    itself would be charged at the chosen value only, so it is refused by name."""
    model = {"type": "dp_ease", "params": {"max_units": 1000}}
    for block in (
        {"grid": {"epsilon": [1, 8]}},
        {"grid": {"max_units": [1000, 2000]}, "params": {"epsilon": 1.0}},
    ):
        with pytest.raises(ConfigError, match="cannot vary in a grid or search"):
            _config(models=[{**model, **block, "params": {**model["params"], **block.get("params", {})}}])
    _config(models=[{"type": "ease", "grid": {"l2": [10, 100]}}])  # other models' grids are untouched
