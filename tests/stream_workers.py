"""A stream worker killed with SIGKILL in the middle of a batch, for the tests that take over
from it: the worker (consumer ``victim``) holds one batch read but unwritten and unacknowledged
until it is killed, with its whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_HOLDER = """
import sys, time
from pathlib import Path
from personalize.config.online import OnlineConfig
from personalize.online import stream as S
url, marker, batch_size, hold = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cfg = OnlineConfig(batch_size=batch_size, block_ms=50)
seen = []
def hook(batch):
    seen.append(len(batch))
    if len(seen) == hold:  # hold this batch, unwritten and unacknowledged, until killed
        marker.write_text("holding")
        time.sleep(120)
S.consume(S.open_store(cfg, url), "victim", cfg, on_batch=hook)
"""


def kill_worker_holding(url: str, folder: Path, batch_size: int, hold: int) -> float:
    """Start a worker on the Redis at ``url`` reading batches of ``batch_size``; once it holds its
    ``hold``-th batch (the batches before it written and acknowledged), kill its process group
    with SIGKILL. Returns when it started holding (``time.monotonic()``)."""
    marker = Path(folder) / "marker"
    command = [sys.executable, "-c", _HOLDER, url, str(marker), str(batch_size), str(hold)]
    proc = subprocess.Popen(command, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the worker exited before holding a batch"
            assert time.monotonic() < deadline, f"the worker never reached batch {hold}"
            time.sleep(0.02)
        held_since = time.monotonic()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return held_since
