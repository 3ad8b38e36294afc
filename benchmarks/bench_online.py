"""Online fold-in over REST: how soon an event shows in a served answer, and what the online
lookup costs per request.

Exports one model (default EASE, l2=250) refit on all of MovieLens-100K, with the online client
(``export.online.enabled``), into a temporary MLflow store; starts an embedded Redis
(:class:`personalize.processes.redis.EmbeddedRedis`) and ``mlflow models serve --workers 2`` on
loopback, then measures:

(a) **event -> visible**, two ways, each under a background stream of random events at
    ``--rate`` events/s and with its own probe users:

    - **through the stream**: the background events and each probe's event are published to the
      Redis stream (:func:`personalize.online.stream.publish`, the XADD of ``personalize stream
      publish``) and one stream worker (:func:`personalize.online.stream.consume` with
      ``block_ms = --block-ms``, in its own process, consumer ``bench-worker``) validates and
      applies them; each event carries the current UTC time as its timestamp (a future or
      implausible one would be dead-lettered). A probe takes a known user's current top item,
      publishes "user consumed it" and polls the REST answer (a new connection per poll, so either
      server worker may answer) until the item is gone: the time from the start of the publish to
      the first answer without it. Afterwards every probe event must have been applied, the
      dead-letter stream must be empty and the worker must have applied every event published
      (its counts are printed); otherwise the benchmark fails;
    - **applied directly, no stream**: the same with the events written straight into the
      online store (:meth:`OnlineStore.apply`, what the worker calls per event), no worker: the
      part of the delay that is not the stream's.

    The probes start after ``--load-seconds`` of background events alone; p50 / p99 over
    ``--probes`` probes each;
(b) **request latency** of one user, top-10, one client, ``--requests`` requests over distinct
    known users, the same model served twice: with the online store
    (``PERSONALIZE_ONLINE_URL`` set; cache misses: the answer cache is emptied before each run)
    and without it, each with a new connection per request and with keep-alive
    (a ``requests.Session``); plus the online server answering from its cache (the same
    requests again).

Keep-alive with two workers: each keep-alive request stalls ~40 ms (the delayed-ACK timeout)
while a new connection per request, or keep-alive against ``--workers 1``, answers in a few ms.
With several workers uvicorn serves from a listening socket handed to worker processes, and
the connections accepted there do not get TCP_NODELAY (with one worker they do, see
``bench_serving.py``); the response goes out in two writes (headers, body), Nagle holds the
second until the first is acknowledged, and the client, on an established connection, delays
that ACK. A new connection is still in quick-ACK mode, so it does not stall. Compare
``--workers 1``.

    .venv/bin/python benchmarks/bench_online.py                   # ~1.5 minutes (2 cores)
    .venv/bin/python benchmarks/bench_online.py --model als --params '{"factors": 64}'
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # pinned: timings comparable across runs and machines
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import requests  # noqa: E402


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    if len(ms) == 0:
        return {"n": 0, "p50 ms": np.nan, "p99 ms": np.nan, "max ms": np.nan}
    return {
        "n": len(ms),
        "p50 ms": float(np.percentile(ms, 50)),
        "p99 ms": float(np.percentile(ms, 99)),
        "max ms": float(ms.max()),
    }


def start_server(
    model_uri: str, uri: str, log: Path, online_url: str | None, namespace: str, workers: int = 2
):
    """``mlflow models serve --workers N`` on a free loopback port; (process, base URL)."""
    from personalize.processes.redis import free_port

    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # mlflow execs uvicorn from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    env.pop("PERSONALIZE_ONLINE_URL", None)
    if online_url is not None:
        env.update({"PERSONALIZE_ONLINE_URL": online_url, "PERSONALIZE_ONLINE_NAMESPACE": namespace})
        # the answer cache's serving secret (without one the cache is off), fresh for each run
        env.setdefault("PERSONALIZE_CACHE_SECRET", secrets.token_hex(32))
    cmd = [
        str(Path(bin_dir) / "mlflow"),
        *("models", "serve", "-m", model_uri, "--env-manager", "local"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        try:
            if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                return proc, base
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"server not ready after 180 s:\n{log.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen, first: int = signal.SIGTERM) -> None:
    """Signal the child's whole process group (``first``, then SIGKILL after 20 s) and reap it."""
    try:
        os.killpg(proc.pid, first)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


# One stream worker, in its own process and process group: SIGINT (or SIGTERM) ends ``consume``,
# which returns its counts; they are printed as the last line.
_WORKER = """
import json, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.default_int_handler)
from personalize.config.online import OnlineConfig
from personalize.online.stream import consume, open_store
url, namespace, block_ms, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
config = OnlineConfig(namespace=namespace, block_ms=block_ms)
result = consume(open_store(config, url), name, config)
print(json.dumps(result.to_dict()), flush=True)
"""


