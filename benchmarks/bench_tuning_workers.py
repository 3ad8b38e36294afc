"""Tuning with 1 and with 2 worker processes on one study in the embedded PostgreSQL server.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_tuning_workers.py [--model ease]
        [--trials 40] [--workers 1 2] [--sample-users N] [--experiment PATH]

One embedded server (data in a temporary folder) holds a fresh study per case (same seed, same
search space, same trial budget, study prefix ``bench-<k>w``). Each case launches ``k`` OS
processes that each run ``tune(..., search_only=True, track=False)`` with
``tuning.storage=postgres:embedded:<folder>`` (what ``personalize tune --worker`` does), one thread
per numeric library, and waits for all to exit. The default model, EASE on MovieLens-100K, costs
the same in every trial (one item-item inverse whatever ``l2`` is, about half a second on one
core) and has no pruning, so both cases do the same work. Printed per case:

* ``wall s``: from launching the workers to the last one exiting (start-up included: imports,
  data loading and the split, paid by every worker);
* ``search s``: from the first trial's start to the last trial's end (times in the storage);
* ``trials``: trials that count towards the budget (at most one more than the budget when two
  workers start the last trial together), and how many each worker ran;
* ``worker CPU s`` and ``cores used`` (CPU seconds over wall seconds): how much of the machine
  the workers got; well under ``k`` means other processes held the cores;
* ``speed-up``: the 1-worker time over this case's time, for both clocks;
* the best validation value (the two cases sample differently once trials overlap).

The machine's load average before and after is printed too: other work on the machine slows
the 2-worker case most (it needs two free cores).
"""

from __future__ import annotations

import argparse
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from personalize.core.paths import experiments_dir  # noqa: E402
from personalize.processes.postgres import release_server, shared_server  # noqa: E402
from personalize.tuning.studies import counted  # noqa: E402

WORKER = """
import sys
from personalize.tuning import tune
tune(sys.argv[1], sys.argv[3:], models=[sys.argv[2]], search_only=True, track=False, progress=False,
     echo=None)
"""


def run_case(experiment: str, model: str, overrides: list[str], workers: int) -> tuple[float, float]:
    """Launch ``workers`` worker processes on the study; return the wall seconds until all exit
    and the CPU seconds (user + system) the workers used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, experiment, model, *overrides],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(workers)
    ]
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"a worker failed ({proc.returncode}):\n{out[-4000:]}")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=str(experiments_dir() / "ml100k_tune.yaml"))
    parser.add_argument("--model", default="ease", help="model label of the experiment to tune")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sample-users", type=int, default=None)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    server = shared_server(folder)  # held by this process: the workers join it
    print(f"Embedded PostgreSQL in {folder} ({server.uri}); load average {os.getloadavg()}")
    rows = []
    try:
        for k in args.workers:
            prefix = f"bench-{k}w"
            overrides = [
                f"tuning.storage=postgres:embedded:{folder}",
                f"tuning.trials={args.trials}",
                f"tuning.study_prefix={prefix}",
                "data.write_processed=false",
                "seeds=[0]",
            ]
            if args.sample_users:
                overrides.append(f"data.sample_users={args.sample_users}")
            wall, cpu = run_case(args.experiment, args.model, overrides, k)
            study = optuna.load_study(study_name=f"{prefix}/{args.model}", storage=server.sqlalchemy_url)
            trials = study.get_trials()
            finished = [t for t in trials if t.datetime_complete is not None]
            span = (
                max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)
            ).total_seconds()
            per_worker = sorted(Counter(t.user_attrs.get("worker") for t in trials).values(), reverse=True)
            rows.append(
                {
                    "workers": k,
                    "trials": counted(trials),
                    "per worker": "/".join(map(str, per_worker)),
                    "wall s": wall,
                    "worker CPU s": cpu,
                    "cores used": cpu / wall,
                    "search s": span,
                    "trials per min (search)": 60 * len(finished) / span,
                    "best valid": study.best_value,
                }
            )
            print(f"  {k} worker(s): {wall:.1f} s wall, {span:.1f} s search; load {os.getloadavg()}")
    finally:
        release_server(folder)
        shutil.rmtree(folder, ignore_errors=True)
    table = pd.DataFrame(rows)
    base = table.iloc[0]
    table["speed-up (wall)"] = base["wall s"] / table["wall s"]
    table["speed-up (search)"] = base["search s"] / table["search s"]
    print(
        f"\n{args.model}, {args.trials} trials, embedded PostgreSQL, {os.cpu_count()} CPUs, "
        f"load average after {os.getloadavg()}"
    )
    print(table.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
