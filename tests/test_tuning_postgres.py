"""Optuna studies on the embedded PostgreSQL server: the server itself (start, query, stop that
leaves no process behind, restart on the same data, a crash recovered), its sharing between
processes, the ``postgres:embedded`` storage spec, and two worker processes on one study, one of
them killed with SIGKILL inside a trial (the journal test's worker script and file handshake).

Every test starts and stops its own server in its own temporary folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from personalize.core.errors import ConfigError
from personalize.processes.postgres import (
    MAX_SOCKET_PATH,
    EmbeddedPostgres,
    read_postmaster_pid,
    release_server,
    shared_server,
)
from personalize.tuning.storage import open_storage, parse_storage
from personalize.tuning.studies import counted, is_lost
from test_tuning_workers import TRIALS, _experiment, _start, _wait_for

STUDY = "resume/recent_popularity"


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture
def servers():
    """Servers a test starts; whatever is still running at the end is killed."""
    started: list[EmbeddedPostgres] = []
    yield started
    for server in started:
        server.kill()


def _scalar(server: EmbeddedPostgres, sql: str):
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_server_starts_answers_stops_without_leftovers_and_keeps_its_data(tmp_path, servers):
    folder = tmp_path / "pg"
    server = EmbeddedPostgres(folder).start()
    servers.append(server)
    assert server.owned and server.running
    assert str(folder) in server.uri and server.socket_dir == folder.resolve() / "pgdata"
    assert _scalar(server, "SHOW listen_addresses") == ""  # a Unix socket only, no TCP
    assert _scalar(server, "SELECT current_database()") == "optuna"
    conn = server.connect()
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE kept (x int)")
        cur.execute("INSERT INTO kept VALUES (7)")
    members = server.processes()  # the postmaster, its workers and the open connection's backend
    assert members[0] == server.pid and len(members) >= 4
    server.stop()
    conn.close()
    assert not server.running and _alive(members) == []
    assert read_postmaster_pid(folder / "pgdata") is None  # a clean shutdown

    again = EmbeddedPostgres(folder).start()
    servers.append(again)
    assert again.pid != members[0]
    assert _scalar(again, "SELECT sum(x) FROM kept") == 7  # the second start found the data

    # a crash (SIGKILL of everything) loses no committed row: the next start replays the WAL
    with again.connect() as conn2, conn2.cursor() as cur:
        cur.execute("INSERT INTO kept VALUES (5)")
    conn2.close()
    members = again.processes()
    again.kill()
    assert _alive(members) == []
    assert read_postmaster_pid(folder / "pgdata") is not None  # left behind by the crash
    third = EmbeddedPostgres(folder).start()
    servers.append(third)
    assert _scalar(third, "SELECT sum(x) FROM kept") == 12
    third.stop()


def test_a_long_folder_gets_a_short_private_socket_folder(tmp_path, servers):
    folder = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedPostgres(folder, port=5999)
    assert len(str(folder / "pgdata" / ".s.PGSQL.5999")) > MAX_SOCKET_PATH
    assert server.socket_dir.parent == Path(tempfile.gettempdir())
    assert server.socket_dir.name.startswith("personalize-pg-")
    assert server.socket_dir == EmbeddedPostgres(folder, port=5999).socket_dir  # stable per folder
    servers.append(server.start())
    assert (server.socket_dir / ".s.PGSQL.5999").is_socket()
    assert server.socket_dir.stat().st_mode & 0o777 == 0o700
    assert _scalar(server, "SELECT 1") == 1
    server.stop()
    assert not (server.socket_dir / ".s.PGSQL.5999").exists()  # removed by the clean shutdown
    server.socket_dir.rmdir()


JOIN = r"""
import os, signal, sys
from personalize.processes.postgres import shared_server
server = shared_server(sys.argv[1])
print(server.pid, server.owned, flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_shared_server_is_joined_by_other_processes_and_stopped_by_the_last(tmp_path, servers):
    folder = tmp_path / "pg"
    server = shared_server(folder)
    servers.append(server)
    try:
        script = tmp_path / "join.py"
        script.write_text(JOIN)
        for mode in ("exit", "kill"):  # a client that exits normally, then one killed outright
            done = subprocess.run(
                [sys.executable, str(script), str(folder), mode], capture_output=True, text=True, timeout=60
            )
            assert done.stdout.split() == [str(server.pid), "False"], done.stderr  # joined, not started
            assert server.running  # this process still uses it
        assert shared_server(folder) is server
    finally:
        members = server.processes()
        assert release_server(folder)  # the killed client was dropped: this was the last one
    assert _alive(members) == []
    assert not release_server(folder)  # nothing left to release


def test_postgres_storage_specs(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path / "data"))
    spec = parse_storage("postgres:embedded")
    assert spec.kind == "embedded-postgres" and spec.url == str(tmp_path / "data" / "postgres")
    assert spec.display == f"postgres:embedded:{tmp_path / 'data' / 'postgres'}"
    assert parse_storage("postgres:embedded:other/pg").url == str(Path("other/pg").resolve())
    real = parse_storage("postgresql://tuner:secret@db.example:5432/optuna")
    assert real.kind == "rdb" and real.url.startswith("postgresql+psycopg2://tuner:secret@")
    assert "secret" not in real.display
    assert parse_storage("postgresql+psycopg://u@h/db").url == "postgresql+psycopg://u@h/db"
    with pytest.raises(ConfigError, match="postgres:embedded"):
        parse_storage("postgres:embedded-ish")


