"""The lab at scale: time and peak memory of every stage at R = 100k, 1M and 10M interactions.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 100000 1000000 10000000] [--out FOLDER]
                                               [--no-e2e] [--no-stages]

The experiment is ``experiments/synthetic_10m.yaml`` (popularity, ItemKNN, ALS on a synthetic
log; split user_temporal; one seed) with ``data.synthetic.interactions`` set to R (users R/100,
items R/500 by the generator's defaults). For each size, two fresh processes:

- **stages**: the recipe's steps one after another, each timed (wall seconds) and its memory
  sampled (RSS of the process every 20 ms, psutil): ``generate`` (the synthetic files),
  ``ingest`` (:func:`personalize.data.ingest.ingest`), ``audit`` (the data hygiene audit the
  recipe runs), ``split`` (:func:`personalize.recipe.steps.prepare_split`), per model ``fit
  <model>`` and ``evaluate <model>`` (:func:`personalize.recipe.steps.fit_and_evaluate`, with
  every :meth:`Evaluator.evaluate` call - validation while fitting, test after - counted as
  evaluation and the rest as fitting: the fit on train, the validation monitor's bookkeeping,
  the refit on train + validation), and ``log`` (the recipe's MLflow logging of those outcomes
  into a temporary store). ``peak RSS`` is the largest RSS seen during the stage (what the
  process holds, earlier stages' data included); ``+RSS`` is that peak minus the RSS when the
  stage started (what the stage itself needed at its peak).
- **end to end**: :func:`personalize.recipe.run_experiment` as ``personalize run`` calls it
  (generation into an empty data folder, then everything, logging into a temporary MLflow
  store); its peak is the process's ``ru_maxrss``.

Every data folder and MLflow store is temporary (``PERSONALIZE_DATA_DIR``,
``MLFLOW_TRACKING_URI``); nothing is written to the repository.

Output: a Markdown table (one row per stage, one column pair per size), the exponent of each
stage (least squares of log seconds on log R, over the sizes measured), a log-log figure in the
house style (``scale.png``) and the measurements as CSV (``scale.csv``) in ``--out``.
Targets (2 cores): end to end at 10M under 10 minutes and 8 GB peak; data stages near-linear in R.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "synthetic_10m.yaml"
DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
SAMPLE_SECONDS = 0.02
MIB = 2**20


# ------------------------------------------------------------------------------ measuring


class Meter:
    """Wall time and sampled peak RSS per named stage of this process."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self._lock = threading.Lock()
        self._stack: list[tuple[str, int]] = []  # (label, RSS when it was entered), innermost last
        self.rows: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        return self._proc.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._record(self._rss())

    def _record(self, rss: int) -> None:
        with self._lock:
            if self._stack:
                label, start = self._stack[-1]
                row = self.rows[label]
                row["peak_rss"] = max(row["peak_rss"], rss)
                row["delta_rss"] = max(row["delta_rss"], rss - start)

    def enter(self, label: str) -> float:
        """Start (or resume) counting ``label`` (nested: the outer stage pauses its memory)."""
        rss = self._rss()
        with self._lock:
            self._stack.append((label, rss))
            self.rows.setdefault(label, {"seconds": 0.0, "peak_rss": rss, "delta_rss": 0})
        return time.perf_counter()

    def leave(self, label: str, t0: float) -> None:
        self._record(self._rss())
        with self._lock:
            self.rows[label]["seconds"] += time.perf_counter() - t0
            self._stack.pop()

    def stage(self, label: str):
        meter = self

        class _Stage:
            def __enter__(self):
                self.token = meter.enter(label)

            def __exit__(self, *exc):
                meter.leave(label, self.token)

        return _Stage()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def experiment(size: int, uri: str):
    """``experiments/synthetic_10m.yaml`` at ``size`` interactions, logging to ``uri``."""
    from personalize.recipe.loading import load_experiment

    return load_experiment(
        EXPERIMENT,
        [
            f"data.synthetic.interactions={size}",
            f"name=synthetic_scale_{size}",
            f"data.name=synthetic-{size}",
            f"tracking.uri={uri}",
        ],
    )


