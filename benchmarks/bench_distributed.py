"""The two-tower's epoch time in 1 process and in 2 processes (TorchRec DistributedModelParallel).

    .venv/bin/python benchmarks/bench_distributed.py [--epochs 3] [--shardings table_wise ...]
                                                     [--synthetic R] [--batch-sizes 512 4096]
                                                     [--out benchmarks/results]

Data: MovieLens-100K (user_temporal split, the training part); with ``--synthetic R`` also the
synthetic log of ``benchmarks/bench_scale.py`` at R interactions (users R/100, items R/500; built
in a temporary ``PERSONALIZE_DATA_DIR``, nothing written to the repository).

Model: the two-tower's defaults (batch 512, 256 uniform negatives, softmax, ID dropout; each
``--batch-sizes`` value in turn: the global batch, split across the processes) with the
item text from TF-IDF + truncated SVD (``text_source: tfidf``), seed 0, no validation monitor,
``--epochs`` epochs (default 3). Settings per data set:

- ``1p x 1t``: one process, one torch thread (the default fit);
- ``1p x 2t``: one process, two torch threads (what the two cores give one process);
- ``2p x 1t <sharding>``: ``processes: 2`` (torchrun, gloo), one thread each, per sharding type.

The collectives of a step (the sharded tables' all-to-alls, the candidates' all-gather, DDP's
all-reduce) cost about the same whatever the batch, so a larger global batch shows how much of the
2-process step is communication.

Per setting: ``epoch s`` = the median over epochs 2.. of the epoch loop's wall time per epoch (the
2-process epoch includes the per-epoch exchange with the fitting process: the full state written,
read and loaded), ``first epoch s`` (for 2 processes it includes launching torchrun, importing
TorchRec in the workers and sharding), ``fit s`` (the whole fit), ``speed-up`` = the ``1p x 1t``
epoch time / this epoch time, and the final training loss (equal across settings up to float32
summation order). The load average before and after each data set is printed: the machine is
shared, so compare rows from one run.

Output: a Markdown table on stdout and ``distributed.csv`` in ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHARDINGS = ["table_wise", "column_wise", "row_wise", "table_row_wise", "data_parallel"]
BASE = {"text_source": "tfidf", "progress": False}


def movielens():
    """The training part of MovieLens-100K's user_temporal split."""
    from personalize.config import SplitConfig
    from personalize.data.ingest import load_movielens_100k
    from personalize.data.matrix import IdIndex, InteractionData
    from personalize.data.splits import make_split

    d = load_movielens_100k(write_processed=False)
    split = make_split(d.interactions, SplitConfig(), 0, d.users, d.items)
    index = IdIndex.build(split.users, split.items, split.train, split.valid, split.test)
    return InteractionData.build(split.train, index, split.users, split.items), {}


def synthetic(size: int, work: Path):
    """The training part of the synthetic log at ``size`` interactions (bench_scale's settings)."""
    os.environ["PERSONALIZE_DATA_DIR"] = str(work)
    from bench_scale import experiment

    from personalize.data.ingest import ingest
    from personalize.data.synthetic import ensure_generated
    from personalize.recipe.steps import prepare_split

    config = experiment(size, f"sqlite:///{work / 'mlflow.db'}")
    dataset = ingest(ensure_generated(config.data.synthetic).data_config(config.data))
    train = prepare_split(dataset, config, config.seeds[0]).train
    return train, {"user_features": ["age", "gender", "occupation", "region"]}


def settings(shardings: list[str]) -> list[tuple[str, dict]]:
    rows = [("1p x 1t", {"processes": 1, "num_threads": 1}), ("1p x 2t", {"processes": 1, "num_threads": 2})]
    rows += [(f"2p x 1t {s}", {"processes": 2, "num_threads": 1, "sharding": s}) for s in shardings]
    return rows


def measure(label: str, train, params: dict, epochs: int) -> dict:
    from personalize.models import create_model
    from personalize.models.base import EpochReport

    losses: list[float] = []

    def monitor(model, epoch, loss):
        losses.append(loss)
        return EpochReport()

    model = create_model("two_tower", {**BASE, **params, "epochs": epochs}, seed=0)
    t0 = time.perf_counter()
    model.fit(train, monitor)
    fit_s = time.perf_counter() - t0
    per_epoch = np.diff([0.0, *model.epoch_seconds_])
    return {
        "setting": label,
        "epoch_s": float(np.median(per_epoch[1:])) if len(per_epoch) > 1 else float(per_epoch[0]),
        "first_epoch_s": float(per_epoch[0]),
        "fit_s": fit_s,
        "final_loss": losses[-1],
    }


def run(name: str, train, extra: dict, shardings: list[str], epochs: int, batch: int) -> list[dict]:
    shape = f"{len(train.frame)} training rows, {train.n_users} users, {train.n_items} items"
    print(f"{name}: {shape}; batch {batch}", flush=True)
    print(f"  load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    rows = []
    for label, params in settings(shardings):
        params = {**extra, **params, "batch_size": batch}
        row = {
            "data": name,
            "rows": len(train.frame),
            "batch": batch,
            **measure(label, train, params, epochs),
        }
        rows.append(row)
        print(f"  {label}: {row['epoch_s']:.2f} s/epoch", flush=True)
    base = rows[0]["epoch_s"]
    for row in rows:
        row["speed_up"] = base / row["epoch_s"]
    print(f"  load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--shardings", nargs="+", default=SHARDINGS, choices=SHARDINGS)
    parser.add_argument("--synthetic", type=int, default=0, help="also a synthetic log of R interactions")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[512], help="global batch sizes")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    train, extra = movielens()
    rows = []
    for batch in args.batch_sizes:
        rows += run("ml-100k", train, extra, args.shardings, args.epochs, batch)
    if args.synthetic:
        with tempfile.TemporaryDirectory(prefix="bench_distributed_") as work:
            train, extra = synthetic(args.synthetic, Path(work))
            for batch in args.batch_sizes:
                rows += run(f"synthetic {args.synthetic:,}", train, extra, args.shardings, args.epochs, batch)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "distributed.csv", index=False)
    shown = table.assign(
        **{c: table[c].map(lambda v: f"{v:.2f}") for c in ("epoch_s", "first_epoch_s", "fit_s", "speed_up")},
        final_loss=table["final_loss"].map(lambda v: f"{v:.5f}"),
    )
    print(shown.to_markdown(index=False))


if __name__ == "__main__":
    main()
