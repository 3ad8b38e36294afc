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
  into a temporary store). BPR (implicit, 50 epochs) is fitted and evaluated as well, after the
  experiment's models and outside its totals and its log (the experiment's targets name
  popularity, ItemKNN and ALS). ``peak RSS`` is the largest RSS seen during the stage (what the
  process holds, earlier stages' data included); ``+RSS`` is that peak minus the RSS when the
  stage started (what the stage itself needed at its peak).
- **end to end**: :func:`personalize.recipe.run_experiment` as ``personalize run`` calls it
  (generation into an empty data folder, then everything, logging into a temporary MLflow
  store); its peak is the process's ``ru_maxrss``.

Every data folder and MLflow store is temporary (``PERSONALIZE_DATA_DIR``,
``MLFLOW_TRACKING_URI``); nothing is written to the repository.

Output (stdout, and in ``--out``), built by :mod:`personalize.reports.scale` (notebook 08 reads
the same CSV): a Markdown table (one row per stage, seconds and peak RSS per size) with the
exponent of each stage (least squares of log seconds on log R, over the sizes measured); an
extrapolation to ``--extrapolate`` interactions (default 100M; not run): each stage's time, the
peak RSS and the generated files' size on disk grown from the largest size measured by the
exponent between the two largest sizes (``scale_extrapolated.md``); a figure in the house style
(``scale.png``: time per stage against R on log-log axes, and where the largest run's time goes);
the measurements as CSV (``scale.csv``).
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

import pandas as pd

from personalize.reports import scale as S

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "synthetic_10m.yaml"
DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
SAMPLE_SECONDS = 0.02
MIB = 2**20
EXTRA_LABEL = f"bpr {S.EXTRA}"  # fitted and evaluated in the stages run only
EXTRA_BPR_EPOCHS = 50


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

    from personalize.config.model import ModelSpec

    extra = [ModelSpec(type="bpr", name=EXTRA_LABEL, params={"iterations": EXTRA_BPR_EPOCHS})]
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
        for spec in [*config.models, *extra]:
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
        for spec, outcome in zip(config.models, outcomes):  # the experiment's models (not the extra)
            model_run = logger.start_model(spec, get_model_class(spec.type))
            logger.start_seed(model_run, spec, seed).finish(outcome.seeds[0])
            logger.finish_model(model_run, outcome)
        logged = outcomes[: len(config.models)]
        table = leaderboard(logged, config.evaluation, config.split.name, seed=seed)
        metrics = long_table(logged, config.evaluation, seed=seed)
        result = ExperimentResult(config, dataset, {seed: prepared.split}, logged, table, metrics)
        logger.finish(result)
    meter.close()
    files = [f for f in log.folder.rglob("*") if f.is_file()]
    shape = {
        "disk_mib": sum(f.stat().st_size for f in files) / MIB,  # the generated files
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "bench_scale")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end runs")
    parser.add_argument("--no-stages", action="store_true", help="skip the per-stage runs")
    parser.add_argument(
        "--extrapolate", type=int, default=100_000_000, help="size to extrapolate to (not run)"
    )
    parser.add_argument(
        "--report", type=Path, help="rebuild the tables and the figure from a scale.csv (runs nothing)"
    )
    parser.add_argument("--worker", choices=["stages", "e2e"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = (stages_worker if args.worker == "stages" else e2e_worker)(args.size)
        args.json.write_text(json.dumps(result))
        return

    args.out.mkdir(parents=True, exist_ok=True)
    if args.report:
        report(pd.read_csv(args.report), args.out, args.extrapolate)
        return
    records = []
    for size in sorted(args.sizes):
        if not args.no_stages:
            res = spawn("stages", size)
            print(
                f"R={size}: {res['shape']}, stages {res['wall']:.1f} s, max RSS {res['maxrss_mib']:.0f} MiB"
            )
            for row in res["rows"]:
                records.append({"size": size, **row})
            stage_rows = [r for r in res["rows"] if not r["stage"].endswith(EXTRA_LABEL)]
            records.append(
                {"size": size, "stage": "generated files (disk)", "disk_mib": res["shape"]["disk_mib"]}
            )
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
    report(pd.DataFrame(records), args.out, args.extrapolate)


def report(frame: pd.DataFrame, out: Path, target: int) -> None:
    """The growth table, the extrapolation to ``target`` and the figure, printed and in ``out``."""
    measured = S.growth_table(frame).to_markdown(index=False)
    ahead = S.extrapolate(frame, target)
    ahead_md = ahead.to_markdown(index=False) if len(ahead) else "(needs two sizes)"
    print(f"\n{measured}\n\nExtrapolated to {S.size_label(target)} (not run):\n\n{ahead_md}")
    (out / "scale.md").write_text(measured + "\n")
    (out / "scale_extrapolated.md").write_text(ahead_md + "\n")
    S.growth_figure(frame).savefig(out / "scale.png")
    print(f"\nwrote scale.md, scale_extrapolated.md and scale.png in {out}")


if __name__ == "__main__":
    main()