def start_worker(url: str, namespace: str, block_ms: int, name: str, log: Path) -> subprocess.Popen:
    """One stream worker (``consume``) as a child process in a new process group."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-c", _WORKER, url, namespace, str(block_ms), name],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(proc: subprocess.Popen, log: Path) -> dict:
    """Interrupt the worker (SIGINT: ``consume`` returns), reap its group; its counts."""
    if proc.poll() is not None:
        raise RuntimeError(f"the stream worker exited early ({proc.returncode}):\n{log.read_text()[-2000:]}")
    stop_server(proc, signal.SIGINT)
    lines = log.read_text().strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(f"the stream worker printed no counts:\n{log.read_text()[-2000:]}") from None


def ask(base: str, user: int, session: requests.Session | None = None) -> list[dict]:
    """One request of ``user``'s top-10 (a new connection unless ``session``)."""
    body = {"inputs": [{"user_id": user, "k": 10}]}
    if session is None:
        close = {"Connection": "close"}
        response = requests.post(f"{base}/invocations", json=body, headers=close, timeout=30)
    else:
        response = session.post(f"{base}/invocations", json=body, timeout=30)
    response.raise_for_status()
    return response.json()["predictions"]


def utc_now() -> str:
    """The current instant in ISO 8601 UTC (what the worker accepts: not in the future)."""
    return pd.Timestamp.now(tz="UTC").isoformat()


class Sender:
    """Delivers events to the online state: published to the stream (``stream``: the worker
    applies them) or applied directly with :meth:`OnlineStore.apply`. Event IDs are
    ``{prefix}{name}``, so the two ways never share an ID (a shared one would be skipped)."""

    def __init__(self, store, stream: bool, prefix: str, config=None):
        self.store, self.stream, self.prefix, self.config = store, stream, prefix, config
        self.sent = 0  # events sent, by every thread using this sender
        self._lock = threading.Lock()

    def send(self, users: list[int], items: list[int], names: list[str]) -> None:
        from personalize.online.stream import publish

        stamp = utc_now()
        ids = [f"{self.prefix}{name}" for name in names]
        if self.stream:
            frame = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": stamp, "event_id": ids})
            publish(self.store, frame, config=self.config)
        else:
            for user, item, eid in zip(users, items, ids, strict=True):
                self.store.apply(
                    {"user_id": user, "item_id": item, "event": None, "timestamp": stamp, "event_id": eid}
                )
        with self._lock:
            self.sent += len(users)


class Writer(threading.Thread):
    """Sends random (user, item) events at ``rate`` per second until stopped: applied one by one,
    or published in chunks of the events due every 1/20 s (as ``publish(rate=...)`` paces)."""

    def __init__(self, sender: Sender, users: np.ndarray, items: np.ndarray, rate: float, seed: int = 0):
        super().__init__(daemon=True)
        self.sender, self.users, self.items, self.rate = sender, users, items, rate
        self.rng = np.random.default_rng(seed)
        self.done = threading.Event()
        self.sent = 0
        self.seconds = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        t0 = time.perf_counter()
        tick = 0.05 if self.sender.stream else None
        try:
            while not self.done.is_set():
                elapsed = time.perf_counter() - t0
                due = int(elapsed * self.rate) + 1 - self.sent  # event k is due at k / rate seconds
                if due > 0:
                    users = [int(u) for u in self.rng.choice(self.users, size=due)]
                    items = [int(i) for i in self.rng.choice(self.items, size=due)]
                    self.sender.send(users, items, [f"bg-{self.sent + j}" for j in range(due)])
                    self.sent += due
                wake = self.sent / self.rate  # the next event's time; published: not before the next tick
                if tick is not None:
                    wake = max(wake, (np.floor(elapsed / tick) + 1) * tick)
                wait = t0 + wake - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
        except BaseException as exc:  # surfaced by the caller after join
            self.error = exc
        self.seconds = time.perf_counter() - t0


def freshness(
    base: str, sender: Sender, probe_users: list[int], timeout_s: float, on_miss=None, seed: int = 0
) -> tuple[list[float], int]:
    """Seconds from an event's send (publish or apply) to the first answer without its item, per
    probe; and the number of probes that did not see it within ``timeout_s`` (``on_miss(event_id)``
    is called for each, e.g. to fail on a dead-lettered event). Probes start 0-50 ms (uniform)
    after the previous one ends, so they meet the background's 50 ms publishing cycle and the
    worker's batches at random phases."""
    lags, missed = [], 0
    rng = np.random.default_rng(seed)
    for n, user in enumerate(probe_users):
        time.sleep(rng.uniform(0.0, 0.05))
        item = ask(base, user)[0]["item_id"]
        t0 = time.perf_counter()
        sender.send([user], [item], [f"probe-{n}"])
        while True:
            rows = ask(base, user)
            if item not in [r["item_id"] for r in rows] and rows[0]["fresh"]:
                lags.append(time.perf_counter() - t0)
                break
            if time.perf_counter() - t0 > timeout_s:
                missed += 1
                if on_miss is not None:
                    on_miss(f"{sender.prefix}probe-{n}")
                break
    return lags, missed


