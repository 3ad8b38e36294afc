"""Study storage: the URL forms, heartbeats on the journal backend, and pruning raised from
inside implicit's training loop."""

from __future__ import annotations

import time

import numpy as np
import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from threadpoolctl import threadpool_info

from personalize.config import SplitConfig
from personalize.core.errors import ConfigError
from personalize.data.matrix import IdIndex, InteractionData
from personalize.data.splits import make_split
from personalize.evaluation import make_target
from personalize.evaluation.monitor import ValidationMonitor
from personalize.models import create_model
from personalize.tuning.storage import HEARTBEAT_ATTR, HeartbeatJournalStorage, open_storage, parse_storage
from personalize.tuning.studies import fail_stale, requeue_lost


@pytest.fixture(scope="module")
def contract_data(ml100k_small):
    split = make_split(ml100k_small.interactions, SplitConfig(), 0, ml100k_small.users, ml100k_small.items)
    index = IdIndex.build(split.users, split.items, split.train, split.valid, split.test)
    train = InteractionData.build(split.train, index, split.users, split.items)
    return split, index, train, make_target("valid", split.valid, split.train, index)


def test_storage_urls(tmp_path, tracking_store):
    assert parse_storage("memory").kind == "memory"
    journal = parse_storage(f"journal:{tmp_path}/studies.log")
    assert journal.kind == "journal" and journal.url == str(tmp_path / "studies.log")
    sqlite = parse_storage(f"sqlite:///{tmp_path}/optuna.db")
    assert sqlite.kind == "rdb" and sqlite.engine_kwargs["connect_args"]["timeout"] > 0
    # many machines: a PostgreSQL URL passes through to RDB storage (not connected here)
    pg = parse_storage("postgresql+psycopg2://tuner:secret@db.internal:5432/studies")
    assert pg.kind == "rdb" and pg.url.endswith("@db.internal:5432/studies")
    assert "secret" not in pg.display and "tuner:***@db.internal" in pg.display
    # default: beside the MLflow SQLite store in force
    default = parse_storage(None)
    assert default.url == tracking_store.replace("mlflow.db", "optuna.db")
    for bad in ("redis://localhost", "journal:", "studies.db"):
        with pytest.raises(ConfigError, match=r"tuning\.storage"):
            parse_storage(bad)


def test_sqlite_and_journal_storages_have_heartbeats(tmp_path):
    rdb = open_storage(f"sqlite:///{tmp_path}/o.db", heartbeat_seconds=3, grace_seconds=7)
    assert isinstance(rdb, RDBStorage) and rdb.heartbeat_interval == 3 and rdb.grace_period == 7
    journal = open_storage(f"journal:{tmp_path}/o.log", heartbeat_seconds=2)
    assert isinstance(journal, HeartbeatJournalStorage) and journal.get_heartbeat_interval() == 2


def test_journal_heartbeat_fails_and_requeues_a_dead_workers_trial(tmp_path):
    storage = open_storage(f"journal:{tmp_path}/o.log", heartbeat_seconds=1, grace_seconds=5)
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    done = study.ask()
    done.suggest_float("x", 0, 1)
    study.tell(done, 0.5)
    alive, dead = study.ask(), study.ask()
    params = {"x": dead.suggest_float("x", 0, 1)}
    alive.suggest_float("x", 0, 1)
    storage.record_heartbeat(alive._trial_id)
    storage.set_trial_system_attr(dead._trial_id, HEARTBEAT_ATTR, time.time() - 60)  # silent for a minute
    # another process (a fresh storage object on the same file) sees the dead trial
    other = optuna.load_study(
        study_name="s",
        storage=open_storage(f"journal:{tmp_path}/o.log", heartbeat_seconds=1, grace_seconds=5),
    )
    fail_stale(other)
    trials = other.get_trials()
    assert [t.state for t in trials[:3]] == [TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL]
    retry = trials[3]
    assert retry.state == TrialState.WAITING and retry.params == params
    assert retry.system_attrs["failed_trial"] == dead.number
    assert requeue_lost(other, max_retry=2) == 0  # already re-queued: not twice


def test_an_interrupted_trial_is_requeued_once(tmp_path):
    study = optuna.create_study(storage=open_storage("memory"), direction="maximize")
    trial = study.ask()
    trial.suggest_int("k", 1, 100)
    study.tell(trial, state=TrialState.FAIL)  # what Ctrl-C leaves behind (no 'error' attribute)
    assert requeue_lost(study, max_retry=2) == 1
    assert requeue_lost(study, max_retry=2) == 0
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].params == trial.params


def test_pruning_propagates_out_of_implicits_bpr_loop(contract_data):
    """TrialPruned raised from the epoch callback leaves implicit's compiled BPR loop cleanly:
    training stops at that epoch, thread limits are restored, and the next fit is unaffected."""
    _, _, train, valid = contract_data
    blas_before = [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]

    def prune_at_two(epoch: int, value: float) -> None:
        if epoch == 2:
            raise optuna.TrialPruned(f"epoch {epoch}")

    monitor = ValidationMonitor(valid, patience=None, on_report=prune_at_two)
    model = create_model("bpr", {"factors": 8, "iterations": 10}, seed=0)
    with pytest.raises(optuna.TrialPruned, match="epoch 2"):
        model.fit(train, monitor)
    assert model.epochs_run_ == 2 and [row["epoch"] for row in monitor.history] == [1, 2]
    assert [(i["internal_api"], i["num_threads"]) for i in threadpool_info()] == blas_before
    again = create_model("bpr", {"factors": 8, "iterations": 3}, seed=0).fit(train)
    reference = create_model("bpr", {"factors": 8, "iterations": 3}, seed=0).fit(train)
    assert again.epochs_run_ == 3
    np.testing.assert_allclose(again.score(np.arange(5)), reference.score(np.arange(5)), rtol=1e-6)


def test_pruning_propagates_out_of_als(contract_data):
    _, _, train, valid = contract_data

    def prune(epoch: int, value: float) -> None:
        raise optuna.TrialPruned

    model = create_model("als", {"factors": 8, "iterations": 5}, seed=0)
    with pytest.raises(optuna.TrialPruned):
        model.fit(train, ValidationMonitor(valid, patience=None, on_report=prune))
    assert model.epochs_run_ == 1
