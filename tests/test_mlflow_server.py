"""A shared MLflow tracking server (``personalize server``: PostgreSQL backend, served artifacts)
used over HTTP: an experiment run and a tuning worker logging to it at the same time, and the
features that write or rewrite artifacts (export to the model registry, erasure) against it.

The module starts one server (its own embedded PostgreSQL and artifact folder in a temporary
directory, a free port) and stops it at the end, checking that no process of it is left.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import requests
import yaml
from typer.testing import CliRunner

from personalize.cli import app
from personalize.core import columns as C
from personalize.core.errors import ConfigError
from personalize.data.privacy import Pseudonymiser
from personalize.privacy.subject import identify
from personalize.recipe import load_experiment, run_experiment
from personalize.tracking.server import TrackingServer
from personalize.tracking.store import Tracker, is_server, run_url, ui_command
from servers import model_server
from test_privacy_subject import (
    MODEL_NAME,
    PSEUDONYM_KEY,
    SUPPRESSION_KEY,
    TARGET,
    _decoded,
    _experiment,
    _raw_files,
)
from test_tuning_postgres import _alive

TRIALS = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One tracking server for the module; afterwards nothing of it (MLflow, uvicorn workers,
    PostgreSQL) may still run."""
    root = tmp_path_factory.mktemp("tracking-server")
    srv = TrackingServer(
        backend=f"postgres:embedded:{root / 'pg'}",
        artifacts=root / "artifacts",
        port=0,
        workers=2,
        log=root / "server.log",
    ).start()
    pids = srv.processes() + (srv.postgres.processes() if srv.postgres else [])
    assert len(pids) >= 3  # mlflow, uvicorn, workers (and PostgreSQL's)
    try:
        yield srv
    finally:
        srv.stop()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(pids):
            time.sleep(0.2)
        assert not _alive(pids), f"left running: {_alive(pids)}"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _pg_rows_holding(srv: TrackingServer, tokens: set[str]) -> list[str]:
    """Every live row of the MLflow database whose text holds a token (``table: token``)."""
    conn = srv.postgres.connect("mlflow")
    found = []
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            for (table,) in cur.fetchall():
                cur.execute(f'SELECT t::text FROM "{table}" t')
                text = "\n".join(r[0] for r in cur.fetchall())
                found += [f"{table}: {t}" for t in tokens if t in text]
    finally:
        conn.close()
    return found


# ------------------------------------------------------------------------------ the server


def test_the_server_answers_keeps_artifacts_on_its_side_and_links_to_itself(server, monkeypatch):
    assert requests.get(f"{server.url}/health", timeout=5).text == "OK"
    assert is_server(server.url) and not is_server("sqlite:///x.db")
    tracker = Tracker("links", server.url)
    with tracker.run("r", "experiment") as run:
        run.log_text("hello", "notes/hello.txt")
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # the server's, not a client path
    assert run.artifact_uri.startswith("mlflow-artifacts:")
    on_disk = [p for p in _files(Path(server.artifacts)) if p.name == "hello.txt"]
    assert len(on_disk) == 1 and on_disk[0].read_text() == "hello"
    assert run.url() == f"{server.url}/#/experiments/{tracker.experiment_id}/runs/{run.run_id}"
    assert run_url("7", None, uri=server.url) == f"{server.url}/#/experiments/7/runs"
    assert ui_command(server.url).startswith(server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    assert run_url("7", "abc") == f"{server.url}/#/experiments/7/runs/abc"
    res = CliRunner().invoke(app, ["ui"])  # no second UI: the server's address
    assert res.exit_code == 0 and f"open {server.url}" in res.output, res.output


def test_a_bad_backend_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="nosuch://x"):
        TrackingServer(backend="nosuch://x", artifacts=tmp_path, port=0).start()
    with pytest.raises(ConfigError, match="postgres:embeddedX"):
        TrackingServer(backend="postgres:embeddedX", artifacts=tmp_path, port=0).start()


def test_a_server_that_cannot_start_says_why_and_leaves_nothing(tmp_path):
    with socket.socket() as taken:  # the port is someone else's
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = TrackingServer(
            f"sqlite:///{tmp_path}/x.db", tmp_path / "art", port=port, log=tmp_path / "s.log"
        )
        try:
            with pytest.raises(RuntimeError, match="exited") as caught:
                srv.start()
        finally:
            srv.stop()  # had it started after all
    assert "address already in use" in str(caught.value).lower()  # the log's end tells why
    assert srv.process is None and not srv.running


# ------------------------------------------------------------- two clients at the same time