def dead_letter_report(store) -> str:
    from personalize.online.stream import dead_letters

    dead = dead_letters(store, count=5)
    return "; ".join(f"{f.get('event_id')}: {f.get('reason')}" for _, f in dead)


def check_applied(store, event_ids: list[str]) -> None:
    """RuntimeError unless every event ID was applied and the dead-letter stream is empty."""
    missing = [eid for eid in event_ids if not store.client.exists(store.applied_key(eid))]
    n_dead = store.client.xlen(store.dead)
    if missing or n_dead:
        raise RuntimeError(
            f"{len(missing)} of {len(event_ids)} probe events not applied (first: {missing[:5]}); "
            f"{n_dead} dead-lettered entries (first: {dead_letter_report(store) or 'none'})"
        )


def wait_applied(store, event_id: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not store.client.exists(store.applied_key(event_id)):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"event {event_id} not applied within {timeout_s} s; dead letters: "
                f"{dead_letter_report(store) or 'none'}"
            )
        time.sleep(0.01)


def latency(base: str, users: list[int], keep_alive: bool) -> tuple[list[float], float]:
    """Per-request seconds over ``users`` (one client) and the share of fresh answers."""
    session = requests.Session() if keep_alive else None
    out, fresh = [], 0
    try:
        for user in users[:20]:  # warm-up
            ask(base, user, session)
        for user in users:
            t0 = time.perf_counter()
            rows = ask(base, user, session)
            out.append(time.perf_counter() - t0)
            fresh += bool(rows and rows[0]["fresh"])
    finally:
        if session is not None:
            session.close()
    return out, fresh / max(1, len(users))


