"""Where studies live, so that a killed run resumes and several workers share one study.

=====================================  =====================================================
``tuning.storage``                     backend
=====================================  =====================================================
``sqlite:///path/optuna.db``           Optuna RDB storage in SQLite: one process (default,
                                       ``optuna.db`` beside the MLflow SQLite store)
``journal:path/optuna.log``            JournalStorage with a file backend: several processes
                                       on one machine (file locks, no server)
``postgres:embedded``                  RDB storage on a private PostgreSQL server the lab
                                       starts itself, data in ``data/postgres/`` (or
                                       ``postgres:embedded:path/folder``): several processes
                                       on one machine; the study persists across runs
``postgresql://user@host:5432/db``     RDB storage on a PostgreSQL server: workers on many
                                       machines (driver ``psycopg2``, pinned: a URL without a
                                       driver gets ``+psycopg2``; any other SQLAlchemy URL,
                                       e.g. ``mysql+pymysql://``, passes through)
``memory``                             in-process only: nothing persists, nothing resumes
=====================================  =====================================================

Every persistent backend runs with a heartbeat: a running trial records a heartbeat every
``heartbeat_seconds``; a trial silent for ``grace_seconds`` belongs to a dead worker, is
marked FAIL and re-queued with the same params (``RetryHeartbeatStaleTrialCallback``, the
Optuna 5 name of ``RetryFailedTrialCallback``) up to ``max_retry`` times. The check runs
whenever a worker starts a trial, so the next run (or another worker) picks the trial up.
Optuna's JournalStorage has no heartbeat of its own; :class:`HeartbeatJournalStorage` adds one
(the heartbeat is a trial system attribute written to the journal).

``postgres:embedded`` starts :class:`personalize.processes.postgres.EmbeddedPostgres` on the
folder, or joins the server another process (another worker) already runs there
(:func:`~personalize.processes.postgres.shared_server`); the server stops when the last process
using it exits. It listens on a Unix socket only, so its workers share one machine; workers on
several machines need a real server and a ``postgresql://`` URL.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from personalize.core.errors import ConfigError
from personalize.processes.postgres import with_driver

HEARTBEAT_ATTR = "personalize:heartbeat"
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
EMBEDDED_POSTGRES = "postgres:embedded"
SCHEMA_LOCK_KEY = 0x6F7074756E61  # 'optuna' in ASCII: the PostgreSQL advisory lock of table creation


@dataclass(frozen=True)
class StorageSpec:
    """A parsed storage location: ``kind`` is rdb, journal, embedded-postgres or memory."""

    kind: str
    url: str  # the RDB URL, the journal file path, the embedded server's folder, or 'memory'
    engine_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def display(self) -> str:
        """The location without a password (safe to log)."""
        if self.kind == "embedded-postgres":
            return f"{EMBEDDED_POSTGRES}:{self.url}"
        if self.kind != "rdb":
            return self.url if self.kind == "memory" else f"journal:{self.url}"
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)


def default_storage_url() -> str:
    """``optuna.db`` beside the MLflow SQLite store (so a temporary store keeps its studies too)."""
    from personalize.tracking.store import tracking_uri

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri[len('sqlite:///') :]).parent / 'optuna.db'}"
    from personalize.core.paths import mlruns_dir

    return f"sqlite:///{mlruns_dir() / 'optuna.db'}"


def default_postgres_folder() -> Path:
    """``data/postgres/``: the embedded PostgreSQL server's cluster, log and client list."""
    from personalize.processes.postgres import default_folder

    return default_folder()


def parse_storage(url: str | None) -> StorageSpec:
    """Parse ``tuning.storage`` (see the module docstring); nothing is opened or connected."""
    url = (url or default_storage_url()).strip()
    if url == "memory":
        return StorageSpec("memory", "memory")
    if url.startswith("journal:"):
        path = url[len("journal:") :].removeprefix("//")
        if not path:
            raise ConfigError("tuning.storage 'journal:' needs a file path, e.g. journal:mlruns/optuna.log")
        return StorageSpec("journal", str(Path(path).expanduser().resolve()))
    if url == EMBEDDED_POSTGRES or url.startswith(f"{EMBEDDED_POSTGRES}:"):
        folder = url[len(EMBEDDED_POSTGRES) + 1 :].strip()
        return StorageSpec(
            "embedded-postgres",
            str(Path(folder).expanduser().resolve() if folder else default_postgres_folder()),
            {"pool_pre_ping": True},
        )
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in RDB_SCHEMES:
        raise ConfigError(
            f"tuning.storage {url!r} is not understood; use sqlite:///path.db, journal:path.log, "
            "postgres:embedded, postgresql://user@host/db or memory"
        )
    if scheme == "sqlite":
        # several connections of one process (heartbeat thread) wait for the write lock
        return StorageSpec("rdb", url, {"connect_args": {"timeout": 60}})
    return StorageSpec("rdb", with_driver(url), {"pool_pre_ping": True})


