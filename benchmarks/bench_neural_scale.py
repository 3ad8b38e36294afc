"""NeuMF and the two-tower at scale: training throughput and peak memory at 1M and 10M events.

    .venv/bin/python benchmarks/bench_neural_scale.py [--sizes 1000000 10000000] [--epochs 1]
                                                      [--models neumf neumf_sparse ...] [--out FOLDER]

The data is ``experiments/synthetic_10m.yaml``'s synthetic log with ``data.synthetic.interactions``
set to R (users R/100, items R/500, user_temporal split, seed 0), built as
``benchmarks/bench_scale.py`` builds it: for each size a fresh interpreter with a temporary
``PERSONALIZE_DATA_DIR`` (nothing is written to the repository) generates, ingests and splits it
once (each step timed), then fits every model on the split's training part for ``--epochs``
epochs without validation (no monitor: nothing is evaluated), one torch thread, seed 0.

Models (``--models``, default all):

- ``neumf``: NeuMF's defaults (dense Adam over every embedding row each step);
- ``neumf_sparse``: the same with ``sparse_embeddings`` (lazy Adam on the embedding tables);
- ``two_tower``: the two-tower's defaults with the item text from TF-IDF + truncated SVD
  (``text_source: tfidf``; the sentence encoder needs minutes for 20k items) and the
  synthetic users' attributes (age, gender, occupation, region);
- ``two_tower_sparse``: the same with ``sparse_embeddings``.

Per model: training examples per epoch (NeuMF: observed pairs x (1 + negatives), the pointwise
examples it computes a loss on; two-tower: training interactions, each the positive of one
row of the in-batch softmax), seconds per epoch (the mean over the epochs of the epoch loop's
wall time), examples per second (examples per epoch / seconds per epoch), ``setup s`` (the rest
of the fit: feature encoding, sampler and network construction, and the two-tower's final user
and item tower outputs), peak RSS of the process during the fit (sampled every 20 ms, psutil;
it includes the data held by earlier stages) and ``+GiB`` (that peak minus the RSS when the fit
began), and the minutes one epoch of 10M examples would take at the measured rate
(1e7 / examples per second / 60). Target: the two-tower's 10M-example epoch under 5 minutes on
2 cores.

Output: a Markdown table on stdout and ``neural_scale.csv`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import MIB, Meter, experiment

DEFAULT_SIZES = (1_000_000, 10_000_000)
TWO_TOWER = {
    "text_source": "tfidf",
    "user_features": ["age", "gender", "occupation", "region"],
}
MODELS: dict[str, tuple[str, dict]] = {
    "neumf": ("neumf", {}),
    "neumf_sparse": ("neumf", {"sparse_embeddings": True}),
    "two_tower": ("two_tower", TWO_TOWER),
    "two_tower_sparse": ("two_tower", {**TWO_TOWER, "sparse_embeddings": True}),
}


def examples_per_epoch(model_type: str, model, train) -> int:
    """NeuMF: observed pairs x (1 + negatives); two-tower: training interactions (rows)."""
    if model_type == "neumf":
        return int(train.matrix.nnz) * (1 + model.config.negatives)
    return len(train.frame)


def worker(size: int, models: list[str], epochs: int) -> dict:
    """Build the data at ``size`` once, then fit each model (module doc)."""
    import numpy as np
    import torch

    from personalize.data.ingest import ingest
    from personalize.data.synthetic import ensure_generated
    from personalize.models import create_model
    from personalize.recipe.steps import prepare_split

    torch.set_num_threads(1)
    work = Path(os.environ["PERSONALIZE_DATA_DIR"])
    config = experiment(size, f"sqlite:///{work / 'mlflow.db'}")
    meter = Meter()
    with meter.stage("generate"):
        log = ensure_generated(config.data.synthetic)
    with meter.stage("ingest"):
        dataset = ingest(log.data_config(config.data))
    with meter.stage("split"):
        prepared = prepare_split(dataset, config, config.seeds[0])
        train = prepared.train
        _ = train.matrix, train.exclusion, train.item_popularity  # shared by every model's fit
    del dataset
    rows = []
    for label in models:
        model_type, params = MODELS[label]
        model = create_model(model_type, {**params, "epochs": epochs, "progress": False}, 0)
        stage = f"fit {label}"
        t0 = time.perf_counter()
        with meter.stage(stage):
            model.fit(train)
        total = time.perf_counter() - t0
        epoch_s = np.diff([0.0, *model.epoch_seconds_])
        examples = examples_per_epoch(model_type, model, train)
        per_epoch = float(epoch_s.mean())
        rows.append(
            {
                "model": label,
                "examples_per_epoch": examples,
                "epochs": len(epoch_s),
                "s_per_epoch": per_epoch,
                "examples_per_s": examples / per_epoch,
                "setup_s": total - float(epoch_s.sum()),
                "peak_mib": meter.rows[stage]["peak_rss"] / MIB,
                "delta_mib": meter.rows[stage]["delta_rss"] / MIB,
                "min_per_10m_examples": 1e7 / (examples / per_epoch) / 60,
            }
        )
        del model
    meter.close()
    data_rows = [
        {"stage": k, "seconds": v["seconds"], "peak_mib": v["peak_rss"] / MIB}
        for k, v in meter.rows.items()
        if not k.startswith("fit ")
    ]
    shape = {
        "train_rows": len(train.frame),
        "train_pairs": int(train.matrix.nnz),
        "users": train.n_users,
        "items": train.n_items,
    }
    return {"size": size, "shape": shape, "data": data_rows, "models": rows, "load": os.getloadavg()}


def spawn(size: int, models: list[str], epochs: int) -> dict:
    """Run :func:`worker` in a fresh interpreter with its own temporary data folder."""
    with tempfile.TemporaryDirectory(prefix=f"neural-scale-{size}-") as tmp:
        env = {**os.environ, "PERSONALIZE_DATA_DIR": tmp, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        env.setdefault("OMP_NUM_THREADS", "1")
        out = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--worker", "--size", str(size), "--json", str(out)]
        command += ["--epochs", str(epochs), "--models", *models]
        proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"worker at {size} failed:\n{proc.stdout[-4000:]}")
        return json.loads(out.read_text())


def _size_label(size: int) -> str:
    return f"{size / 1e6:g}M" if size >= 1_000_000 else f"{size / 1e3:g}k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "bench_neural_scale")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.json.write_text(json.dumps(worker(args.size, args.models, args.epochs)))
        return

    args.out.mkdir(parents=True, exist_ok=True)
    records, data = [], []
    for size in sorted(args.sizes):
        res = spawn(size, args.models, args.epochs)
        load = ", ".join(f"{x:.2f}" for x in res["load"])
        print(f"R={_size_label(size)}: {res['shape']}; load average at the end: {load}", flush=True)
        for row in res["data"]:
            data.append({"size": _size_label(size), **row})
        for row in res["models"]:
            records.append({"size": _size_label(size), **row})
        pd.DataFrame(records).to_csv(args.out / "neural_scale.csv", index=False)  # after every size
    print("\nData (once per size):\n")
    frame = pd.DataFrame(data)
    frame["seconds"] = frame["seconds"].round(1)
    frame["peak GiB"] = (frame.pop("peak_mib") / 1024).round(2)
    print(frame.to_markdown(index=False))
    print("\nTraining (one torch thread, no validation):\n")
    table = pd.DataFrame(records)
    shown = pd.DataFrame(
        {
            "size": table["size"],
            "model": table["model"],
            "examples/epoch": table["examples_per_epoch"].map("{:,}".format),
            "s/epoch": table["s_per_epoch"].round(1),
            "examples/s": table["examples_per_s"].round(0).astype(int).map("{:,}".format),
            "setup s": table["setup_s"].round(1),
            "peak GiB": (table["peak_mib"] / 1024).round(2),
            "+GiB": (table["delta_mib"] / 1024).round(2),
            "min per 10M examples": table["min_per_10m_examples"].round(1),
        }
    )
    print(shown.to_markdown(index=False))
    print(f"\nwrote {args.out / 'neural_scale.csv'}")


if __name__ == "__main__":
    main()
