"""A tuning session end to end on tiny data: equal budgets, the MLflow hierarchy, artifacts,
the final comparison with intervals and paired tests, resuming, and pruning."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from personalize.cli import app
from personalize.core.errors import ConfigError
from personalize.models.baselines.recent_popularity import RecentPopularity
from personalize.recipe import load_experiment
from personalize.tracking.search import cross_leaderboard
from personalize.tuning import tune
from personalize.tuning.final import final_config
from personalize.tuning.results import StudyOutcome
from personalize.tuning.studies import counted

TRIALS = 3


def tiny(tmp, **tuning):
    return {
        "name": "tiny_tune",
        "seeds": [0, 1],
        "data": {"sample_users": 60, "write_processed": False},
        "evaluation": {"bootstrap_resamples": 200},
        "tracking": {"log_split": False, "log_recommendations": False},
        "tuning": {"trials": TRIALS, "startup_trials": 1, "storage": f"sqlite:///{tmp}/optuna.db", **tuning},
        "models": [
            {"type": "popularity"},
            {
                "type": "recent_popularity",
                "search": {"half_life_days": {"low": 1, "high": 1000, "log": True}},
            },
            {
                "type": "als",
                "params": {"iterations": 4, "factors": 8},
                "search": {"regularization": {"low": 0.01, "high": 10, "log": True}},
            },
        ],
    }


@pytest.fixture(scope="module")
def session(tmp_path_factory, _mlflow_template):
    """One tracked session; recent popularity raises in its second fit (a failing trial)."""
    import shutil

    tmp = tmp_path_factory.mktemp("tune")
    shutil.copy(_mlflow_template, tmp / "mlflow.db")
    uri = f"sqlite:///{tmp}/mlflow.db"
    calls = {"n": 0}
    original = RecentPopularity._fit

    def flaky(self, data, monitor):
        calls["n"] += 1
        if calls["n"] == 2:
            raise FloatingPointError("overflow in the decay weights (injected)")
        return original(self, data, monitor)

    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.setattr(RecentPopularity, "_fit", flaky)
    try:
        result = tune(load_experiment(data=tiny(tmp)), progress=False, echo=None)
    finally:
        mp.undo()
    return result, mlflow.MlflowClient(tracking_uri=uri), uri, tmp


def _children(client, result, parent_id):
    return client.search_runs(
        [result.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=500
    )


def test_every_tuned_model_gets_the_same_budget(session):
    result, *_ = session
    table = result.table.set_index("model")
    assert not table.loc["popularity", "tuned"]  # nothing to tune: evaluated once, in the final run
    for label in ("recent_popularity", "als"):
        row = table.loc[label]
        assert row["complete"] + row["pruned"] + row["failed"] == TRIALS
    assert (
        table.loc["recent_popularity", "failed"] == 1
    )  # the raising trial is recorded, and the study went on
    assert result.study("als").best_epoch is not None
    assert result.study("als").best_params["iterations"] == result.study("als").best_epoch


def test_mlflow_hierarchy_session_studies_trials(session):
    result, client, *_ = session
    root = client.get_run(result.session_run_id)
    assert root.data.tags["personalize.kind"] == "session" and root.info.status == "FINISHED"
    assert root.data.params["reproducible"] == "true" and root.data.params["metric"] == "ndcg@10"
    assert root.data.params["tuning.trials"] == str(TRIALS)
    children = {r.info.run_name: r for r in _children(client, result, result.session_run_id)}
    assert set(children) == {"recent_popularity", "als", "tiny_tune final"}
    assert children["tiny_tune final"].data.tags["personalize.kind"] == "experiment"
    decay_trials = _children(client, result, children["recent_popularity"].info.run_id)
    assert len(decay_trials) == TRIALS
    states = {r.data.tags["trial_state"]: r for r in decay_trials}
    failed = states["FAIL"]
    assert failed.info.status == "FAILED" and "overflow in the decay weights" in failed.data.tags["error"]
    complete = states["COMPLETE"]
    assert complete.info.status == "FINISHED" and "half_life_days" in complete.data.params
    assert complete.data.metrics["objective"] == complete.data.metrics["valid_ndcg_at_10"]
    als_trials = _children(client, result, children["als"].info.run_id)
    assert len(als_trials) == TRIALS
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}
    for run in als_trials:
        assert run.info.status == status[run.data.tags["trial_state"]]
        curve = client.get_metric_history(run.info.run_id, "valid_ndcg_at_10")
        assert {m.step for m in curve} == set(range(1, int(run.data.metrics["epochs_run"]) + 1))
    study_run = children["als"]
    assert study_run.data.metrics["trials_complete"] + study_run.data.metrics["trials_pruned"] == TRIALS
    assert study_run.data.params["search.regularization.log"] == "true"


def test_study_artifacts_and_pasteable_best_params(session, tmp_path):
    result, client, *_ = session
    run_id = result.study("als").run_id
    assert {a.path for a in client.list_artifacts(run_id, "plots")} == {
        "plots/optimization_history.png",
        "plots/param_importances.png",
        "plots/intermediate_values.png",
    }
    local = client.download_artifacts(run_id, "best_params.yaml", str(tmp_path))
    with open(local) as f:
        entries = yaml.safe_load(f)
    assert entries[0]["params"]["regularization"] == pytest.approx(
        result.study("als").best_params["regularization"]
    )
    # the whole session's block pastes into an experiment file as it is
    pasted = yaml.safe_load(result.best_params_yaml())
    cfg = load_experiment(data={"name": "pasted", "models": pasted})
    assert [m.label for m in cfg.models] == ["popularity", "recent_popularity", "als"]
    trials = pd.read_csv(client.download_artifacts(run_id, "trials.csv", str(tmp_path)))
    assert len(trials) == TRIALS and "params_regularization" in trials.columns


def test_final_comparison_has_intervals_and_paired_tests(session):
    result, client, *_ = session
    board = result.leaderboard.set_index("model")
    assert set(board.index) == {
        "popularity",
        "recent_popularity",
        "recent_popularity (default)",
        "als",
        "als (default)",
    }
    assert (board["ndcg@10 low"] <= board["ndcg@10"]).all() and (
        board["ndcg@10"] <= board["ndcg@10 high"]
    ).all()
    assert board["p vs best"].isna().sum() == 1 and board["p vs best"].dropna().between(0, 1).all()
    assert (
        board.loc["als", "seeds"] == "0,1" and board.loc["recent_popularity", "seeds"] == "0"
    )  # stochastic: every seed
    final = client.get_run(result.final.parent_run_id)
    assert final.data.params["models"].count("als") == 2
    als_run = next(o for o in result.final.outcomes if o.label == "als")
    assert als_run.params["iterations"] == result.study("als").best_epoch  # refit with the best epoch count
    cmp = result.comparison.set_index("model")
    assert set(cmp.index) == {"recent_popularity", "als"}
    assert cmp["p"].between(0, 1).all() and (cmp["p (Holm)"] >= cmp["p"]).all()
    assert (cmp["difference low"] <= cmp["difference"]).all() and (
        cmp["difference"] <= cmp["difference high"]
    ).all()
    diff = cmp.loc["recent_popularity", "difference"]
    assert diff == pytest.approx(
        board.loc["recent_popularity", "ndcg@10"] - board.loc["recent_popularity (default)", "ndcg@10"]
    )
    champion = result.best_on_test()
    assert champion["label"] == result.leaderboard.iloc[0]["model"] and champion["final_model_run_id"]
    artifacts = {a.path for a in client.list_artifacts(result.session_run_id)}
    assert {
        "studies.csv",
        "best_params.yaml",
        "leaderboard.md",
        "tuned_vs_default.md",
        "config.yaml",
    } <= artifacts


def test_cross_experiment_leaderboard(session):
    result, _, uri, _ = session
    table = cross_leaderboard(["tiny_tune"], uri=uri)
    assert list(table["model"]) == list(result.leaderboard["model"])  # same ranking as the final run
    assert (table["session"] == "tiny_tune tuning").all() and (table["run"] == "tiny_tune final").all()
    out = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", uri, "--experiment", "tiny_tune"])
    assert out.exit_code == 0, out.output
    assert "| recent_popularity (default)" in out.output and "tiny_tune final" in out.output
    missing = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", uri, "--experiment", "nope"])
    assert missing.exit_code == 2 and "no MLflow experiment named 'nope'" in missing.output


def test_rerun_resumes_the_studies_and_the_session(session, monkeypatch):
    result, client, uri, tmp = session
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    before = {t.number: t.value for t in _study(tmp, "recent_popularity").get_trials()}
    again = tune(
        load_experiment(data=tiny(tmp, trials=TRIALS + 1)),
        models=["recent_popularity"],
        search_only=True,
        progress=False,
        echo=None,
    )
    assert again.session_run_id == result.session_run_id  # the same session run, resumed
    trials = _study(tmp, "recent_popularity").get_trials()
    assert counted(trials) == TRIALS + 1 and len(trials) == TRIALS + 1  # exactly one more trial
    assert {t.number: t.value for t in trials[:TRIALS]} == before
    decay_runs = _children(client, result, result.study("recent_popularity").run_id)
    assert len(decay_runs) == TRIALS + 1  # the new trial nests under the same study run
    changed = tiny(tmp)
    changed["models"][1]["search"]["half_life_days"]["high"] = 5000
    with pytest.raises(ConfigError, match="created for another search space"):
        tune(
            load_experiment(data=changed),
            models=["recent_popularity"],
            search_only=True,
            track=False,
            echo=None,
        )


def _study(tmp, label):
    import optuna

    return optuna.load_study(study_name=f"tiny_tune/{label}", storage=f"sqlite:///{tmp}/optuna.db")


def test_seeded_search_is_reproducible():
    def run(seed):
        data = tiny("/unused", storage="memory", seed=seed, trials=4, final=False)
        data["models"] = [
            data["models"][1],
            {"type": "itemknn", "search": {"neighbours": {"low": 5, "high": 200}}},
        ]
        res = tune(load_experiment(data=data), track=False, progress=False, echo=None, keep_per_user=True)
        return [(t, s.per_user[t].mean()) for s in res.studies for t in sorted(s.per_user)], res

    first, res = run(0)
    again, _ = run(0)
    other, _ = run(1)
    assert first == again and first != other
    assert res.study("recent_popularity").best_value == pytest.approx(max(v for _, v in first[:4]))
    assert {type(v) for v in res.study("itemknn").best_params.values()} == {int}


def test_pruning_stops_hopeless_trials(tracking_store):
    data = tiny("/unused", storage="memory", trials=6, warmup_epochs=1, final=False)
    data["models"] = [
        {
            "type": "als",
            "params": {"iterations": 6, "factors": 8},
            "search": {"regularization": {"choices": [0.05, 3000.0]}, "alpha": {"low": 0.5, "high": 5}},
        }
    ]
    data["training"] = {"early_stopping_patience": None}
    result = tune(load_experiment(data=data), progress=False, echo=None)
    study = result.study("als")
    assert study.counts["pruned"] >= 1 and study.counts["complete"] + study.counts["pruned"] == 6
    assert 0 < study.epochs_in_pruned < 6 * study.counts["pruned"]  # pruned trials stopped early
    assert study.epochs_not_run == 6 * study.counts["pruned"] - study.epochs_in_pruned
    client = mlflow.MlflowClient(tracking_uri=tracking_store)
    runs = client.search_runs([result.experiment_id], f"tags.mlflow.parentRunId = '{study.run_id}'")
    pruned = [r for r in runs if r.data.tags["trial_state"] == "PRUNED"]
    assert len(pruned) == study.counts["pruned"]
    for run in pruned:
        assert run.info.status == "KILLED" and run.data.metrics["epochs_run"] < 6
        curve = client.get_metric_history(run.info.run_id, "valid_ndcg_at_10")
        assert max(m.step for m in curve) == run.data.metrics["epochs_run"]


def test_wall_time_budget_is_marked_not_reproducible(tracking_store):
    data = tiny("/unused", storage="memory", trials=10_000, timeout_minutes=0.02, final=False)
    data["models"] = [{"type": "recent_popularity", "search": {"half_life_days": {"low": 1, "high": 100}}}]
    result = tune(load_experiment(data=data), progress=False, echo=None)
    study = result.study("recent_popularity")
    assert study.timed_out and 1 <= study.counts["complete"] < 10_000
    run = mlflow.MlflowClient(tracking_uri=tracking_store).get_run(result.session_run_id)
    assert run.data.params["reproducible"] == "false"
    assert run.data.tags["tuning.budget"] == "wall time (not reproducible)"


@pytest.mark.timeout(120)  # before the fix, the study ran for ever
def test_a_store_that_refuses_trial_runs_fails_the_trials_and_ends_the_study(tracking_store, monkeypatch):
    """A trial whose run the tracking store refuses is failed with the error and counted (it is not
    a worker's lost trial, retried for ever)."""
    from personalize.tracking.tuning import TuningLogger

    def refuse(*args, **kwargs):
        raise TypeError("bad argument type for built-in operation")

    monkeypatch.setattr(TuningLogger, "start_trial", refuse)
    data = tiny("/unused", storage="memory", trials=3, final=False)
    data["models"] = [{"type": "recent_popularity", "search": {"half_life_days": {"low": 1, "high": 100}}}]
    result = tune(load_experiment(data=data), progress=False, echo=None)
    study = result.study("recent_popularity")
    assert study.counts["failed"] == 3 and study.counts["complete"] == 0


def test_each_study_starts_from_the_default_params(session):
    *_, tmp = session
    first = _study(tmp, "recent_popularity").get_trials()[0]
    assert first.params == {"half_life_days": 30.0} and first.user_attrs["start"] == "default params"


def test_random_split_is_tested_on_the_tuning_split_only():
    data = {**tiny("/unused"), "split": {"name": "user_stratified"}}
    data["models"][2]["seeds"] = [0, 1]
    studies = [
        StudyOutcome("popularity", "popularity", tuned=False),
        StudyOutcome("recent_popularity", "recent_popularity", tuned=True, best_value=0.1, best_params={}),
        StudyOutcome("als", "als", tuned=True, best_value=0.1, best_params={"iterations": 2}),
    ]
    final = final_config(load_experiment(data=data), studies, compare_defaults=True)
    assert final.seeds == [0] and all(m.seeds is None for m in final.models)
    assert [m.label for m in final.models] == [
        "popularity",
        "recent_popularity",
        "recent_popularity (default)",
        "als",
        "als (default)",
    ]


def test_tune_command(tmp_path):
    path = tmp_path / "tiny.yaml"
    data = tiny(tmp_path)
    data["seeds"] = [0]
    path.write_text(yaml.safe_dump(data))
    out = CliRunner().invoke(
        app,
        [
            "tune",
            str(path),
            "--trials",
            "2",
            "--storage",
            "memory",
            "--model",
            "popularity",
            "--model",
            "recent_popularity",
            "--no-track",
            "--quiet",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "Tuned on validation ndcg@10 (2 trials per model)" in out.output
    assert "| recent_popularity (default)" in out.output  # the final leaderboard
    pasted = yaml.safe_load(out.output.split("paste under models: in an experiment file):")[1])
    assert [m["name"] for m in pasted] == ["popularity", "recent_popularity"]
    bad = CliRunner().invoke(app, ["tune", str(path), "--model", "nope", "--no-track"])
    assert bad.exit_code == 2 and "no model named ['nope']" in bad.output


def test_compare_pruning_counts_epochs_against_an_unpruned_peer():
    from personalize.tuning import compare_pruning

    data = tiny("/unused", storage="memory", trials=4, warmup_epochs=1)
    data["models"] = [data["models"][0], data["models"][2]]  # popularity is skipped: not iterative
    table = compare_pruning(load_experiment(data=data))
    assert list(table["model"]) == ["als"]
    row = table.iloc[0]
    assert row["epochs (pruned study)"] <= row["epochs (unpruned study)"] <= 4 * 4
    saved = 100 * (1 - row["epochs (pruned study)"] / row["epochs (unpruned study)"])
    assert row["epochs saved %"] == pytest.approx(saved)
    assert row["unpruned best low"] <= row["best valid ndcg@10 (unpruned)"] <= row["unpruned best high"]
    assert row["within interval"] == (
        row["unpruned best low"] <= row["best valid ndcg@10 (pruned)"] <= row["unpruned best high"]
    )
