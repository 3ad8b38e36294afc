"""Every artifact the lab logs is declared (per-user, rewritten by erasure, or free of per-user
data: :mod:`personalize.tracking.artifacts`), and after ``subject forget`` none of them holds the
user's raw ID or pseudonym.

The lab runs every kind of run it logs on one dataset of distinctive string IDs with pseudonyms
on, the target written two ways and a malformed line of theirs (the fixtures of
``test_privacy_subject``): an experiment with segments, a grid, an iterative model, a routed
hybrid, the per-segment leaderboard and export; a segmentation run; a tuning session; a replay; a
privacy curve; the comparison report's figures and tables. Then every file of the artifact store
(runs' and logged models') is listed and looked up, and after ``forget`` every file, the database,
every registered version and every Redis key is scanned for either ID as plain bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from personalize.cli import app
from personalize.data.privacy import Pseudonymiser
from personalize.models.registry import get_model_class
from personalize.privacy.subject import identify
from personalize.recipe import load_experiment, run_experiment
from personalize.scoring.online import OnlineSettings, OnlineStore
from personalize.tracking import artifacts
from test_privacy_subject import PSEUDONYM_KEY, SUPPRESSION_KEY, TARGET, _decoded, _raw_files, _scan

NS = "labns"
GENRES = ["Action", "Comedy", "Drama"]
SEGMENTS = {
    "enabled": True,
    "clustering": {"k": 2, "ks": [2], "choose_from": [2, 2], "seeds": [0, 1], "bootstrap": 2, "n_init": 1},
    "profile": {"embedding": False},
    "autoencoder": {"enabled": False},
    "classifier": {"first_n": [2], "max_iter": 10},
}


def _lab_files(folder: Path) -> dict[str, Path]:
    """The shop's raw files, the target also written with surrounding spaces (merged as one user,
    reported as a spelling group), and an items table with genres (segments)."""
    raw = _raw_files(folder)
    with raw["interactions"].open("a") as fh:
        fh.write(f"  {TARGET} ,sku-029,4,1600090000\n")
    raw["items"] = folder / "items.csv"
    raw["items"].write_text(
        "item_id,title,genres\n"
        + "\n".join(f"sku-{i:03d},Item {i},{GENRES[i % 3]}|{['Kids', 'Noir'][i % 2]}" for i in range(30))
    )
    return raw


def _experiment(raw: dict[str, Path], redis_url: str, tuning_db: Path) -> dict:
    parts = [{"type": "popularity"}, {"type": "ease", "params": {"l2": 50.0}}]
    return {
        "name": "lab_artifacts",
        "seeds": [0],
        "data": {
            "source": "files",
            "name": "shop",
            "interactions": {"path": str(raw["interactions"])},
            "users": {"path": str(raw["users"])},
            "items": {"path": str(raw["items"])},
            "rating_range": [1, 5],
            "privacy": {"pseudonymise": True},
        },
        "segments": SEGMENTS,
        "evaluation": {"by": "segment", "bootstrap_resamples": 100},
        "models": [
            {"type": "popularity"},
            {"type": "ease", "grid": {"l2": [50.0, 200.0]}},
            {"type": "als", "params": {"factors": 4, "iterations": 3}},
            {"type": "routed", "params": {"components": parts, "min_users": 1}},
        ],
        "export": {"enabled": True, "registered_model": "lab-recommender", "online": {"enabled": True}},
        "online": {"redis_url": redis_url, "namespace": NS},
        "tuning": {"trials": 2, "startup_trials": 1, "storage": f"sqlite:///{tuning_db}"},
        "replay": {"retrain_days": [14], "popularity_half_life_days": [None]},
    }


def _store_files(root: Path) -> list[tuple[str, str, Path]]:
    """Every file of a local artifact store as (scope, path within its run or logged model, file)."""
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        parts = path.relative_to(root).parts
        if len(parts) > 4 and parts[1] == "models" and parts[3] == "artifacts":
            out.append(("model", "/".join(parts[4:]), path))
        elif len(parts) > 3 and parts[2] == "artifacts":
            out.append(("run", "/".join(parts[3:]), path))
        else:
            out.append(("unknown", "/".join(parts), path))
    return out


@pytest.fixture
def lab(tmp_path, tracking_store, redis_server, monkeypatch):
    monkeypatch.setenv("PERSONALIZE_PSEUDONYM_KEY", PSEUDONYM_KEY)
    monkeypatch.setenv("PERSONALIZE_SUPPRESSION_KEY", SUPPRESSION_KEY)
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path / "data"))
    raw = _lab_files(tmp_path / "raw")  # outside the scanned tree: raw inputs hold the ID by definition
    spec = _experiment(raw, redis_server.url, tmp_path / "optuna.db")
    exp_file = tmp_path / "lab.yaml"
    exp_file.write_text(yaml.safe_dump(spec))
    db = Path(tracking_store[len("sqlite:///") :])
    return {
        "spec": spec,
        "file": exp_file,
        "data": tmp_path / "data",
        "db": db,
        "artifacts": db.parent / "artifacts",
    }


def _run_every_kind(spec: dict) -> dict:
    """One run of every kind the lab logs (module doc)."""
    from personalize.recipe.replay import run_replay
    from personalize.recipe.run import run_privacy_curve
    from personalize.recipe.segments import run_segmentation
    from personalize.reports import comparison
    from personalize.tuning.session import tune

    config = load_experiment(data=spec)
    result = run_experiment(config, progress=False, echo=None)
    run_segmentation(config, track=True, progress=False, echo=None)
    plain = {k: v for k, v in spec.items() if k not in ("segments", "evaluation", "export")}
    tune(
        load_experiment(
            data={
                **plain,
                "name": "lab_tuning",
                "models": [
                    {"type": "popularity"},
                    {"type": "ease", "search": {"l2": {"low": 10, "high": 500, "log": True}}},
                ],
            }
        ),
        progress=False,
        echo=None,
    )
    run_replay(
        load_experiment(data={**plain, "name": "lab_replay", "models": [{"type": "itemknn"}]}),
        progress=False,
        echo=None,
    )
    curve = {"epsilons": [8], "max_units": {"user": 1000, "event": 100_000}}
    run_privacy_curve(
        load_experiment(
            data={**plain, "name": "lab_curve", "privacy_curve": curve, "models": [{"type": "dp_popularity"}]}
        ),
        progress=False,
        echo=None,
    )
    long = result.metrics
    figures = {"report/ndcg_by_family.png": comparison.plot_metric_by_family(long)}
    comparison.log_figures(result, figures, {"report/msr_table.md": result.leaderboard[["model"]]})
    return {"result": result}


def test_every_artifact_is_declared_and_none_holds_the_user_after_forget(lab, redis_server):
    ran = _run_every_kind(lab["spec"])
    config = load_experiment(data=lab["spec"])
    subject = identify(TARGET, config.data)
    pseudonym = Pseudonymiser(bytes.fromhex(PSEUDONYM_KEY))(TARGET)
    assert subject.tokens == {TARGET, pseudonym}

    files = _store_files(lab["artifacts"])
    undeclared = [
        f"{scope}: {path}" for scope, path, _ in files if artifacts.declaration(path, scope) is None
    ]
    assert undeclared == [], f"artifacts no module declares: {undeclared}"
    # every kind of per-user artifact is among them, so the scan below covers each kind
    logged = {(scope, path) for scope, path, _ in files}
    kinds = {a.pattern: a for a in artifacts.declared() if a.per_user}
    missing = [p for p, a in kinds.items() if not any(a.matches(path, scope) for scope, path in logged)]
    assert missing == [], f"per-user artifact kinds this test does not produce: {missing}"
    # the user is in the store before the erasure (the target's merged spellings included)
    held = {path for _, path, f in files if any(t in _decoded(f) for t in subject.tokens)}
    assert {"data/ingest_report.json", "recommendations.parquet", "segments/labels.parquet"} <= held, held
    report = json.loads(next(f for _, p, f in files if p == "data/ingest_report.json").read_text())
    assert report["ids"]["merged_spellings"]["user"]  # the target written two ways

    res = CliRunner().invoke(app, ["subject", "forget", TARGET, "-e", str(lab["file"])])
    assert res.exit_code == 0, res.output
    store = OnlineStore(OnlineSettings(url=redis_server.url, namespace=NS, timeout_seconds=2.0))
    assert _scan(lab["data"], lab["db"], lab["artifacts"], store, subject.tokens) == []

    # the erasure log explains the re-export from the exported model class's own declaration
    log = [
        json.loads(line) for line in (lab["data"] / "privacy" / "erasure_log.jsonl").read_text().splitlines()
    ]
    model = log[-1]["models"][0]
    champion = ran["result"].extras["export"].champion
    needs = get_model_class(champion.model_type).erasure_needs(champion.params)
    assert model["model_type"] == champion.model_type
    assert (model["item_side_from_all_users"], model["per_user_state"]) == (
        needs.item_side_from_all_users,
        needs.per_user_state,
    )
    assert model["why"] == needs.why()
    assert log[-1]["runs"]["declared_free_but_held"] == []
