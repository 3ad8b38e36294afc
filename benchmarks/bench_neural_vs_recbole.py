"""Time to the best validation NDCG@10: our NeuMF and two-tower against RecBole's NeuMF.

Same split, same machine, same run, one torch thread for everyone. Rows:

- ``recbole NeuMF (RecBole defaults)``: RecBole's own training loop (``Trainer.fit``) with all of
  RecBole's defaults (300 epochs, Adam lr 0.001, batch 2048, one uniform negative, early
  stopping after 10 validations without improvement of MRR@10), on our split written as its
  benchmark files (valid file = our validation part). Our NDCG@10 is computed after every
  epoch from its callback; that extra evaluation is excluded from its clock.
- ``recbole NeuMF (our early stopping)``: the same RecBole model through our peer wrapper
  (validation NDCG@10 by our evaluator after every epoch, patience as below).
- ``neumf`` and ``two_tower``: ours, default settings, the same monitor and patience.

Every clock includes the model's own validation passes (RecBole validates every epoch under
its defaults; ours do too). "s to best" is the wall time from the start of training to the
end of the epoch with the best validation NDCG@10; "best NDCG@10" is that value.

    .venv/bin/python benchmarks/bench_neural_vs_recbole.py            # user_temporal, seed 0
    .venv/bin/python benchmarks/bench_neural_vs_recbole.py --seed 1 --split global_temporal
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import torch

from personalize.config import EvaluationConfig
from personalize.core import columns as C
from personalize.data import load_movielens_100k
from personalize.evaluation import Evaluator
from personalize.evaluation.monitor import ValidationMonitor
from personalize.models import create_model
from personalize.models.peers.recbole_adapter import RecBoleRun
from personalize.recipe import load_experiment


def _pairs(prepared, part):
    frame = getattr(prepared.split, part)
    return prepared.index.user_index(frame[C.USER]), prepared.index.item_index(frame[C.ITEM])


def recbole_defaults(prepared, seed: int) -> dict:
    """RecBole's NeuMF with RecBole's defaults and its own loop; our NDCG@10 per epoch."""
    evaluator = Evaluator(EvaluationConfig(ks=[10]))
    curve: list[tuple[int, float, float]] = []  # (epoch, our ndcg, seconds on RecBole's clock)
    excluded = 0.0
    with RecBoleRun(
        "NeuMF",
        prepared.index.n_users,
        prepared.index.n_items,
        _pairs(prepared, "train"),
        _pairs(prepared, "valid"),
        _pairs(prepared, "test"),
        seed=seed,
    ) as run:
        start = time.perf_counter()

        def on_valid(epoch_idx: int, valid_score: float) -> None:
            nonlocal excluded
            t0 = time.perf_counter()
            ndcg = evaluator.evaluate(run, prepared.valid_target).summary["ndcg@10"]
            t1 = time.perf_counter()
            curve.append((epoch_idx + 1, ndcg, t0 - start - excluded))
            excluded += t1 - t0

        run.fit_recbole(on_valid)
        total = time.perf_counter() - start - excluded
    best = max(curve, key=lambda row: row[1])
    return {
        "model": "recbole NeuMF (RecBole defaults)",
        "epochs run": len(curve),
        "best epoch": best[0],
        "best valid NDCG@10": best[1],
        "s to best": best[2],
        "total s": total,
    }


def ours(prepared, model_type: str, label: str, seed: int, patience: int, params: dict | None = None) -> dict:
    monitor = ValidationMonitor(prepared.valid_target, patience=patience)
    times: list[float] = []
    start = time.perf_counter()

    def on_epoch(epoch: int, metrics: dict) -> None:
        times.append(time.perf_counter() - start)

    monitor.on_epoch = on_epoch
    create_model(model_type, params or {}, seed=seed).fit(prepared.train, monitor)
    total = time.perf_counter() - start
    return {
        "model": label,
        "epochs run": len(monitor.history),
        "best epoch": monitor.best_epoch,
        "best valid NDCG@10": monitor.best_value,
        "s to best": times[monitor.best_epoch - 1],
        "total s": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="user_temporal")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patience", type=int, default=5, help="our early stopping (validations)")
    parser.add_argument("--skip-wrapper", action="store_true", help="leave out RecBole NeuMF via our wrapper")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from personalize.recipe import prepare_split

    dataset = load_movielens_100k(write_processed=False)
    config = load_experiment(
        data={"name": "bench", "split": {"name": args.split}, "models": [{"type": "popularity"}]}
    )
    prepared = prepare_split(dataset, config, args.seed)
    from personalize.models.peers.recbole_adapter import recbole

    recbole()  # import once, outside every clock
    from personalize.features.text import dense_item_embeddings

    dense_item_embeddings(prepared.train.items)  # cached text embeddings, outside every clock

    rows = [recbole_defaults(prepared, args.seed)]
    if not args.skip_wrapper:
        rows.append(
            ours(prepared, "recbole_neumf", "recbole NeuMF (our early stopping)", args.seed, args.patience)
        )
    rows.append(ours(prepared, "neumf", "neumf (ours)", args.seed, args.patience))
    rows.append(ours(prepared, "two_tower", "two_tower (ours)", args.seed, args.patience))
    table = pd.DataFrame(rows)
    table["s / epoch"] = table["total s"] / table["epochs run"]
    reference = table.loc[0, "s to best"]
    table["s to best vs RecBole"] = table["s to best"] / reference
    print(
        f"\nML-100K, {args.split} split, seed {args.seed}, 1 torch thread, "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs\n"
    )
    print(table.to_markdown(index=False, floatfmt=".4g"))
    ok = table.iloc[1:]
    ok = ok[ok["model"].str.endswith("(ours)")]
    print("\nours faster to their best than RecBole's NeuMF:", bool((ok["s to best"] < reference).all()))
    np.testing.assert_array_less(-1, table["best valid NDCG@10"])  # sanity: finite values


if __name__ == "__main__":
    main()
