"""Notebook 08's tables, figures and findings: what a generated log looks like, how the lab's
models do on it against the generator's own ceiling, and how the cost of every stage grows
with the log's size (read from the scale benchmark, ``benchmarks/bench_scale.py``, which uses
the growth table, the extrapolation and the figure defined here).

The log comes from :mod:`personalize.data.synthetic` (the cache ``data.source: synthetic``
reads), the experiment from :func:`personalize.recipe.run_experiment`, the metrics from the one
evaluator; the ceiling is the generating probability :func:`~personalize.data.synthetic.oracle_scores`
ranked by that evaluator like any model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from personalize.core import columns as C
from personalize.core.paths import experiments_dir, project_root
from personalize.data.matrix import IdIndex
from personalize.data.synthetic import SyntheticLog, ensure_generated, oracle_scores
from personalize.evaluation.evaluator import Evaluator
from personalize.recipe import load_experiment, run_experiment
from personalize.recipe.result import ExperimentResult
from personalize.recipe.steps import prepare_split
from personalize.reports.findings import Findings

EXPERIMENT = "synthetic_1m.yaml"  # popularity, ItemKNN, ALS on user_temporal; resized by overrides
DISK = "generated files (disk)"  # the benchmark's row of the files' size
TOTALS = ("sum of stages", "end to end (personalize run)")
EXTRA = "(not in the experiment)"  # the suffix of stages timed beside the experiment (BPR)
# the stages drawn, with their colour and line style: the data stages, then fit (solid) and
# evaluate (dashed) per model in the model's colour, logging, and the whole run in black
DRAWN = {
    "generate": ("tab:olive", "-"),
    "ingest": ("tab:cyan", "-"),
    "split": ("tab:purple", "-"),
    "fit popularity": ("tab:gray", "-"),
    "evaluate popularity": ("tab:gray", "--"),
    "fit itemknn": ("tab:green", "-"),
    "evaluate itemknn": ("tab:green", "--"),
    "fit als": ("tab:blue", "-"),
    "evaluate als": ("tab:blue", "--"),
    "fit bpr (not in the experiment)": ("tab:orange", "-"),
    "evaluate bpr (not in the experiment)": ("tab:orange", "--"),
    "log": ("tab:brown", ":"),
    "end to end (personalize run)": ("black", "-"),
}


def size_label(size: int) -> str:
    """10M, 1M, 100k."""
    return f"{size / 1e6:g}M" if size >= 1_000_000 else f"{size / 1e3:g}k"


# ----------------------------------------------------------------------------- the log


def experiment(interactions: int, seed: int = 0):
    """``experiments/synthetic_1m.yaml`` resized to ``interactions`` events (the one source of
    the log's settings: the notebook's log and its experiment are the same cached folder)."""
    overrides = [f"data.synthetic.interactions={interactions}", f"data.synthetic.seed={seed}"]
    overrides += [f"data.name=synthetic-{size_label(interactions)}", "data.write_processed=false"]
    return load_experiment(experiments_dir() / EXPERIMENT, overrides)


def generated(interactions: int, seed: int = 0) -> SyntheticLog:
    """The log the experiment reads at this size (generated into the cache on first use)."""
    return ensure_generated(experiment(interactions, seed).data.synthetic)


def log_table(log: SyntheticLog) -> pd.DataFrame:
    """One row per file: rows, distinct events, planted duplicates, size on disk (MiB)."""
    rows = []
    for f in log.meta["files"].values():
        rows.append(
            {
                "file": f["path"],
                "table": f.get("event") or f["role"],
                "rows": f["rows"],
                "events": f.get("events", f["rows"]),
                "duplicates": f.get("duplicates", 0),
                "MiB": round((log.folder / f["path"]).stat().st_size / 2**20, 2),
            }
        )
    return pd.DataFrame(rows)


def _events(log: SyntheticLog) -> pd.DataFrame:
    files = [p for name, p in log.files.items() if log.meta["files"][name]["role"] == "interactions"]
    return pd.concat([pd.read_parquet(p, columns=[C.USER, C.ITEM, C.TIMESTAMP]) for p in files])


def structure(log: SyntheticLog) -> dict[str, object]:
    """The shape of the log: item counts by popularity rank and the fitted slope of log count
    on log rank (over ranks 10 to 1,000 or the catalogue's tenth, the power law's body), user
    activity (events per user: median, 99th percentile, share of events from the top 1% of
    users), and the share of events by hour of day and by weekday (UTC)."""
    events = _events(log)
    counts = np.sort(events[C.ITEM].value_counts().to_numpy())[::-1]
    ranks = np.arange(1, len(counts) + 1)
    body = (ranks >= 10) & (ranks <= max(20, min(1_000, len(counts) // 10)))
    slope = float(np.polyfit(np.log(ranks[body]), np.log(counts[body]), 1)[0])
    activity = np.sort(events[C.USER].value_counts().to_numpy())[::-1]
    top = max(1, len(activity) // 100)
    when = pd.to_datetime(events[C.TIMESTAMP], unit="s", utc=True)
    return {
        "item_counts": counts,
        "popularity_slope": slope,
        "user_activity": activity,
        "activity_median": float(np.median(activity)),
        "activity_p99": float(np.percentile(activity, 99)),
        "top_user_share": float(activity[:top].sum() / activity.sum()),
        "hour_share": when.dt.hour.value_counts(normalize=True).sort_index(),
        "weekday_share": when.dt.dayofweek.value_counts(normalize=True).sort_index(),
    }


def structure_figure(log: SyntheticLog, shape: dict | None = None):
    """Four panels: items' events by popularity rank (log-log, with the fitted slope), users'
    events by activity rank (log-log), events by hour of day, events by weekday."""
    from personalize.plotting import figure, house_style

    s = shape or structure(log)

    @house_style
    def draw():
        fig, axes = figure(2, 2, height=6.2)
        ax = axes[0, 0]
        ax.loglog(np.arange(1, len(s["item_counts"]) + 1), s["item_counts"], color="tab:blue")
        ax.set_title(f"Item popularity (slope {s['popularity_slope']:.2f})")
        ax.set_xlabel("item rank (log scale)")
        ax.set_ylabel("events (log scale)")
        ax = axes[0, 1]
        ax.loglog(np.arange(1, len(s["user_activity"]) + 1), s["user_activity"], color="tab:red")
        ax.set_title("User activity (heavy tail)")
        ax.set_xlabel("user rank (log scale)")
        ax.set_ylabel("events (log scale)")
        ax = axes[1, 0]
        ax.bar(s["hour_share"].index, s["hour_share"].to_numpy() * 100, color="tab:green")
        ax.set_title("Daily cycle")
        ax.set_xlabel("hour of day (UTC)")
        ax.set_ylabel("share of events (%)")
        ax = axes[1, 1]
        days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        ax.bar(
            [days[d] for d in s["weekday_share"].index],
            s["weekday_share"].to_numpy() * 100,
            color="tab:purple",
        )
        ax.set_title("Weekly cycle")
        ax.set_xlabel("weekday")
        ax.set_ylabel("share of events (%)")
        return fig

    return draw()


# ------------------------------------------------------------------ models against the ceiling


class Oracle:
    """The generating probability P(i | u) as a scorer (rows: positions in the target's index)."""

    name = "oracle"

    def __init__(self, log: SyntheticLog, index: IdIndex):
        self.params, self.index = log.params(), index

    def score(self, users: np.ndarray) -> np.ndarray:
        return oracle_scores(self.params, self.index.users[users], self.index.items).astype(np.float32)


def run(interactions: int, seed: int = 0) -> ExperimentResult:
    """:func:`experiment` run end to end, not logged to MLflow."""
    return run_experiment(experiment(interactions, seed), track=False, progress=False, echo=None)


def board(
    result: ExperimentResult, log: SyntheticLog, metrics=("ndcg@10", "recall@10", "map@10")
) -> pd.DataFrame:
    """The test leaderboard with the generator's ceiling: the oracle's ranking (the probability
    the generator drew each item with, seen items excluded) scored by the same evaluator on the
    same test users. It is a rough ceiling: the oracle knows every user's taste exactly, but the
    held-out events are random draws from it."""
    config = result.config
    prepared = prepare_split(result.dataset, config, config.seeds[0])
    oracle = Evaluator(config.evaluation, prepared.genres).evaluate(
        Oracle(log, prepared.index), prepared.test_target
    )
    table = result.leaderboard.set_index("model")[list(metrics)]
    table.loc["oracle (generator)"] = [oracle.summary[m] for m in metrics]
    return table.sort_values(metrics[0], ascending=False).round(4)


# --------------------------------------------------------------------------- cost growth


def load_benchmark(path: str | Path = "benchmarks/results/scale.csv") -> pd.DataFrame:
    """The scale benchmark's measurements (``bench_scale.py --out``; relative to the project)."""
    path = Path(path)
    return pd.read_csv(path if path.is_absolute() else project_root() / path)


def timed(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that time a stage (not the files' size)."""
    return frame[frame["stage"] != DISK]


def exponent(sizes: np.ndarray, seconds: np.ndarray) -> float:
    """b of log t = a + b log R (least squares); NaN with fewer than two sizes."""
    ok = (seconds > 0) & np.isfinite(seconds)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(sizes[ok]), np.log(seconds[ok]), 1)[0])


def growth_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Stage x size: seconds and peak RSS (GiB), and the fitted exponent of time in R."""
    frame = timed(frame)
    sizes = sorted(frame["size"].unique())
    rows = []
    for stage in dict.fromkeys(frame["stage"]):
        sub = frame[frame["stage"] == stage].set_index("size")
        row = {"stage": stage}
        for size in sizes:
            if size in sub.index:
                row[f"{size_label(size)} s"] = round(float(sub.loc[size, "seconds"]), 2)
                row[f"{size_label(size)} peak GiB"] = round(float(sub.loc[size, "peak_mib"]) / 1024, 2)
        sub = sub.reindex(sizes)
        row["exponent"] = round(exponent(np.array(sizes, float), sub["seconds"].to_numpy(float)), 2)
        rows.append(row)
    return pd.DataFrame(rows)


def extrapolate(frame: pd.DataFrame, target: int = 100_000_000) -> pd.DataFrame:
    """Each stage's time, its peak RSS and the files' size at ``target`` interactions, grown from
    the largest size measured by the local exponent (between the two largest sizes: the cost per
    event at the top of the range, not the average over it, taken between 0 and 2); peak RSS
    above the interpreter's baseline (the smallest peak at the smallest size) grows, the baseline
    does not. The totals are the sum of the experiment's stages' extrapolated times and the
    largest of their peaks."""
    sizes = sorted(frame["size"].unique())
    if len(sizes) < 2:
        return pd.DataFrame()
    lo, hi = sizes[-2], sizes[-1]
    factor = target / hi
    base_mib = float(timed(frame).loc[lambda f: f["size"] == sizes[0], "peak_mib"].min())
    rows = []
    for stage in dict.fromkeys(frame["stage"]):
        sub = frame[frame["stage"] == stage].set_index("size")
        if lo not in sub.index or hi not in sub.index:
            continue
        row: dict[str, object] = {"stage": stage}
        for what, unit in (("seconds", "s"), ("peak_mib", "peak GiB"), ("disk_mib", "GiB")):
            if what not in sub.columns or not np.isfinite(sub.loc[hi, what]):
                continue
            scale = 1.0 if what == "seconds" else 1024.0
            at_hi, at_lo = float(sub.loc[hi, what]), float(sub.loc[lo, what])
            base = base_mib if what == "peak_mib" else 0.0
            above_hi, above_lo = max(at_hi - base, 1e-9), max(at_lo - base, 1e-9)
            b = float(np.clip(np.log(above_hi / above_lo) / np.log(hi / lo), 0.0, 2.0))
            row[f"{size_label(hi)} {unit}"] = round(at_hi / scale, 2)
            row[f"{size_label(target)} {unit} (extrapolated)"] = round(
                (base + above_hi * factor**b) / scale, 1
            )
            row[f"exponent ({unit})"] = round(float(b), 2)
        rows.append(row)
    out = pd.DataFrame(rows).set_index("stage")
    t, m = f"{size_label(target)} s (extrapolated)", f"{size_label(target)} peak GiB (extrapolated)"
    stages = [s for s in out.index if s not in TOTALS and s != DISK and not s.endswith(EXTRA)]
    for total in TOTALS:
        if total in out.index and "sum of stages" in out.index:
            ratio = out.loc[total, f"{size_label(hi)} s"] / out.loc["sum of stages", f"{size_label(hi)} s"]
            out.loc[total, t] = round(float(out.loc[stages, t].sum() * ratio), 1)
            out.loc[total, m] = round(float(out.loc[stages, m].max()), 1)
            out.loc[total, ["exponent (s)", "exponent (peak GiB)"]] = np.nan
    return out.reset_index()


def _short(stage: str) -> str:
    """A stage's name in a figure ("(extra)": timed beside the experiment, outside its totals)."""
    return stage.replace(EXTRA, "(extra)").replace(" (personalize run)", "")


def growth_figure(frame: pd.DataFrame):
    """Top: wall time of each stage against R on log-log axes (the exponent b of each in the
    legend; fit solid, evaluate dashed, in the model's colour). Bottom: where the largest run's
    time goes, one bar per stage, with the process's peak RSS during it."""
    from personalize.plotting import figure, house_style

    frame = timed(frame)
    largest = int(frame["size"].max())

    @house_style
    def draw():
        fig, axes = figure(2, 1, height=10.5, gridspec_kw={"height_ratios": [1.6, 1]})
        ax = axes[0, 0]
        for stage, (colour, ls) in DRAWN.items():
            sub = frame[frame["stage"] == stage].sort_values("size")
            if sub.empty:
                continue
            b = exponent(sub["size"].to_numpy(float), sub["seconds"].to_numpy(float))
            end = stage.startswith("end to end")
            ax.plot(
                sub["size"],
                sub["seconds"],
                color=colour,
                ls=ls,
                marker="o",
                ms=3.5,
                lw=2.4 if end else 1.4,
                label=f"{_short(stage)}  (b = {b:.2f})",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("interactions R (log scale)")
        ax.set_ylabel("wall time (s, log scale)")
        ax.set_title("Time of each stage against the log's size (2 cores)")
        ax.legend(
            title="stage (b: exponent of time in R)", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2
        )
        ax = axes[1, 0]
        at = frame[(frame["size"] == largest) & frame["stage"].isin(DRAWN)].set_index("stage")
        stages = [s for s in DRAWN if s in at.index]
        y = np.arange(len(stages))[::-1]
        ax.barh(y, at.loc[stages, "seconds"], color=[DRAWN[s][0] for s in stages], height=0.65)
        for yi, stage in zip(y, stages, strict=True):
            sec, gib = at.loc[stage, "seconds"], at.loc[stage, "peak_mib"] / 1024
            ax.text(sec, yi, f"  {sec:.0f} s, peak {gib:.1f} GiB", va="center", fontsize=8)
        ax.set_yticks(y, [_short(s) for s in stages])
        ax.set_xlim(0, float(at.loc[stages, "seconds"].max()) * 1.45)
        ax.set_xlabel("wall time (s); peak: the largest RSS during the stage")
        ax.set_title(f"Where the time goes at {size_label(largest)} interactions")
        return fig

    return draw()


# ------------------------------------------------------------------------------ findings


def scale_findings(shape: dict, table: pd.DataFrame, growth: pd.DataFrame) -> Findings:
    """The log's shape, the models against the ceiling, and the cost at the largest size."""
    f = Findings("What we found")
    f.add(
        f"The generated log has the shape real logs have: item popularity falls with rank with a slope "
        f"of {shape['popularity_slope']:.4f} on log-log axes, the median user has "
        f"{shape['activity_median']:.0f} events and the top 1% of users account for "
        f"{shape['top_user_share']:.0%} of them.",
        popularity_slope=round(shape["popularity_slope"], 4),
        activity_median=int(shape["activity_median"]),
        top_user_share=round(shape["top_user_share"], 4),
    )
    ndcg = table["ndcg@10"]
    models = ndcg.drop("oracle (generator)")
    best = str(models.idxmax())
    f.add(
        f"On test, {best} leads the models with NDCG@10 {models[best]:.4f} against {ndcg['popularity']:.4f} "
        f"for popularity; the generator's own ranking reaches {ndcg['oracle (generator)']:.4f}, so the "
        f"best model recovers {models[best] / ndcg['oracle (generator)']:.0%} of that rough ceiling.",
        best_model=best,
        best_ndcg=round(float(models[best]), 4),
        popularity_ndcg=round(float(ndcg["popularity"]), 4),
        oracle_ndcg=round(float(ndcg["oracle (generator)"]), 4),
    )
    frame = timed(growth)
    largest = int(frame["size"].max())
    end = frame[(frame["stage"] == TOTALS[1]) & (frame["size"] == largest)]
    if len(end):
        seconds, peak = float(end["seconds"].iloc[0]), float(end["peak_mib"].iloc[0]) / 1024
        f.add(
            f"The benchmark's whole run at {size_label(largest)} events took {seconds / 60:.1f} minutes "
            f"with a {peak:.1f} GiB peak on 2 cores (targets: 10 minutes, 8 GB).",
            e2e_minutes=round(seconds / 60, 1),
            e2e_peak_gib=round(peak, 1),
        )
    return f
