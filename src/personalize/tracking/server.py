"""A shared MLflow tracking server for a team: ``personalize server`` (or :class:`TrackingServer`).

It runs ``mlflow server`` with

- a **backend store** (runs, params, metrics, the model registry): ``postgres:embedded`` (the
  default: database ``mlflow`` of the project's embedded PostgreSQL 18 in ``data/postgres/``,
  :mod:`personalize.processes.postgres`, the server Optuna's ``postgres:embedded`` studies use
  too; ``postgres:embedded:PATH`` for another folder), a real server
  (``postgresql://user:password@host/db``; a URL without a driver gets psycopg2) or a SQLite file
  (``sqlite:///path.db``, one host);
- **served artifacts** (``--serve-artifacts``): clients upload, download, list and delete
  artifacts over HTTP (``mlflow-artifacts:/...``) and the server keeps them in ``artifacts``
  (a folder, default ``mlruns/served-artifacts/``, or an object-store URI such as ``s3://bucket``).
  A client needs no shared disk: only the URL.

Clients point at it with ``tracking.uri: http://HOST:PORT`` in the experiment, ``--tracking-uri``
or ``MLFLOW_TRACKING_URI``; everything the lab logs, exports (registered models) and rewrites
(erasure) goes through MLflow's client and artifact API, so it works the same against the server
(:mod:`personalize.tracking.store`).

Process handling: the server runs in a session (process group) of its own, with MLflow's job
runner (GenAI scoring jobs: eight extra processes) switched off; :meth:`TrackingServer.start`
polls ``/health`` until it answers, with a deadline, and raises with the end of the server's log
if the process exits or the deadline passes; :meth:`TrackingServer.stop` sends SIGTERM to the
group, waits, then SIGKILLs whatever is left, and releases the embedded PostgreSQL (which stops
when no other process uses it). By default it listens on 127.0.0.1; for other hosts use
``host="0.0.0.0"`` with ``allowed_hosts`` (MLflow's security middleware refuses other Host headers).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import psutil

from personalize.core.errors import ConfigError
from personalize.core.paths import mlruns_dir
from personalize.processes.postgres import (
    EmbeddedPostgres,
    default_folder,
    release_server,
    shared_server,
    with_driver,
)
from personalize.processes.redis import free_port

EMBEDDED = "postgres:embedded"
DATABASE = "mlflow"
DEFAULT_PORT = 5000


def default_artifacts() -> Path:
    """``mlruns/served-artifacts/``: where a server started here keeps the artifacts it serves."""
    return mlruns_dir() / "served-artifacts"


def _mlflow_bin() -> Path:
    return Path(sys.executable).with_name("mlflow")


class TrackingServer:
    """``mlflow server`` with a database backend and served artifacts (module doc).

    ``port=0`` takes a free port. ``log``: a file for the server's output (default: inherit this
    process's stdout and stderr). Use as a context manager, or :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        backend: str = EMBEDDED,
        artifacts: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        workers: int = 2,
        allowed_hosts: str | None = None,
        log: str | Path | None = None,
        start_timeout: float = 180.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self.backend = backend
        if artifacts is None:
            artifacts = default_artifacts()
        self.artifacts = str(artifacts) if "://" in str(artifacts) else str(Path(artifacts).resolve())
        self.host = host
        self.port = int(port) or free_port("127.0.0.1" if host in ("0.0.0.0", "::") else host)
        self.workers = int(workers)
        self.allowed_hosts = allowed_hosts
        self.log = None if log is None else Path(log)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen | None = None
        self.postgres: EmbeddedPostgres | None = None
        self._postgres_folder: Path | None = None
        self._log_file: IO[bytes] | None = None

    # -- locations ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The tracking URI clients use (``tracking.uri``)."""
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{shown}:{self.port}"

    def backend_display(self) -> str:
        """The backend store without a password (safe to print and log)."""
        if self.backend.startswith(EMBEDDED):
            folder = self._postgres_folder or _embedded_folder(self.backend)
            return f"{EMBEDDED}:{folder} (database {DATABASE})"
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.backend).render_as_string(hide_password=True)
        except Exception:  # not a URL SQLAlchemy reads: shown as given
            return self.backend

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> TrackingServer:
        """Start the backend (embedded PostgreSQL if asked), then ``mlflow server``; return once
        ``/health`` answers. RuntimeError with the end of the log if it does not."""
        if self.running:
            return self
        store = self._backend_store()
        if "://" not in self.artifacts:
            Path(self.artifacts).mkdir(parents=True, exist_ok=True)
        command = [
            str(_mlflow_bin()), "server",
            "--backend-store-uri", store,
            "--serve-artifacts", "--artifacts-destination", self.artifacts,
            "--host", self.host, "--port", str(self.port), "--workers", str(self.workers),
        ]  # fmt: skip
        if self.allowed_hosts:
            command += ["--allowed-hosts", self.allowed_hosts]
        env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PATH": str(_mlflow_bin().parent) + os.pathsep + os.environ.get("PATH", ""),  # uvicorn
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        out = self._log_file if self._log_file is not None else None
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                env=env,
                start_new_session=True,
            )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _backend_store(self) -> str:
        backend = self.backend
        if backend.startswith(EMBEDDED):
            self._postgres_folder = _embedded_folder(backend)
            self.postgres = shared_server(self._postgres_folder, database=DATABASE)
            return with_driver(self.postgres.uri_for(DATABASE))
        if backend.startswith(("postgresql://", "postgresql+", "postgres://", "sqlite:///", "mysql")):
            return with_driver(backend)
        raise ConfigError(
            f"server backend {backend!r}: expected postgres:embedded[:PATH], postgresql://user@host/db "
            "or sqlite:///path.db"
        )

    def _wait_ready(self) -> None:
        import requests

        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"mlflow server exited with {code} before answering:\n{self._log_tail()}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not answer at {self.url} within {self.start_timeout:.0f} s:\n"
                    f"{self._log_tail()}"
                )
            time.sleep(0.3)

    def _log_tail(self) -> str:
        if self.log is None or not self.log.exists():
            return "(output on this process's terminal)"
        return self.log.read_text(errors="replace")[-3000:]

    def processes(self) -> list[int]:
        """PIDs of the server and every process it started (uvicorn and its workers)."""
        if self.process is None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root.pid] + [p.pid for p in root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after ``stop_timeout``; then release the
        embedded PostgreSQL. Safe to call twice."""
        if self.process is not None:
            pids = self.processes()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=self.stop_timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=self.stop_timeout)
            for pid in pids:  # a worker that left the group
                with contextlib.suppress(psutil.NoSuchProcess):
                    psutil.Process(pid).kill()
            _, alive = psutil.wait_procs(
                [p for p in (_process(pid) for pid in pids) if p is not None], timeout=self.stop_timeout
            )
            if alive:
                raise RuntimeError(f"mlflow server processes survived SIGKILL: {[p.pid for p in alive]}")
            self.process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.postgres is not None and self._postgres_folder is not None:
            release_server(self._postgres_folder)
            self.postgres = None

    def wait(self) -> int:
        """Block until the server exits (``personalize server`` in the foreground)."""
        return -1 if self.process is None else self.process.wait()

    def __enter__(self) -> TrackingServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _embedded_folder(backend: str) -> Path:
    rest = backend[len(EMBEDDED) :]
    if rest and not rest.startswith(":"):
        raise ConfigError(f"server backend {backend!r}: expected postgres:embedded or postgres:embedded:PATH")
    return Path(rest[1:]).expanduser().resolve() if rest[1:] else default_folder()
