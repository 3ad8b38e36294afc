"""Where runs are stored, and the run hierarchy: the only module (with its package) that
talks to MLflow.

Store: ``sqlite:///<project>/mlruns/mlflow.db`` with artifacts under ``<project>/mlruns/
artifacts`` (MLflow 3 deprecates the file store). ``MLFLOW_TRACKING_URI`` (or ``tracking.uri``)
overrides the store; for a SQLite store, artifacts then live in an ``artifacts`` folder beside the
database file (so a temporary store is entirely temporary). An ``http(s)://`` URI is a tracking
server (``personalize server``, :mod:`personalize.tracking.server`): experiments are created
without an artifact location, so the server puts their artifacts where it serves them from
(``mlflow-artifacts:/<experiment id>``, uploaded and downloaded over HTTP); nothing is written
on the client's disk. The UI is the server's own address.

Hierarchy (the protocol's): a parent run per experiment or tuning session -> one run per model
-> nested runs per seed or per trial. Runs are created with explicit IDs through
:class:`mlflow.MlflowClient` (no global "active run"), so nesting is explicit and several
processes can log to one store.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from personalize.core.metrics import metric_key as core_metric_key
from personalize.core.paths import default_artifact_root, default_tracking_uri, project_root
from personalize.tracking import artifacts

KIND_TAG = "personalize.kind"  # experiment | session | model | seed | trial
PARENT_TAG = "mlflow.parentRunId"
PACKAGES = (
    "personalize",
    "numpy",
    "scipy",
    "pandas",
    "torch",
    "implicit",
    "mlflow",
    "optuna",
    "scikit-learn",
    "recbole",
    "torchrec",
    "opacus",
    "sentence-transformers",
    "faiss-cpu",
)
MAX_PARAM_LENGTH = 6000


def tracking_uri() -> str:
    """The tracking URI in force: ``MLFLOW_TRACKING_URI`` or the project's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def is_server(uri: str | None = None) -> bool:
    """True when ``uri`` (default: the URI in force) names a tracking server (``http(s)://``)."""
    return (uri or tracking_uri()).startswith(("http://", "https://"))


def artifact_root(uri: str | None = None) -> Path:
    """Local artifact folder for a store: beside a SQLite database, else the project's (a
    tracking server keeps its artifacts on its own side: see :func:`is_server`)."""
    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if uri == default_tracking_uri():
            return default_artifact_root()
        return db.parent / "artifacts"
    return default_artifact_root()


VERBOSE_ENV = "PERSONALIZE_VERBOSE"


def quiet_mlflow() -> None:
    """MLflow's artifact progress bars, INFO logs and database-migration chatter off, unless
    ``PERSONALIZE_VERBOSE=1`` (``personalize --verbose ...``). Warnings and errors still show."""
    if os.environ.get(VERBOSE_ENV) == "1":
        return
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # a server's run links: we print ours
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _client(uri: str):
    import mlflow

    quiet_mlflow()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def ui_command(uri: str | None = None, port: int = 5000) -> str:
    """The shell command that opens the MLflow UI on this store (a tracking server: its address)."""
    uri = uri or tracking_uri()
    if is_server(uri):
        return f"{uri.rstrip('/')}  (the tracking server's UI)"
    root = project_root()
    shown = uri.replace(f"sqlite:///{root}/", "sqlite:///") if uri.startswith(f"sqlite:///{root}/") else uri
    return f".venv/bin/mlflow ui --backend-store-uri {shown} --port {port}"


def run_url(experiment_id: str, run_id: str | None = None, port: int = 5000, uri: str | None = None) -> str:
    """Link into the UI: the runs table of an experiment, or one run (on a tracking server's
    address when ``uri`` is one, else on ``mlflow ui``'s local port)."""
    uri = uri or tracking_uri()
    host = uri.rstrip("/") if is_server(uri) else f"http://127.0.0.1:{port}"
    base = f"{host}/#/experiments/{experiment_id}"
    return f"{base}/runs/{run_id}" if run_id else f"{base}/runs"


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_state() -> dict[str, str]:
    """Commit of the project checkout and whether it has uncommitted changes."""
    root = project_root()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit or "unknown", "git_dirty": str(bool(dirty)).lower()}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> {'a.b': 'value'} with values as strings (MLflow params)."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:MAX_PARAM_LENGTH]
    return out