def clear_cache(store) -> None:
    keys = list(store.client.scan_iter(f"{store.ns}:cache:*", count=1000))
    for i in range(0, len(keys), 1000):
        store.client.delete(*keys[i : i + 1000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ease", help="Model type to export (default: ease).")
    parser.add_argument("--params", default='{"l2": 250}', help="Its params as JSON.")
    parser.add_argument("--rate", type=float, default=500.0, help="Background events per second.")
    parser.add_argument("--probes", type=int, default=50, help="Event -> visible probes (per way).")
    parser.add_argument("--requests", type=int, default=400, help="Requests per latency run.")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of the server.")
    parser.add_argument("--block-ms", type=int, default=5, help="The stream worker's XREADGROUP BLOCK (ms).")
    parser.add_argument(
        "--load-seconds", type=float, default=2.0, help="Background events alone before the first probe (s)."
    )
    parser.add_argument("--visible-timeout", type=float, default=5.0, help="Give up on a probe after (s).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(args, Path(tmp))


def visible_row(label: str, lags: list[float], writer: Writer) -> dict:
    rate = writer.sent / max(writer.seconds, 1e-9)
    return {
        "measure": f"{label} (background {rate:.0f} events/s)",
        **percentiles(lags),
        "fresh share": np.nan,
    }


def run(args: argparse.Namespace, tmp: Path) -> None:
    from personalize.config.online import OnlineConfig
    from personalize.config.serving import ExportConfig, ServedOnlineConfig
    from personalize.data.ingest import load_movielens_100k
    from personalize.online.stream import open_store
    from personalize.processes.redis import EmbeddedRedis
    from personalize.serving import Candidate, export_champion

    t0 = time.perf_counter()
    dataset = load_movielens_100k(write_processed=False)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    result = export_champion(
        [Candidate(args.model, args.model, json.loads(args.params), 0.0)],
        dataset=dataset,
        config=ExportConfig(registered_model="bench-online", online=ServedOnlineConfig(enabled=True)),
        experiment="bench-online",
        tracking_uri=uri,
        progress=False,
        echo=None,
    )
    model = result.model
    known = model.index_.users[model.user_history_ > 0].to_numpy()
    items = model.index_.items.to_numpy()
    rng = np.random.default_rng(0)
    print(f"export: {time.perf_counter() - t0:.1f} s ({args.model}, {len(known)} users, {len(items)} items)")
    if 2 * args.probes > len(known):
        raise SystemExit(f"--probes {args.probes}: at most {len(known) // 2} (two sets of distinct users)")

    redis = EmbeddedRedis(tmp / "redis").start()
    namespace = "bench"
    stream_config = OnlineConfig(namespace=namespace, block_ms=args.block_ms)
    store = open_store(stream_config, redis.url)
    rows, notes = [], []
    children: list[subprocess.Popen] = []
    try:
        # (a) event -> visible, under a background stream of events
        logged = result.logged_model_uri
        server, base = start_server(logged, uri, tmp / "online.log", redis.url, namespace, args.workers)
        children.append(server)
        for user in known[:20]:
            ask(base, int(user))  # both workers loaded
        probe_sets = rng.choice(known, size=(2, args.probes), replace=False).astype(int).tolist()

        # through the stream: published, one worker applies
        worker_log = tmp / "worker.log"
        worker = start_worker(redis.url, namespace, args.block_ms, "bench-worker", worker_log)
        children.append(worker)
        sender = Sender(store, True, "stream-", stream_config)
        sender.send([int(known[0])], [int(items[0])], ["warm-up"])  # worker up, group made, code warm
        wait_applied(store, "stream-warm-up", 120.0)

        def fail_if_lost(event_id: str) -> None:
            if not store.client.exists(store.applied_key(event_id)) and store.client.xlen(store.dead):
                raise RuntimeError(f"{event_id} was dead-lettered: {dead_letter_report(store)}")

        writer = Writer(sender, known, items, args.rate)
        writer.start()
        try:
            time.sleep(args.load_seconds)  # steady state under load before probing
            lags, missed = freshness(base, sender, probe_sets[0], args.visible_timeout, fail_if_lost)
        finally:
            writer.done.set()
            writer.join()
        if writer.error is not None:
            raise RuntimeError(f"background publisher failed: {writer.error!r}") from writer.error
        sender.send([int(known[0])], [int(items[1])], ["last"])  # the worker drained everything before
        wait_applied(store, "stream-last", 60.0)
        check_applied(store, [f"stream-probe-{n}" for n in range(len(probe_sets[0]))])
        counts = stop_worker(worker, worker_log)
        children.remove(worker)
        if counts["applied"] != sender.sent or counts["dead_lettered"] or counts["duplicates"]:
            raise RuntimeError(f"published {sender.sent} events, the worker: {counts}")
        rows.append(
            visible_row("event published -> visible in a REST answer (stream, 1 worker)", lags, writer)
        )
        notes.append(
            f"stream worker (block_ms {args.block_ms}): applied {counts['applied']} of {sender.sent} "
            f"published, dead-lettered {counts['dead_lettered']}, duplicates {counts['duplicates']}, "
            f"{counts['batches']} batches (mean {counts['applied'] / max(1, counts['batches']):.1f} events)"
        )
        if missed:
            notes.append(f"stream: {missed} probes did not see their event within {args.visible_timeout} s")

        # applied directly, no stream (no worker)
        sender = Sender(store, False, "direct-")
        writer = Writer(sender, known, items, args.rate, seed=1)
        writer.start()
        try:
            time.sleep(args.load_seconds)  # steady state under load before probing
            lags, missed = freshness(base, sender, probe_sets[1], args.visible_timeout)
        finally:
            writer.done.set()
            writer.join()
        if writer.error is not None:
            raise RuntimeError(f"background writer failed: {writer.error!r}") from writer.error
        rows.append(
            visible_row("event applied directly -> visible in a REST answer, no stream", lags, writer)
        )
        if missed:
            notes.append(f"direct: {missed} probes did not see their event within {args.visible_timeout} s")

        # (b) latency with the online lookup (cache misses, then hits)
        users = [int(u) for u in rng.choice(known, size=min(args.requests, len(known)), replace=False)]
        for keep_alive in (False, True):
            mode = "keep-alive" if keep_alive else "new connection"
            clear_cache(store)
            seconds, share = latency(base, users, keep_alive)
            rows.append({"measure": f"REST, online lookup, cache miss, {mode}", **percentiles(seconds),
                         "fresh share": share})  # fmt: skip
            seconds, share = latency(base, users, keep_alive)
            rows.append({"measure": f"REST, online lookup, cache hit, {mode}", **percentiles(seconds),
                         "fresh share": share})  # fmt: skip
        stop_server(server)
        children.remove(server)

        # (b) the same model without a store
        server, base = start_server(logged, uri, tmp / "offline.log", None, namespace, args.workers)
        children.append(server)
        for keep_alive in (False, True):
            mode = "keep-alive" if keep_alive else "new connection"
            seconds, share = latency(base, users, keep_alive)
            rows.append({"measure": f"REST, no online store, {mode}", **percentiles(seconds),
                         "fresh share": share})  # fmt: skip
    finally:
        for child in children:
            stop_server(child)
        redis.stop()

    print(
        f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; model {args.model} {args.params}; "
        f"mlflow models serve --workers {args.workers} on loopback; embedded Redis\n"
    )
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".2f"))
    for note in notes:
        print(f"\nNote: {note}")


if __name__ == "__main__":
    main()