def open_storage(
    url: str | StorageSpec | None,
    heartbeat_seconds: int = 10,
    grace_seconds: int | None = None,
    max_retry: int = 2,
) -> BaseStorage:
    """Open (create) the storage at ``url`` with heartbeat and retry of dead workers' trials."""
    spec = url if isinstance(url, StorageSpec) else parse_storage(url)
    with warnings.catch_warnings():  # heartbeats are 'experimental' in Optuna since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _open(spec, heartbeat_seconds, grace_seconds, max_retry)


def _open(
    spec: StorageSpec, heartbeat_seconds: int, grace_seconds: int | None, max_retry: int
) -> BaseStorage:
    retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    grace = grace_seconds or 3 * heartbeat_seconds
    if spec.kind == "memory":
        return optuna.storages.InMemoryStorage()
    if spec.kind == "journal":
        Path(spec.url).parent.mkdir(parents=True, exist_ok=True)
        return HeartbeatJournalStorage(
            JournalFileBackend(spec.url), heartbeat_seconds, grace, heartbeat_stale_trial_callback=retry
        )
    if spec.kind == "embedded-postgres":
        from personalize.processes.postgres import shared_server

        try:
            server = shared_server(spec.url)
        except (RuntimeError, ImportError) as exc:  # no wheel or driver, or the server did not start
            raise ConfigError(f"tuning.storage {spec.display}: {exc}") from None
        spec = StorageSpec("rdb", server.sqlalchemy_url, spec.engine_kwargs)
    if spec.url.startswith("sqlite:///"):
        Path(spec.url[len("sqlite:///") :]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        with _schema_lock(spec.url):
            return RDBStorage(
                spec.url,
                engine_kwargs=spec.engine_kwargs,
                heartbeat_interval=heartbeat_seconds,
                grace_period=grace,
                heartbeat_stale_trial_callback=retry,
            )
    except ImportError as exc:
        raise ConfigError(
            f"tuning.storage {spec.display}: the database driver is not installed ({exc}); "
            "for PostgreSQL install psycopg2-binary"
        ) from None


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """On PostgreSQL, hold the session advisory lock :data:`SCHEMA_LOCK_KEY` while Optuna creates
    (or checks) its tables. Workers that open an empty database at the same moment otherwise race
    in ``CREATE TYPE`` / ``CREATE TABLE`` (one fails with a UniqueViolation) and may both stamp the
    schema version. Other databases: nothing to do."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    if sqlalchemy.engine.make_url(url).get_backend_name() != "postgresql":
        yield
        return

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY})
    finally:
        engine.dispose()


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """JournalStorage with Optuna's heartbeat protocol: a running trial's heartbeat is the wall
    time in its system attribute ``personalize:heartbeat``; a trial whose heartbeat is older than
    ``grace_seconds`` is stale. Meant for processes on one machine (one clock)."""

    def __init__(
        self,
        backend,
        heartbeat_seconds: int,
        grace_seconds: int,
        heartbeat_stale_trial_callback=None,
    ) -> None:
        super().__init__(backend)
        self._heartbeat_seconds = int(heartbeat_seconds)
        self._grace_seconds = int(grace_seconds)
        self._stale_callback = heartbeat_stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # finished meanwhile
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            if beat is not None and now - float(beat) > self._grace_seconds:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_seconds

    def get_heartbeat_stale_trial_callback(self):
        return self._stale_callback


def worker_name() -> str:
    """Identifies this process in trial attributes (host:pid)."""
    return f"{os.uname().nodename}:{os.getpid()}"
