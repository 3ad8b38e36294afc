"""Persistence across processes: a tuning process killed with SIGKILL inside a trial resumes
without losing a completed trial and retries the interrupted one; two OS processes share a study.

The worker script patches one model's fit with a handshake on files: at a chosen fit it writes
``ready-<pid>`` and waits for a file the test creates, then (kill mode) sends itself SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from personalize.recipe import load_experiment
from personalize.tuning import tune
from personalize.tuning.studies import counted, is_lost

WORKER = r"""
import os, signal, sys, time
from pathlib import Path
from personalize.models.baselines.recent_popularity import RecentPopularity

experiment, folder, mode, at = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
original = RecentPopularity._fit
calls = 0

def _fit(self, data, monitor):
    global calls
    calls += 1
    if mode != "plain" and calls == at:
        (folder / f"ready-{os.getpid()}").write_text("")
        deadline = time.monotonic() + 120
        while not (folder / "go").exists():  # the file the test creates
            if time.monotonic() > deadline:
                raise TimeoutError("no go file")
            time.sleep(0.05)
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
    return original(self, data, monitor)

RecentPopularity._fit = _fit
from personalize.tuning import tune
tune(experiment, progress=False, search_only=(mode == "worker"))
"""

TRIALS = 5


def _experiment(tmp: Path, storage: str) -> Path:
    data = {
        "name": "resume",
        "seeds": [0],
        "data": {"sample_users": 40, "write_processed": False},
        "evaluation": {"bootstrap_resamples": 100},
        "tracking": {"log_split": False, "log_recommendations": False},
        "tuning": {
            "trials": TRIALS,
            "storage": storage,
            "heartbeat_seconds": 1,
            "grace_seconds": 1,
            "compare_defaults": False,
        },
        "models": [
            {"type": "popularity"},
            {
                "type": "recent_popularity",
                "search": {"half_life_days": {"low": 1, "high": 2000, "log": True}},
            },
        ],
    }
    path = tmp / "resume.yaml"
    path.write_text(json.dumps(data))
    return path


def _start(tmp: Path, experiment: Path, mode: str, at: int, uri: str) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    script = tmp / "worker.py"
    script.write_text(WORKER)
    return subprocess.Popen(
        [sys.executable, str(script), str(experiment), str(tmp), mode, str(at)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_for(predicate, proc_list, seconds: float = 180, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        for proc in proc_list:
            if proc.poll() is not None and proc.returncode != 0:
                raise AssertionError(
                    f"worker exited with {proc.returncode} waiting for {what}:\n{proc.stdout.read()}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_killed_run_resumes_and_retries_the_interrupted_trial(tmp_path, tracking_store, reap):
    experiment = _experiment(tmp_path, f"sqlite:///{tmp_path}/optuna.db")
    # the 3rd fit is trial 2: trials 0 and 1 are complete when the process dies inside it
    proc = _start(tmp_path, experiment, "kill", 3, tracking_store)
    reap.append(proc)
    _wait_for(lambda: list(tmp_path.glob("ready-*")), [proc], what="the third trial")
    study = optuna.load_study(
        study_name="resume/recent_popularity", storage=f"sqlite:///{tmp_path}/optuna.db"
    )
    before = study.get_trials()
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING]
    (tmp_path / "go").write_text("")
    assert proc.wait(timeout=60) == -signal.SIGKILL
    (tmp_path / "go").unlink()

    resumed = _start(tmp_path, experiment, "plain", 0, tracking_store)
    reap.append(resumed)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out

    trials = optuna.load_study(
        study_name="resume/recent_popularity", storage=f"sqlite:///{tmp_path}/optuna.db"
    ).get_trials()
    # no completed trial is lost (nor rerun)
    for old in before[:2]:
        now = trials[old.number]
        assert now.state == TrialState.COMPLETE and now.value == old.value and now.params == old.params
        assert now.datetime_complete == old.datetime_complete
    # the interrupted trial failed (heartbeat) and was retried with the same params
    assert is_lost(trials[2])
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 2]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == before[2].params
    assert counted(trials) == TRIALS and len(trials) == TRIALS + 1

    # the resumed study drew exactly what an uninterrupted one draws, trial for trial
    clean = tune(
        load_experiment(experiment, ["tuning.storage=memory", "tuning.final=false"]),
        track=False,
        progress=False,
        echo=None,
        keep_per_user=True,
    ).study("recent_popularity")
    resumed_values = [t.value for t in trials if not is_lost(t)]
    clean_values = [clean.per_user[n].mean() for n in sorted(clean.per_user)]
    assert resumed_values == pytest.approx(clean_values, abs=1e-12)

    client = mlflow.MlflowClient(tracking_uri=tracking_store)
    experiment_id = client.get_experiment_by_name("resume").experiment_id
    sessions = client.search_runs([experiment_id], "tags.`personalize.kind` = 'session'")
    assert len(sessions) == 1 and sessions[0].info.status == "FINISHED"  # one session, resumed
    runs = client.search_runs([experiment_id], "tags.`personalize.kind` = 'trial'")
    by_number = {}
    for run in runs:
        by_number.setdefault(int(run.data.tags["optuna.trial_number"]), []).append(run)
    assert sorted(by_number) == list(range(TRIALS + 1))
    dead = by_number[2][0]
    assert dead.info.status == "FAILED" and "no heartbeat" in dead.data.tags["error"]
    assert {r.info.status for n, rs in by_number.items() if n != 2 for r in rs} == {"FINISHED"}


def test_two_processes_share_one_study(tmp_path, tracking_store, reap):
    storage = f"journal:{tmp_path}/optuna.log"
    experiment = _experiment(tmp_path, storage)
    # both workers hold their first trial until both are running: each does part of the study
    workers = [_start(tmp_path, experiment, "worker", 1, tracking_store) for _ in range(2)]
    reap.extend(workers)
    _wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 2, workers, what="two workers in a trial")
    (tmp_path / "go").write_text("")
    for proc in workers:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out

    from personalize.tuning.storage import open_storage

    study = optuna.load_study(study_name="resume/recent_popularity", storage=open_storage(storage))
    trials = study.get_trials()
    assert TRIALS <= counted(trials) <= TRIALS + 1  # at most one extra: a race between the two
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    workers_seen = {t.user_attrs["worker"] for t in trials}
    assert workers_seen == {f"{os.uname().nodename}:{p.pid}" for p in workers}

    client = mlflow.MlflowClient(tracking_uri=tracking_store)
    experiment_id = client.get_experiment_by_name("resume").experiment_id
    sessions = client.search_runs([experiment_id], "tags.`personalize.kind` = 'session'")
    studies = client.search_runs([experiment_id], "tags.`personalize.kind` = 'model'")
    assert len(sessions) == 1 and len(studies) == 1  # both workers log into the same runs
    runs = client.search_runs([experiment_id], "tags.`personalize.kind` = 'trial'")
    assert len(runs) == len(trials)
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {studies[0].info.run_id}
    assert {r.data.tags["worker"] for r in runs} == workers_seen
