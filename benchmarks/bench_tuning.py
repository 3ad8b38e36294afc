"""Tuning cost and what pruning saves, on MovieLens-100K.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_tuning.py [--trials 20] [--sample-users N]

Prints two tables:

1. the search of every tuned model of ``experiments/ml100k_tune.yaml`` (equal budget, in-memory
   storage, no MLflow, no final comparison): trials, seconds, epochs trained, best validation
   NDCG@10, and the total wall time;
2. for the iterative models, the same seeded study with the configured pruner and without it
   (the peer): epochs trained by each, the share pruning saved, seconds, both best values and the
   95% bootstrap interval (over validation users) of the unpruned study's best.

Threads are pinned to one per library (set before NumPy loads).
"""

from __future__ import annotations

import argparse
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import time  # noqa: E402

import pandas as pd  # noqa: E402

from personalize.core.paths import experiments_dir  # noqa: E402
from personalize.recipe import load_experiment  # noqa: E402
from personalize.tuning import compare_pruning, tune  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=str(experiments_dir() / "ml100k_tune.yaml"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--sample-users", type=int, default=None)
    parser.add_argument("--skip-search", action="store_true", help="only the pruning comparison")
    args = parser.parse_args()
    overrides = [f"tuning.trials={args.trials}", "tuning.storage=memory", "data.write_processed=false"]
    if args.sample_users:
        overrides.append(f"data.sample_users={args.sample_users}")
    config = load_experiment(args.experiment, overrides)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)

    if not args.skip_search:
        t0 = time.perf_counter()
        result = tune(config, search_only=True, track=False, progress=False, echo=None)
        total = time.perf_counter() - t0
        table = result.table[result.table["tuned"]]
        print(f"\n1. Search, {args.trials} trials per model (threads pinned to 1), total {total:.1f} s")
        print(
            table[
                ["model", "complete", "pruned", "failed", "epochs trained", "best valid", "seconds"]
            ].to_markdown(index=False, floatfmt=".4f")
        )

    t0 = time.perf_counter()
    pruning = compare_pruning(config, trials=args.trials)
    seconds = time.perf_counter() - t0
    print(f"\n2. Pruning ({config.tuning.pruner}) versus none, {args.trials} trials, {seconds:.1f} s")
    print(pruning.T.to_markdown(floatfmt=".4f"))
    total_pruned = pruning["epochs (pruned study)"].sum()
    total_unpruned = pruning["epochs (unpruned study)"].sum()
    print(
        f"\nIterative models together: {total_pruned} epochs with pruning, {total_unpruned} without: "
        f"{100 * (1 - total_pruned / total_unpruned):.1f}% saved"
    )


if __name__ == "__main__":
    main()