def stages_worker(size: int) -> dict:
    """Every stage of the recipe at ``size`` interactions in this process (module doc)."""
    from personalize.data.hygiene import audit_dataset
    from personalize.data.ingest import ingest
    from personalize.data.synthetic import ensure_generated
    from personalize.evaluation import evaluator as E
    from personalize.evaluation.leaderboard import ModelOutcome, leaderboard, long_table
    from personalize.models.registry import get_model_class
    from personalize.recipe.result import ExperimentResult
    from personalize.recipe.steps import fit_and_evaluate, prepare_split
    from personalize.tracking import runs as tlog

    work = Path(os.environ["PERSONALIZE_DATA_DIR"])
    config = experiment(size, f"sqlite:///{work / 'mlflow.db'}")
    meter = Meter()
    with meter.stage("generate"):  # into the (empty) cache, where the run and its records look
        log = ensure_generated(config.data.synthetic)
    with meter.stage("ingest"):
        dataset = ingest(log.data_config(config.data))
    with meter.stage("audit"):
        audit = audit_dataset(dataset, config.audit)
    seed = config.seeds[0]
    with meter.stage("split"):
        prepared = prepare_split(dataset, config, seed)

    evaluate = E.Evaluator.evaluate
    current = {"label": ""}

    def counted(self, model, target):  # every evaluation (validation and test) as "evaluate"
        label = f"evaluate {current['label']}"
        token = meter.enter(label)
        try:
            return evaluate(self, model, target)
        finally:
            meter.leave(label, token)

    E.Evaluator.evaluate = counted
    outcomes = []
    try:
        for spec in config.models:
            current["label"] = spec.label
            with meter.stage(f"fit {spec.label}"):
                result, _ = fit_and_evaluate(spec, seed, prepared, config)
            fit = meter.rows[f"fit {spec.label}"]
            fit["seconds"] -= meter.rows[f"evaluate {spec.label}"]["seconds"]  # counted inside
            outcome = ModelOutcome(spec.label, spec.type, get_model_class(spec.type).family, spec.params)
            outcome.seeds.append(result)
            outcomes.append(outcome)
    finally:
        E.Evaluator.evaluate = evaluate

    with meter.stage("log"):
        logger = tlog.ExperimentLogger(config, dataset, {seed: prepared})
        logger.log_audit(audit)
        for spec, outcome in zip(config.models, outcomes):
            model_run = logger.start_model(spec, get_model_class(spec.type))
            logger.start_seed(model_run, spec, seed).finish(outcome.seeds[0])
            logger.finish_model(model_run, outcome)
        table = leaderboard(outcomes, config.evaluation, config.split.name, seed=seed)
        metrics = long_table(outcomes, config.evaluation, seed=seed)
        result = ExperimentResult(config, dataset, {seed: prepared.split}, outcomes, table, metrics)
        logger.finish(result)
    meter.close()
    shape = {
        "interactions": len(dataset.interactions),
        "users": len(dataset.users),
        "items": len(dataset.items),
        "test_users": len(prepared.test_target.users),
    }
    rows = [
        {
            "stage": k,
            "seconds": v["seconds"],
            "peak_mib": v["peak_rss"] / MIB,
            "delta_mib": v["delta_rss"] / MIB,
        }
        for k, v in meter.rows.items()
    ]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"size": size, "shape": shape, "rows": rows, "maxrss_mib": peak}


def e2e_worker(size: int) -> dict:
    """``personalize run`` (run_experiment) at ``size`` interactions from an empty data folder."""
    from personalize.recipe import run_experiment

    work = Path(os.environ["PERSONALIZE_DATA_DIR"])
    config = experiment(size, f"sqlite:///{work / 'mlflow.db'}")
    t0 = time.perf_counter()
    run_experiment(config, progress=False, echo=None)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": size, "seconds": seconds, "maxrss_mib": peak}


def spawn(kind: str, size: int) -> dict:
    """Run one worker in a fresh interpreter with its own temporary data folder."""
    with tempfile.TemporaryDirectory(prefix=f"scale-{kind}-{size}-") as tmp:
        env = {**os.environ, "PERSONALIZE_DATA_DIR": tmp, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        out = Path(tmp) / "result.json"
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", kind, "--size", str(size), "--json", str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{kind} worker at {size} failed:\n{proc.stdout[-4000:]}")
        result = json.loads(out.read_text())
        result["wall"] = time.perf_counter() - t0
        return result


# ------------------------------------------------------------------------------ reporting


