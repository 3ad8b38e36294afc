"""Exporting the champion: chosen on validation, refit on all data, logged as a self-contained
MLflow model, registered with the champion alias, and loaded elsewhere with identical answers."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from personalize.cli import app
from personalize.core import columns as C
from personalize.core.errors import ConfigError
from personalize.evaluation.stats import paired_test
from personalize.recipe import export_after_run, load_experiment, run_experiment
from personalize.serving import Candidate, ExportError, choose_champion, recommendations_frame
from personalize.serving import export as export_module
from personalize.serving.champion import rank
from personalize.serving.state import SCORING_CODE, SHIPPED_NAME
from personalize.tracking.model_registry import model_files, registry_table

NAME = "tiny-recommender"
TINY = {
    "name": "tiny_export",
    "seeds": [0, 1],
    "data": {"sample_users": 60, "write_processed": False},
    "models": [
        {"type": "random"},
        {"type": "popularity"},
        {"type": "ease", "params": {"l2": 100}},
        {"type": "als", "params": {"factors": 8, "iterations": 4}},
    ],
    "export": {"enabled": True, "registered_model": NAME},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory, _mlflow_template):
    db = tmp_path_factory.mktemp("export") / "mlflow.db"
    shutil.copy(_mlflow_template, db)
    return f"sqlite:///{db}"


@pytest.fixture(scope="module")
def exported(store):
    """A tiny experiment run with ``export: {enabled: true}``."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", store)
    try:
        result = run_experiment(load_experiment(data=TINY), progress=False, echo=None)
    finally:
        mp.undo()
    return result, result.extras["export"]


