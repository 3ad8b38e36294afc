"""Per-sample gradient cost of DP-SGD on MovieLens-100K: Opacus' ghost clipping against per-sample
gradients formed by hooks, each case in a fresh subprocess (so peak memory is its own).

Cases:

- ``neumf-ghost`` / ``neumf-hooks``: event-level DP-NeuMF with 64-d embeddings (factors 64, MLP
  embeddings 64, MLP 64-32-16, 4 negatives per sample) on all 100,000 interactions; 20 optimiser
  steps of Poisson batches with expected size 1024 at epsilon 8. The hooks mode forms, per
  step, a (batch x rows x 64) per-sample gradient for each of the four embedding tables; ghost
  clipping forms none.
- ``multvae-ghost`` / ``multvae-hooks``: user-level DP-Mult-VAE with its defaults (600-200-600,
  batch 500) on all 943 users under the public bound N = 1,000: one epoch (round(1000 / 500) = 2
  steps) at epsilon 8, the epoch's own accounting included, calibration not.

Reported per case: wall seconds of the steps (after building the model and calibrating the
noise), seconds per step, the process' peak RSS (``resource.getrusage``, MiB) and its growth over
the RSS before the first step (NeuMF: the steps' own peak; Mult-VAE: measured before ``fit``,
so the model's weights and optimiser state are included). Threads are
pinned to one.

    .venv/bin/python benchmarks/bench_dp_sgd.py           # ~1 minute; prints a Markdown table
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

CASES = ("neumf-ghost", "neumf-hooks", "multvae-ghost", "multvae-hooks")
STEPS = 20


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_case(case: str) -> dict:
    import numpy as np
    import torch

    from personalize.data import load_movielens_100k
    from personalize.data.matrix import IdIndex, InteractionData
    from personalize.models import create_model
    from personalize.models.neural.training import epoch_rng, seeded

    torch.set_num_threads(1)
    d = load_movielens_100k(write_processed=False)
    index = IdIndex.build(d.users, d.items, d.interactions)
    train = InteractionData.build(d.interactions, index, d.users, d.items)
    model_name, mode = case.split("-")
    common = {"epsilon": 8.0, "grad_sample_mode": mode, "progress": False}
    if model_name == "neumf":
        params = {
            **common,
            "max_units": 100_000,
            "factors": 64,
            "mlp_embedding": 64,
            "batch_size": 1024,
            "epochs": 1,
        }
        model = create_model("dp_neumf", params, seed=0)  # driven step by step below
        with seeded(0):
            model._build(train)
            private = model._private
            rng = epoch_rng(0, 1)
            from personalize.models.privacy.dp_neumf import sample_negatives

            negatives = sample_negatives(model._pos_items, train.n_items, model.config.negatives, rng)
            items_all = np.concatenate([model._pos_items[:, None], negatives], axis=1)
            k1 = 1 + model.config.negatives
            before = rss_mib()
            t0 = time.perf_counter()
            sizes = []
            for _ in range(STEPS):
                positions = np.flatnonzero(rng.random(private.n_units) < private.sample_rate)
                sizes.append(len(positions))
                users = torch.from_numpy(np.repeat(model._pos_users[positions, None], k1, axis=1))
                items = torch.from_numpy(items_all[positions])
                private.step(lambda u=users, i=items: model.per_sample_losses(u, i))
            seconds = time.perf_counter() - t0
            private.close()
        steps = STEPS
        note = f"20 steps, mean batch {np.mean(sizes):.0f}"
    else:
        model = create_model("dp_multvae", {**common, "epochs": 1, "max_units": 1000}, seed=0)
        before = rss_mib()
        # one epoch through the model's own loop; the calibration happens in _build, before the epoch
        model.fit(train)
        seconds = model.epoch_seconds_[0]
        steps = model.dp_.steps
        note = f"1 epoch = {steps} steps, expected batch 500"
    peak = rss_mib()
    return {
        "case": case,
        "seconds": seconds,
        "seconds_per_step": seconds / steps,
        "peak_rss_mib": peak,
        "rss_growth_mib": peak - before,
        "note": note,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES, help="run one case in this process (prints JSON)")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return
    rows = []
    for case in CASES:
        done = subprocess.run(
            [sys.executable, __file__, "--case", case], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    lines = [
        "",
        f"{platform.processor() or platform.machine()}, 1 torch thread, "
        "each case in a fresh process. Peak RSS: the process' maximum resident set (data and model "
        "included); growth: over the RSS before the steps (Mult-VAE: before fit).",
        "",
        "| case | what | wall s | s / step | peak RSS MiB | RSS growth MiB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['note']} | {r['seconds']:.2f} | {r['seconds_per_step']:.3f} | "
            f"{r['peak_rss_mib']:.0f} | {r['rss_growth_mib']:.0f} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