def _client_experiment(tmp: Path, name: str, **extra) -> Path:
    spec = {
        "name": name,
        "seeds": [0],
        "data": {"sample_users": 40, "write_processed": False},
        "evaluation": {"bootstrap_resamples": 100},
        "models": [
            {"type": "popularity"},
            {
                "type": "recent_popularity",
                "search": {"half_life_days": {"low": 1, "high": 2000, "log": True}},
            },
        ],
        **extra,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow  # two CLI processes
def test_an_experiment_and_a_tuning_worker_log_to_the_server_at_once(server, tmp_path):
    run_file = _client_experiment(tmp_path, "team_run", tracking={"uri": server.url})  # the config's key
    tune_file = _client_experiment(
        tmp_path,
        "team_tune",
        tuning={"trials": TRIALS, "compare_defaults": False, "heartbeat_seconds": 1, "grace_seconds": 1},
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PERSONALIZE_DATA_DIR": str(tmp_path / "data")}
    env.pop("MLFLOW_TRACKING_URI", None)
    exe = str(Path(sys.executable).with_name("personalize"))
    commands = {
        "run": [exe, "run", str(run_file), "--quiet"],
        "tune": [
            exe, "tune", str(tune_file), "--worker", "--model", "recent_popularity", "--quiet",
            "--storage", f"postgres:embedded:{server._postgres_folder}", "--tracking-uri", server.url,
        ],
    }  # fmt: skip
    procs = {
        k: subprocess.Popen(
            c, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for k, c in commands.items()
    }
    try:
        outputs = {k: p.communicate(timeout=300)[0] for k, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for k, p in procs.items():
        assert p.returncode == 0, f"{k}:\n{outputs[k][-3000:]}"
    assert server.running
    client = mlflow.MlflowClient(server.url)

    run_exp = client.get_experiment_by_name("team_run")
    runs = client.search_runs([run_exp.experiment_id])
    kinds = sorted(r.data.tags.get("personalize.kind") for r in runs)
    assert kinds.count("experiment") == 1 and kinds.count("model") == 2, kinds
    assert all(r.info.status == "FINISHED" for r in runs)
    parent = next(r for r in runs if r.data.tags["personalize.kind"] == "experiment")
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"config.yaml", "leaderboard.md"}
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs)

    tune_exp = client.get_experiment_by_name("team_tune")
    trials = [
        r
        for r in client.search_runs([tune_exp.experiment_id])
        if r.data.tags.get("personalize.kind") == "trial"
    ]
    assert len(trials) == TRIALS, [r.info.run_name for r in trials]
    assert len({r.info.run_name for r in trials}) == TRIALS  # none logged twice
    assert all(r.info.status == "FINISHED" for r in trials)
    # the two clients overlapped in time: each started before the other finished
    run_span = (parent.info.start_time, parent.info.end_time)
    tune_span = (min(r.info.start_time for r in trials), max(r.info.end_time for r in trials))
    assert run_span[0] < tune_span[1] and tune_span[0] < run_span[1], (run_span, tune_span)
    # their files are on the server's side
    folder = Path(server.artifacts) / run_exp.experiment_id / parent.info.run_id / "artifacts"
    assert (folder / "config.yaml").read_text() == Path(
        client.download_artifacts(parent.info.run_id, "config.yaml", str(tmp_path))
    ).read_text()


# -------------------------------------------------------------------- export and erasure


def test_export_and_erasure_rewrite_the_servers_artifacts(server, tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONALIZE_PSEUDONYM_KEY", PSEUDONYM_KEY)
    monkeypatch.setenv("PERSONALIZE_SUPPRESSION_KEY", SUPPRESSION_KEY)
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    raw = _raw_files(tmp_path / "raw")
    spec = _experiment(raw, redis_url="unused")
    del spec["online"]  # no Redis here: the runs, the model registry and the data folder
    spec |= {"name": "shop_on_server", "tracking": {"uri": server.url}}
    exp_file = tmp_path / "shop.yaml"
    exp_file.write_text(yaml.safe_dump(spec))
    config = load_experiment(data=spec)
    subject = identify(TARGET, config.data)
    pseudonym = Pseudonymiser(bytes.fromhex(PSEUDONYM_KEY))(TARGET)

    result = run_experiment(config, progress=False, echo=None)
    exported = result.extras["export"]
    model_uri = f"models:/{MODEL_NAME}@champion"
    answer = mlflow.pyfunc.load_model(model_uri).predict([{"user_id": pseudonym, "k": 3}])
    assert answer[0].model_dump()[C.PERSONALISED]  # known before the erasure

    artifacts = Path(server.artifacts)
    holding = [p for p in _files(artifacts) if any(t in _decoded(p) for t in subject.tokens)]
    assert any("split" in p.parts for p in holding)  # the split tables hold them before
    assert any("models" in p.parts for p in holding)  # and the exported model's state

    res = CliRunner().invoke(app, ["subject", "forget", TARGET, "-e", str(exp_file)])
    assert res.exit_code == 0, res.output
    assert "refit and re-exported" in res.output

    left = [f"{p}: {t}" for p in _files(artifacts) for t in subject.tokens if t in _decoded(p)]
    assert left == [], left
    assert _pg_rows_holding(server, subject.tokens) == []
    client = mlflow.MlflowClient(server.url)
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert str(exported.version) not in {v.version for v in versions}  # deleted on the server
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert int(champion.version) > int(exported.version)
    answer = mlflow.pyfunc.load_model(model_uri).predict([{"user_id": pseudonym, "k": 3}])
    assert not answer[0].model_dump()[C.PERSONALISED]  # unknown now
    # the engineer's path: `mlflow models serve` fetches the champion from the server
    with model_server(model_uri, server.url, tmp_path / "serve.log") as base:
        body = {"inputs": [{"user_id": pseudonym, "k": 3}]}
        response = requests.post(f"{base}/invocations", json=body, timeout=30)
    assert response.status_code == 200, response.text
    served = response.json()["predictions"]
    assert len(served) == 3 and not any(r[C.PERSONALISED] for r in served)
    erasure_log = tmp_path / "data" / "privacy" / "erasure_log.jsonl"
    entry = json.loads(erasure_log.read_text().splitlines()[-1])
    tagged = client.search_runs(
        [client.get_experiment_by_name("shop_on_server").experiment_id],
        f"tags.`privacy.erasure` = '{entry['entry']}'",
    )
    assert len(tagged) == entry["runs"]["runs"] >= 2
