"""``mlflow models serve`` for tests: a free port, readiness polled with a deadline, the whole
process group stopped afterwards (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from personalize.processes.redis import free_port

STARTUP_DEADLINE_S = 120


@contextlib.contextmanager
def model_server(
    model_uri: str, tracking_uri: str, log: Path, workers: int = 1, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Serve ``model_uri`` (``--env-manager local``) on a free loopback port; yields its base URL."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # mlflow execs uvicorn from PATH
    environ = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": bin_dir + os.pathsep + os.environ["PATH"],
        **(env or {}),
    }
    cmd = [
        str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=environ, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {STARTUP_DEADLINE_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield base
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