@pytest.fixture
def in_store(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    return store


def test_the_champion_is_the_best_on_validation_or_the_cheaper_of_a_tie(exported):
    result, ex = exported
    valid = {o.label: o.summary("valid")["ndcg@10"] for o in result.outcomes}
    ranked = sorted((label for label in valid if label != "random"), key=valid.get, reverse=True)
    leader, runner_up = ranked[:2]
    per_user = {o.label: o.per_user("valid")["ndcg@10"] for o in result.outcomes}
    joined = pd.concat([per_user[leader], per_user[runner_up]], axis=1, join="inner")
    p = paired_test(joined.iloc[:, 0].to_numpy(), joined.iloc[:, 1].to_numpy())
    sel = ex.selection
    assert sel.leader.label == leader and sel.runner_up.label == runner_up
    assert sel.p_value == pytest.approx(p)
    table = ex.candidates.set_index("model")
    if p >= 0.05:  # within noise: both were refit, the smaller exported state wins
        assert set(sel.sizes) == {leader, runner_up}
        assert ex.champion.label == min(sel.sizes, key=sel.sizes.get)
        assert "cheaper to serve" in ex.reason
    else:
        assert ex.champion.label == leader and "leads" in ex.reason
    assert ex.champion.value == pytest.approx(valid[ex.champion.label])
    assert not table.loc["random", "exportable"] and table.loc[ex.champion.label, "champion"]
    assert table["champion"].sum() == 1
    # intervals over validation users and the champion's test figure are shown, never used to choose
    assert (table["valid ndcg@10 low"] <= table["valid ndcg@10"]).all()
    assert table.loc[ex.champion.label, "test ndcg@10"] == pytest.approx(
        next(o for o in result.outcomes if o.label == ex.champion.label).summary("test")["ndcg@10"]
    )


def test_the_tie_rule_prefers_the_cheaper_model_to_serve():
    users = pd.Index(range(200), name="user_id")
    rng = np.random.default_rng(0)
    a = pd.Series(rng.random(200), index=users)
    clear = [
        Candidate("x", "ease", {}, 0.50, per_user=a + 0.3 + rng.normal(0, 0.05, 200)),
        Candidate("y", "als", {}, 0.20, per_user=a),
    ]
    sel = rank(clear)
    assert sel.leader.label == "x" and sel.p_value < 1e-6 and not sel.tied
    noisy = a + rng.normal(0, 0.2, 200)
    tied = [Candidate("x", "ease", {}, 0.501, per_user=a), Candidate("y", "als", {}, 0.500, per_user=noisy)]
    sel = rank(tied)
    assert sel.tied and sel.p_value >= 0.05
    sel.sizes = {"x": 10 * 2**20, "y": 2**20}
    sel.champion = tied[1]
    assert "within noise" in sel.reason("ndcg@10") and "cheaper to serve wins: y" in sel.reason("ndcg@10")


def test_choice_skips_models_that_cannot_be_exported():
    cands = [
        Candidate("random", "random", {}, 0.9),
        Candidate("recbole_ease", "recbole_ease", {}, 0.8),  # peers take part in comparisons only
        Candidate("ease", "ease", {"l2": 100.0}, 0.3),
        Candidate("broken", "als", {}, math.nan),
        Candidate("als", "als", {}, 0.3),  # a tie goes to the first listed
    ]
    assert choose_champion(cands).label == "ease"
    with pytest.raises(ExportError, match="no exportable model among the candidates"):
        choose_champion([Candidate("random", "random", {}, 0.9), Candidate("peer", "recbole_bpr", {}, 0.5)])


def test_the_champion_is_refit_on_all_the_data_with_its_selected_params(exported):
    result, ex = exported
    outcome = next(o for o in result.outcomes if o.label == ex.champion.label)
    best_seed = max(outcome.seeds, key=lambda s: s.valid.summary["ndcg@10"])
    assert ex.champion.params == best_seed.selected_params and ex.champion.seed == best_seed.seed
    interactions = result.dataset.interactions
    assert ex.model.seen_.nnz == len(interactions[[C.USER, C.ITEM]].drop_duplicates())
    assert ex.model.popularity_.sum() == len(interactions)  # train + validation + test
    assert ex.model.n_items == len(result.dataset.items)


def test_the_logged_model_is_self_contained(exported, in_store):
    _, ex = exported
    folder = model_files(ex.model_uri)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["model_code_path"].endswith("recsys_pyfunc.py")  # a model from code
    assert not list(folder.rglob("*.pkl"))  # no pickled PythonModel
    shipped = folder / "code" / SHIPPED_NAME  # the scoring package the models use, as it is
    assert {p.name for p in shipped.glob("*.py")} == {p.name for p in SCORING_CODE.glob("*.py")}
    for path in SCORING_CODE.glob("*.py"):
        assert (shipped / path.name).read_text() == path.read_text()
    state = folder / "artifacts" / "state"
    assert {"manifest.json", "users.parquet", "items.parquet", "seen_indptr.npy", "popularity.npy"} <= {
        p.name for p in state.iterdir()
    }
    requirements = [line.split("==")[0] for line in (folder / "requirements.txt").read_text().split()]
    assert set(requirements) <= {"mlflow", "numpy", "pandas", "scipy", "pyarrow", "pydantic", "torch"}
    assert {"numpy", "scipy", "pandas"} <= set(requirements)
    signature = mlmodel["signature"]
    inputs = json.loads(signature["inputs"])[0]["properties"]
    attributes = {"age", "gender", "occupation", "zip_code"}  # optional: a cold user's segment
    # history: the items a user sends to be answered from (a private export's only source)
    assert {"user_id", "k", "exclude_items", "history", *attributes} == set(inputs)
    assert inputs["k"]["required"] is False and inputs["history"]["required"] is False
    assert not any(inputs[a]["required"] for a in attributes)
    assert inputs["user_id"]["type"] == "long" and inputs["exclude_items"]["items"]["type"] == "long"
    config = pyfunc["config"]
    assert (config["user_id_type"], config["item_id_type"]) == ("int", "int")  # ML-100K IDs are integers
    assert config["online_url"] is None  # no online store unless configured (export, environment, load)
    outputs = json.loads(signature["outputs"])[0]["properties"]
    assert set(outputs) == {C.USER, C.ITEM, C.RANK, C.SCORE, C.PERSONALISED, C.SEGMENT, "fresh", "consent"}
    assert json.loads(signature["params"]) == [{"name": "k", "type": "long", "default": 10, "shape": None}]
    example = json.loads((folder / "serving_input_example.json").read_text())
    assert example["params"] == {"k": 10} and "user_id" in example["inputs"][0]


REQUEST = [
    {"user_id": None, "k": 5},  # filled with a known user
    {"user_id": None, "exclude_items": None},  # a known user, excluding its first recommendation
    {"user_id": 999_999_999},  # never seen
]


def _request(ex):
    users = [int(u) for u in ex.model.index_.users[:2]]
    first = ex.model.recommend(users[1:], k=1)[C.ITEM].tolist()
    rows = [dict(r) for r in REQUEST]
    rows[0]["user_id"], rows[1]["user_id"], rows[1]["exclude_items"] = users[0], users[1], first
    return rows, users, first


def test_loaded_model_answers_as_the_refit_model_and_a_fresh_process_answers_the_same(
    exported, in_store, tmp_path
):
    _, ex = exported
    rows, users, excluded = _request(ex)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    answer = [p.model_dump() for p in model.predict(rows, params={"k": 3})]
    frame = recommendations_frame(answer)
    expect = pd.concat(
        [
            ex.model.recommend(users[:1], k=5),
            ex.model.recommend(users[1:], k=3, exclude_items={users[1]: excluded}),
            ex.model.recommend([999_999_999], k=3),
        ],
        ignore_index=True,
    )
    assert frame[C.ITEM].tolist() == expect[C.ITEM].tolist()
    assert frame[C.PERSONALISED].tolist() == [True] * 8 + [False] * 3
    # the same scores; a dot product over a block of two users may differ in the last bit
    np.testing.assert_allclose(frame[C.SCORE].to_numpy(np.float32), expect[C.SCORE].to_numpy(), rtol=1e-6)

    script = textwrap.dedent(
        f"""
        import importlib.abc, json, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("personalize", "torchrec", "recbole", "implicit"):
                    raise ImportError(name + " must not be needed to serve")
        sys.meta_path.insert(0, Block())
        import mlflow
        model = mlflow.pyfunc.load_model("models:/{NAME}@champion")
        out = model.predict({rows!r}, params={{"k": 3}})
        print(json.dumps([p.model_dump() for p in out]))
        """
    )
    env = {
        "MLFLOW_TRACKING_URI": in_store,
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    assert fresh == answer


def test_registry_holds_the_champion_and_the_promotion_record(exported, in_store):
    result, ex = exported
    client = mlflow.MlflowClient(tracking_uri=in_store)
    version = client.get_model_version_by_alias(NAME, "champion")
    assert str(version.version) == ex.version == "1"
    tags = version.tags
    assert tags["promotion.run_id"] == ex.run_id
    assert tags["promotion.source_run_id"] == result.parent_run_id
    assert tags["promotion.model"] == ex.champion.label
    assert tags["promotion.metric"] == "valid_ndcg@10"
    assert float(tags["promotion.value"]) == pytest.approx(ex.champion.value, abs=1e-6)
    assert tags["previous.version"] == "none"
    export_run = client.get_run(ex.run_id)
    assert export_run.data.tags["personalize.kind"] == "export"
    assert export_run.data.tags["mlflow.parentRunId"] == result.parent_run_id
    assert {"candidates.csv", "plots"} <= {a.path for a in client.list_artifacts(ex.run_id)}


def test_cli_export_registers_a_new_version_and_records_the_previous_champion(exported, in_store):
    result, ex = exported
    # the same run exported again: same choice, same state, same code and settings -> no new version
    out = CliRunner().invoke(app, ["export", result.parent_run_id, "--quiet"])
    assert out.exit_code == 0, out.output
    assert "same data" in out.output and "unchanged: version 1 already serves this exact state" in out.output
    client = mlflow.MlflowClient(tracking_uri=in_store)
    assert registry_table(NAME, in_store)["version"].tolist() == [1]
    # a change of what the model answers (here a serving setting) registers a new version
    again = export_module.export_run(
        result.parent_run_id, overrides={"max_k": 500}, progress=False, echo=None
    )
    assert not again.unchanged and again.champion.label == ex.champion.label  # the same choice
    v2 = client.get_model_version_by_alias(NAME, "champion")
    assert str(v2.version) == "2"
    assert v2.tags["previous.version"] == "1" and v2.tags["previous.run_id"] == ex.run_id
    assert v2.tags["promotion.model"] == ex.champion.label
    assert client.get_model_version(NAME, "1").tags["superseded_by"] == "2"
    table = registry_table(NAME, in_store)
    assert table["version"].tolist() == [1, 2]
    assert table["aliases"].tolist() == ["", "champion"]
    # --no-promote registers without moving the alias; --experiment finds the latest run
    out = CliRunner().invoke(app, ["export", "--experiment", "tiny_export", "--no-promote", "-q"])
    assert out.exit_code == 0, out.output
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    assert registry_table(NAME, in_store)["version"].tolist() == [1, 2, 3]


def test_cli_export_refuses_bad_input(exported, in_store):
    runner = CliRunner()
    out = runner.invoke(app, ["export"])
    assert out.exit_code == 2 and "give either RUN_ID or --experiment NAME" in out.output
    out = runner.invoke(app, ["export", "no-such-run"])
    assert out.exit_code == 2 and "no run 'no-such-run'" in out.output
    result, ex = exported
    out = runner.invoke(app, ["export", ex.run_id])  # the export run is not a parent run
    assert out.exit_code == 2 and "is a export run" in out.output
    out = runner.invoke(app, ["export", result.parent_run_id, "--registered-model", "a/b"])
    assert out.exit_code == 2 and "not a valid registry name" in out.output


def test_export_refuses_when_the_data_changed(exported, in_store, monkeypatch):
    result, _ = exported
    real = export_module.ingest
    monkeypatch.setattr(
        export_module, "ingest", lambda cfg: dataclasses.replace(real(cfg), fingerprint="0" * 64)
    )
    with pytest.raises(ExportError, match="the data changed since run"):
        export_module.export_run(result.parent_run_id, progress=False, echo=None)


def test_export_needs_tracking_and_a_valid_block():
    said = []
    export_after_run(None, tracked=False, echo=said.append)
    assert "Export skipped" in said[0]
    with pytest.raises(ConfigError, match=r"export\.nope: unknown key"):
        load_experiment(data={**TINY, "export": {"nope": 1}})
    with pytest.raises(ConfigError, match=r"export\.metric uses K=7"):
        load_experiment(data={**TINY, "export": {"metric": "ndcg@7"}})
    with pytest.raises(ConfigError, match="default_k"):
        load_experiment(data={**TINY, "export": {"default_k": 50, "max_k": 20}})
