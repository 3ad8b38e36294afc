"""What logging to a shared tracking server costs against the local SQLite store.

    .venv/bin/python benchmarks/bench_tracking_server.py [--repeats 3] [--experiment PATH]

One ``personalize server`` (``TrackingServer``: the embedded PostgreSQL and an artifact folder in a
temporary directory, a free port) and one temporary SQLite store. The same experiment (default:
MovieLens-100K, popularity, ItemKNN and EASE, every artifact the main job logs: the split, every
test user's top-K, per-user metrics, figures) runs ``--repeats`` times against each, in turn (SQLite,
server, SQLite, server, ...: pairing keeps the ratio meaningful if the machine's speed drifts),
each as a fresh ``personalize run`` process with one thread per numeric library. Printed per store:
the median wall seconds of the whole command, the median of the pairwise ratios server / SQLite,
the runs and artifact files written. ``--out`` writes the table as CSV.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from personalize.tracking.server import TrackingServer

EXPERIMENT = {
    "name": "bench_tracking",
    "seeds": [0],
    "data": {"write_processed": False},
    "models": [{"type": "popularity"}, {"type": "itemknn"}, {"type": "ease"}],
}


def timed_run(experiment: Path, uri: str, cwd: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    exe = str(Path(sys.executable).with_name("personalize"))
    t0 = time.perf_counter()
    done = subprocess.run(
        [exe, "run", str(experiment), "--tracking-uri", uri, "--quiet"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"personalize run failed against {uri}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--experiment", type=Path, default=None, help="Experiment YAML (default: see doc).")
    parser.add_argument("--out", type=Path, default=None, help="Write the table as CSV here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        experiment = args.experiment
        if experiment is None:
            experiment = root / "bench_tracking.yaml"
            experiment.write_text(yaml.safe_dump(EXPERIMENT))
        sqlite = f"sqlite:///{root / 'store' / 'mlflow.db'}"
        (root / "store").mkdir()
        server = TrackingServer(
            f"postgres:embedded:{root / 'pg'}", root / "served", port=0, log=root / "server.log"
        )
        t0 = time.perf_counter()
        server.start()
        start_s = time.perf_counter() - t0
        walls: dict[str, list[float]] = {"sqlite": [], "server": []}
        try:
            timed_run(experiment, sqlite, root)  # warm-up: caches, the store's schema
            timed_run(experiment, server.url, root)
            for k in range(args.repeats):
                walls["sqlite"].append(timed_run(experiment, sqlite, root))
                walls["server"].append(timed_run(experiment, server.url, root))
                last = {name: f"{times[-1]:.1f} s" for name, times in walls.items()}
                print(f"repeat {k + 1}: sqlite {last['sqlite']}, server {last['server']}")
            files = {
                "sqlite": sum(1 for p in (root / "store" / "artifacts").rglob("*") if p.is_file()),
                "server": sum(1 for p in (root / "served").rglob("*") if p.is_file()),
            }
        finally:
            server.stop()
    ratios = [s / q for s, q in zip(walls["server"], walls["sqlite"], strict=True)]
    table = pd.DataFrame(
        [
            {
                "store": "SQLite file (sqlite:///...)",
                "median wall s": round(statistics.median(walls["sqlite"]), 1),
                "ratio to SQLite (median of pairs)": 1.0,
                "artifact files": files["sqlite"],
            },
            {
                "store": "tracking server (http://, PostgreSQL, served artifacts)",
                "median wall s": round(statistics.median(walls["server"]), 1),
                "ratio to SQLite (median of pairs)": round(statistics.median(ratios), 2),
                "artifact files": files["server"],
            },
        ]
    )
    print(f"server start (PostgreSQL initdb and start, mlflow server, migrations): {start_s:.1f} s")
    print(f"{args.repeats + 1} runs per store (the first of each a warm-up, not counted)")
    print(table.to_markdown(index=False))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