def exponent(sizes: np.ndarray, seconds: np.ndarray) -> float:
    """b of log t = a + b log R (least squares); NaN with fewer than two sizes."""
    ok = (seconds > 0) & np.isfinite(seconds)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(sizes[ok]), np.log(seconds[ok]), 1)[0])


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """Stage x size: seconds and peak RSS (GiB), and the fitted exponent of time in R."""
    sizes = sorted(frame["size"].unique())
    order = list(dict.fromkeys(frame["stage"]))
    rows = []
    for stage in order:
        sub = frame[frame["stage"] == stage].set_index("size")
        row = {"stage": stage}
        for size in sizes:
            label = _size_label(size)
            if size in sub.index:
                row[f"{label} s"] = round(float(sub.loc[size, "seconds"]), 2)
                row[f"{label} peak GiB"] = round(float(sub.loc[size, "peak_mib"]) / 1024, 2)
                row[f"{label} +GiB"] = round(float(sub.loc[size, "delta_mib"]) / 1024, 2)
        sub = sub.reindex(sizes)
        row["exponent"] = round(exponent(np.array(sizes, float), sub["seconds"].to_numpy(float)), 2)
        rows.append(row)
    return pd.DataFrame(rows)


def _size_label(size: int) -> str:
    return f"{size / 1e6:g}M" if size >= 1_000_000 else f"{size / 1e3:g}k"


def plot(frame: pd.DataFrame, path: Path) -> None:
    """Seconds (top) and peak RSS (bottom) against R on log-log axes, one line per stage, the
    exponent of its time in the legend; the totals dashed."""
    import matplotlib.pyplot as plt

    from personalize.plotting import figure, house_style, legend_outside

    stages = list(dict.fromkeys(frame["stage"]))
    colours = plt.get_cmap("tab20")

    @house_style
    def draw():
        fig, axes = figure(2, 1, height=7.5)
        panels = ((axes[0, 0], "seconds", "wall time (s)"), (axes[1, 0], "peak_mib", "peak RSS (MiB)"))
        for ax, what, unit in panels:
            for n, stage in enumerate(stages):
                sub = frame[frame["stage"] == stage].sort_values("size")
                b = exponent(sub["size"].to_numpy(float), sub["seconds"].to_numpy(float))
                total = stage in ("sum of stages", "end to end (personalize run)")
                ax.plot(
                    sub["size"],
                    sub[what],
                    marker="o",
                    lw=2.0 if total else 1.2,
                    ls="--" if total else "-",
                    color="black" if stage.startswith("end to end") else colours(n % 20),
                    label=f"{stage} (b={b:.2f})",
                )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("interactions R (log scale)")
            ax.set_ylabel(f"{unit}, log scale")
        axes[0, 0].set_title("Wall time per stage against interactions R (2 cores)")
        axes[1, 0].set_title("Peak RSS of the process during each stage")
        legend_outside(fig, axes[0, 0], title="stage (exponent b of time in R)", below=True)
        return fig

    fig = draw()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "bench_scale")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end runs")
    parser.add_argument("--no-stages", action="store_true", help="skip the per-stage runs")
    parser.add_argument("--worker", choices=["stages", "e2e"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = (stages_worker if args.worker == "stages" else e2e_worker)(args.size)
        args.json.write_text(json.dumps(result))
        return

    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for size in sorted(args.sizes):
        if not args.no_stages:
            res = spawn("stages", size)
            print(
                f"R={size}: {res['shape']}, stages {res['wall']:.1f} s, max RSS {res['maxrss_mib']:.0f} MiB"
            )
            for row in res["rows"]:
                records.append({"size": size, **row})
            stage_rows = [r for r in res["rows"]]
            records.append(
                {
                    "size": size,
                    "stage": "sum of stages",
                    "seconds": sum(r["seconds"] for r in stage_rows),
                    "peak_mib": res["maxrss_mib"],
                    "delta_mib": 0.0,
                }
            )
        if not args.no_e2e:
            res = spawn("e2e", size)
            print(f"R={size}: end to end {res['seconds']:.1f} s, max RSS {res['maxrss_mib']:.0f} MiB")
            records.append(
                {
                    "size": size,
                    "stage": "end to end (personalize run)",
                    "seconds": res["seconds"],
                    "peak_mib": res["maxrss_mib"],
                    "delta_mib": 0.0,
                }
            )
        pd.DataFrame(records).to_csv(args.out / "scale.csv", index=False)  # after every size
    frame = pd.DataFrame(records)
    print()
    print(table(frame).to_markdown(index=False))
    plot(frame, args.out / "scale.png")
    print(f"\nwrote {args.out / 'scale.csv'} and {args.out / 'scale.png'}")


if __name__ == "__main__":
    main()
