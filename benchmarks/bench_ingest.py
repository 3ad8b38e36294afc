"""Ingestion time and peak memory: the validated path against bare reads of the same files.

    .venv/bin/python benchmarks/bench_ingest.py [--repeats 5] [--rows 1000000]

Datasets: MovieLens-100K (the embedded files), the multi-source sample (`personalize
sample-events`: 100k purchases, 167k views, a CRM and a catalogue), and ``--rows`` interactions
drawn from ML-100K's users and items (seeded, a CSV with epoch seconds). For each, in the same run:

- ``ingest``: :func:`personalize.data.ingest` (read in chunks, parse, validate, reconcile IDs,
  check references, de-duplicate, resolve conflicts, quarantine, fingerprint);
- peer ``pandas.read_csv``: the interaction files read by pandas' C parser, nothing checked;
- peer ``pyarrow.csv``: the same files read by Arrow's multithreaded CSV reader, nothing checked.

Times are medians over ``--repeats`` runs; peak memory is the peak of Python allocations
(tracemalloc, which sees pandas/NumPy buffers but not Arrow's pool) during one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from personalize.config.data import DataConfig, InteractionSource
from personalize.data import ingest
from personalize.data.movielens import movielens_100k_config
from personalize.data.samples import write_events_sample


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_mib(fn) -> float:
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def _synthetic(folder: Path, rows: int, seed: int = 0) -> DataConfig:
    """``rows`` interactions of ML-100K's users and items at random times (epoch seconds)."""
    rng = np.random.default_rng(seed)
    path = folder / f"synthetic_{rows}.csv"
    frame = pd.DataFrame(
        {
            "user_id": rng.integers(1, 944, size=rows),
            "item_id": rng.integers(1, 1683, size=rows),
            "rating": rng.integers(1, 6, size=rows),
            "timestamp": rng.integers(874_724_710, 893_286_638, size=rows),
        }
    )
    frame.to_csv(path, index=False)
    return DataConfig(
        source="files",
        name="synthetic",
        interactions=InteractionSource(path=path),
        rating_range=(1, 5),
        write_processed=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    import pyarrow.csv as pacsv

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sample = write_events_sample(tmp / "events")
        from personalize.recipe import load_experiment

        events = load_experiment("experiments/ml100k_events.yaml").data.relocated(sample.folder)
        cases = {
            "ml-100k": movielens_100k_config(DataConfig(write_processed=False)),
            "multi-source sample": events.model_copy(update={"write_processed": False}),
            f"synthetic {args.rows:,} rows": _synthetic(tmp, args.rows),
        }
        rows = []
        for name, config in cases.items():
            files = [s.path for s in config.sources]
            seps = ["\t" if s.resolved_format() in ("tsv", "recbole") else "," for s in config.sources]
            tables = ingest(config).report.tables
            n = sum(rep.input_rows for key, rep in tables.items() if key.startswith("interactions"))
            ours = _median_seconds(lambda c=config: ingest(c), args.repeats)
            pairs = list(zip(files, seps, strict=True))
            pd_read = _median_seconds(
                lambda pairs=pairs: [pd.read_csv(f, sep=s, dtype=str) for f, s in pairs], args.repeats
            )
            pa_read = _median_seconds(
                lambda pairs=pairs: [
                    pacsv.read_csv(f, parse_options=pacsv.ParseOptions(delimiter=s)) for f, s in pairs
                ],
                args.repeats,
            )
            rows.append(
                {
                    "data": name,
                    "interaction rows": f"{n:,}",
                    "ingest s": round(ours, 3),
                    "ingest rows/s": f"{n / ours:,.0f}",
                    "ingest peak MiB": round(_peak_mib(lambda c=config: ingest(c)), 1),
                    "pandas.read_csv s": round(pd_read, 3),
                    "pyarrow.csv s": round(pa_read, 3),
                }
            )
            print(pd.DataFrame(rows[-1:]).to_markdown(index=False), flush=True)
    print()
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