def test_embedded_storage_reports_a_server_that_cannot_start(tmp_path):
    folder = tmp_path / "pg"
    (folder / "pgdata").mkdir(parents=True)
    (folder / "pgdata" / "PG_VERSION").write_text("9\n")  # a cluster of another major version
    with pytest.raises(ConfigError, match=r"postgres:embedded:.*did not start"):
        open_storage(f"postgres:embedded:{folder}", heartbeat_seconds=1)
    assert read_postmaster_pid(folder / "pgdata") is None  # nothing was left running


def test_tune_on_embedded_postgres_persists_the_study_across_runs(tmp_path, servers):
    from personalize.recipe import load_experiment
    from personalize.tuning import tune

    folder = tmp_path / "pg"
    experiment = _experiment(tmp_path, f"postgres:embedded:{folder}")
    first = tune(
        load_experiment(experiment, ["tuning.trials=2", "tuning.final=false"]),
        track=False,
        progress=False,
        echo=None,
    )
    assert first.storage == f"postgres:embedded:{folder}"
    kept = [(t.params, t.value) for t in first.study("recent_popularity").study.get_trials()]
    assert len(kept) == 2
    assert release_server(folder)  # stopped between the runs: the data must come from disk
    second = tune(
        load_experiment(experiment, ["tuning.trials=4", "tuning.final=false"]),
        track=False,
        progress=False,
        echo=None,
    )
    outcome = second.study("recent_popularity")
    assert outcome.resumed and outcome.trials_before == 2 and outcome.new_trials == 2
    trials = outcome.study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert [(t.params, t.value) for t in trials[:2]] == kept  # the first run's trials, unchanged
    server = shared_server(folder)
    servers.append(server)
    assert release_server(folder)


def test_workers_opening_an_empty_database_together_do_not_collide(tmp_path, servers):
    folder = tmp_path / "pg"
    server = shared_server(folder)
    servers.append(server)
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def open_one() -> None:
        barrier.wait()
        try:
            open_storage(f"postgres:embedded:{folder}", heartbeat_seconds=1)
        except BaseException as exc:  # collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    conn = server.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM alembic_version")
        assert cur.fetchone()[0] == 1  # the schema was stamped once
    conn.close()
    assert release_server(folder)


def _load(server: EmbeddedPostgres) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=server.sqlalchemy_url).get_trials()


@pytest.mark.slow  # two worker processes: about 12 s
def test_two_workers_on_postgres_complete_the_budget(tmp_path, tracking_store, reap, servers):
    folder = tmp_path / "pg"
    server = shared_server(folder)  # the test holds the server: workers join it
    servers.append(server)
    experiment = _experiment(tmp_path, f"postgres:embedded:{folder}")
    workers = [_start(tmp_path, experiment, "worker", 1, tracking_store) for _ in range(2)]
    reap.extend(workers)
    _wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 2, workers, what="two workers in a trial")
    assert [t.state for t in _load(server)] == [TrialState.RUNNING] * 2
    (tmp_path / "go").write_text("")
    for proc in workers:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    assert server.running  # the workers left; the test is still a client

    trials = _load(server)
    assert {t.state for t in trials} == {TrialState.COMPLETE}  # nothing lost
    # the budget is met; one extra trial at most, when both workers start the last one together
    assert TRIALS <= counted(trials) <= TRIALS + 1
    assert [t.number for t in trials] == list(range(len(trials)))
    names = {f"{os.uname().nodename}:{p.pid}" for p in workers}
    assert {t.user_attrs["worker"] for t in trials} == names  # both did part of the study
    assert not any("failed_trial" in t.system_attrs for t in trials)  # nothing was rerun

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_store)
    experiment_id = client.get_experiment_by_name("resume").experiment_id
    runs = client.search_runs([experiment_id], "tags.`personalize.kind` = 'trial'")
    numbers = sorted(int(r.data.tags["optuna.trial_number"]) for r in runs)
    assert numbers == [t.number for t in trials]  # each trial ran (and was logged) once
    assert release_server(folder)


@pytest.mark.slow  # two worker processes and a heartbeat timeout: about 11 s
def test_a_killed_worker_trial_fails_by_heartbeat_and_the_other_retries_it_once(
    tmp_path, tracking_store, reap, servers
):
    folder = tmp_path / "pg"
    server = shared_server(folder)
    servers.append(server)
    experiment = _experiment(tmp_path, f"postgres:embedded:{folder}")  # heartbeat 1 s, grace 1 s
    # both hold their first trial until the test says go; then one kills itself inside it
    doomed = _start(tmp_path, experiment, "kill", 1, tracking_store)
    survivor = _start(tmp_path, experiment, "worker", 1, tracking_store)
    reap.extend([doomed, survivor])
    _wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 2, [doomed, survivor], what="both in a trial")
    before = {t.user_attrs["worker"]: t for t in _load(server)}
    doomed_name = f"{os.uname().nodename}:{doomed.pid}"
    dead = before[doomed_name]
    assert dead.state == TrialState.RUNNING
    (tmp_path / "go").write_text("")
    assert doomed.wait(timeout=60) == -signal.SIGKILL
    started = time.monotonic()
    out, _ = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, out
    assert time.monotonic() - started < 120

    trials = _load(server)
    assert is_lost(trials[dead.number]) and trials[dead.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1  # retried once
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert retry.user_attrs["worker"] == f"{os.uname().nodename}:{survivor.pid}"
    assert counted(trials) == TRIALS and len(trials) == TRIALS + 1
    assert {t.state for t in trials if t.number != dead.number} == {TrialState.COMPLETE}
    assert release_server(folder)