def metric_key(name: str) -> str:
    """An MLflow metric key: ``ndcg@10`` -> ``ndcg_at_10``; other characters MLflow refuses
    become ``_``."""
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", core_metric_key(name))


@dataclass
class RunHandle:
    """One MLflow run: log params, metrics (optionally per step), tables, figures and files. Every
    artifact path is looked up in the declarations of :mod:`personalize.tracking.artifacts`
    (per-user or free of per-user data); an undeclared one is logged with a warning."""

    client: Any
    run_id: str
    experiment_id: str
    name: str

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(k, v) for k, v in flat.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(metric_key(k), float(v), now, step or 0)
            for k, v in metrics.items()
            if v is not None and pd.notna(v)
        ]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_table(self, frame: pd.DataFrame, path: str) -> None:
        """Write ``frame`` as .parquet / .csv / .md (by the suffix of ``path``) and log it."""
        artifacts.check(path)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(path).name
            if local.suffix == ".parquet":
                frame.to_parquet(local, index=False)
            elif local.suffix == ".csv":
                frame.to_csv(local, index=False)
            elif local.suffix == ".md":
                local.write_text(frame.to_markdown(index=False))
            else:
                raise ValueError(f"unsupported table format: {path}")
            self.client.log_artifact(self.run_id, str(local), _folder(path))

    def log_figure(self, figure, path: str) -> None:
        artifacts.check(path)
        self.client.log_figure(self.run_id, figure, path)

    def log_text(self, text: str, path: str) -> None:
        artifacts.check(path)
        self.client.log_text(self.run_id, text, path)

    def log_dict(self, data: dict, path: str) -> None:
        artifacts.check(path)
        self.client.log_dict(self.run_id, data, path)

    def log_file(self, local: str | Path, folder: str | None = None) -> None:
        artifacts.check(f"{folder}/{Path(local).name}" if folder else Path(local).name)
        self.client.log_artifact(self.run_id, str(local), folder)

    def log_folder(self, local: str | Path, folder: str | None = None) -> None:
        root = Path(local)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            artifacts.check(f"{folder}/{rel}" if folder else rel)
        self.client.log_artifacts(self.run_id, str(local), folder)

    @property
    def artifact_uri(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri

    def url(self, port: int = 5000) -> str:
        return run_url(self.experiment_id, self.run_id, port, self.client.tracking_uri)


def _folder(path: str) -> str | None:
    parent = str(Path(path).parent)
    return None if parent in ("", ".") else parent


class Tracker:
    """Creates runs in one MLflow experiment of one store."""

    def __init__(self, experiment: str, uri: str | None = None):
        self.uri = uri or tracking_uri()
        self.client = _client(self.uri)
        self.experiment_name = experiment
        self.experiment_id = self._experiment_id(experiment)

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        location = None  # a tracking server chooses (and serves) the location
        if not is_server(self.uri):
            slug = re.sub(r"[^0-9A-Za-z_.-]+", "-", name).strip("-") or "experiment"
            folder = artifact_root(self.uri) / slug
            folder.mkdir(parents=True, exist_ok=True)
            location = folder.as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # created concurrently by another process
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def start(
        self,
        name: str,
        kind: str,
        parent: RunHandle | None = None,
        tags: dict[str, Any] | None = None,
    ) -> RunHandle:
        """Create a RUNNING run (nested under ``parent``); end it with :meth:`end`."""
        all_tags = {KIND_TAG: kind, **{k: str(v) for k, v in (tags or {}).items()}}  # a server wants text
        if parent is not None:
            all_tags[PARENT_TAG] = parent.run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        return RunHandle(self.client, run.info.run_id, self.experiment_id, name)

    def end(self, handle: RunHandle, status: str = "FINISHED") -> None:
        self.client.set_terminated(handle.run_id, status)

    @contextmanager
    def run(
        self,
        name: str,
        kind: str,
        parent: RunHandle | None = None,
        tags: dict[str, Any] | None = None,
    ) -> Iterator[RunHandle]:
        """A run that ends FINISHED, or FAILED (KILLED on Ctrl-C) if the block raises."""
        handle = self.start(name, kind, parent, tags)
        try:
            yield handle
        except KeyboardInterrupt:
            self.end(handle, "KILLED")
            raise
        except BaseException:
            self.end(handle, "FAILED")
            raise
        self.end(handle, "FINISHED")

    def ui_command(self, port: int = 5000) -> str:
        return ui_command(self.uri, port)
