"""Reports on experiment results: comparison figures and tables for notebooks and benchmarks.

(One module: the views notebook 02 and the benchmark table are made of, each a short function
over the same result objects.)

Everything here reads an :class:`~personalize.recipe.ExperimentResult` (its leaderboard, its
long metric table, its per-user vectors) or the catalogue; nothing is recomputed differently
from the evaluator. Figures are matplotlib; :func:`log_figures` files them with the experiment's
MLflow run through :mod:`personalize.tracking`.

The Microsoft Recommenders benchmark table (mean and interval over seeds) is
:func:`msr_report`, also ``personalize msr experiments/ml100k_msr.yaml``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from personalize import plotting as P
from personalize.config import ExperimentConfig
from personalize.core import columns as C
from personalize.core.metrics import MetricName
from personalize.evaluation.leaderboard import ModelOutcome
from personalize.evaluation.stats import bootstrap_ci, holm, paired_test
from personalize.models.neural.training import TorchRecommender
from personalize.models.registry import get_model_class
from personalize.recipe import ExperimentResult, run_experiment
from personalize.reports import views
from personalize.tracking import artifacts
from personalize.tracking.artifacts import free
from personalize.tracking.store import RunHandle, Tracker

artifacts.declare(
    __name__,
    free("report/*.png", "figures comparing models (per model, family or slice)"),
    free("report/msr_table.csv", "metrics per model with intervals over split seeds"),
    free("report/msr_table.md", "metrics per model with intervals over split seeds"),
    free("report/hybrid_vs_parts.csv", "metrics of each hybrid and its parts"),
    free("report/more_like_this.csv", "items similar to an item, per model"),
)

# Microsoft Recommenders' MovieLens-100K benchmark table, best row (BiVAE): NDCG@10 and MAP
# (their `map`, divided by |R|: our `map_r@10` in msr mode).
MSR_PUBLISHED = {"model": "BiVAE (MS Recommenders, published)", "ndcg@10": 0.475, "map_r@10": 0.146}


# --------------------------------------------------------------------------- configs


def select_models(config: ExperimentConfig, labels: Iterable[str] | None) -> ExperimentConfig:
    """A copy of ``config`` with only the models labelled ``labels`` (None: all), in file order."""
    if labels is None:
        return config
    wanted = list(labels)
    known = [m.label for m in config.models]
    missing = [label for label in wanted if label not in known]
    if missing:
        raise ValueError(f"models {missing} are not in the experiment; it has {known}")
    return config.model_copy(update={"models": [m for m in config.models if m.label in wanted]})


def notebook_models(config: ExperimentConfig, labels: Iterable[str] | None, full: bool) -> ExperimentConfig:
    """Notebook 02's models: ``labels`` when given, else every model with ``full``, else the
    models without the neural ones."""
    if labels:
        return select_models(config, labels)
    return config if full else without_neural(config)


def without_neural(config: ExperimentConfig) -> ExperimentConfig:
    """A copy of ``config`` without the neural models (PyTorch-trained: NeuMF, the two-tower),
    the part of a comparison that takes most of its time."""
    keep = [m for m in config.models if not issubclass(get_model_class(m.type), TorchRecommender)]
    return config.model_copy(update={"models": keep})


# ------------------------------------------------------------------------ leaderboard


@P.house_style
def plot_leaderboard(table: pd.DataFrame, metric: str = "ndcg@10", title: str | None = None):
    """Test ``metric`` per model with its 95% interval over users (dots and lines, best at the
    top), coloured by family; models within noise of the best (the leaderboard's Holm-adjusted
    paired test) drawn hollow."""
    rows = table.sort_values(metric, ascending=False, kind="stable")
    fig, axes = P.figure(height=P.rows_height(len(rows)))
    ax = axes[0][0]
    P.interval_rows(
        ax,
        rows["model"].tolist(),
        rows[metric],
        rows.get(f"{metric} low"),
        rows.get(f"{metric} high"),
        [P.family_colour(f) for f in rows["family"]],
        f"test {metric.upper()} (95% bootstrap interval over users)",
    )
    P.family_legend(fig, rows["family"].tolist())
    ax.set_title(title or f"{metric.upper()} by model")
    return fig


@P.house_style
def plot_metric_by_family(long: pd.DataFrame, metric: str = "ndcg", slice_name: str = "all"):
    """``metric``@K against K, one panel per model family, a line (and 95% band) per model; one
    legend of every model, right of the panels."""
    data = long[(long["slice"] == slice_name) & (long["metric"] == metric)]
    families = [f for f in P.FAMILY_ORDER if f in set(data["family"])] + sorted(
        set(data["family"]) - set(P.FAMILY_ORDER)
    )
    fig, axes = P.figure(1, len(families), width=P.WIDTH + 2, height=3.4, sharey=True)
    colours = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)
    for ax, family in zip(axes[0], families):
        for model, rows in data[data["family"] == family].groupby("model", sort=False):
            rows = rows.sort_values("k")
            colour = next(colours)
            ax.plot(rows["k"], rows["mean"], marker="o", ms=3, color=colour, label=model)
            ax.fill_between(rows["k"], rows["ci_low"], rows["ci_high"], color=colour, alpha=0.15)
        ax.set_title(family)
        ax.set_xlabel("K (list length)")
        ax.set_xticks(sorted(data["k"].unique()))
    axes[0][0].set_ylabel(f"test {metric.upper()}@K ({slice_name} users)")
    handles = [h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]]
    labels = [lab for ax in axes[0] for lab in ax.get_legend_handles_labels()[1]]
    fig.legend(handles, labels, title="model (95% bands)", loc="outside right upper")
    fig.suptitle(f"{metric.upper()}@K by family")
    return fig


# ------------------------------------------------------------------ paired comparisons


def compare_models(
    result: ExperimentResult, a: str, b: str, metric: str | None = None, part: str = "test"
) -> dict[str, Any]:
    """Model ``a`` against ``b`` on the same users: means, 95% intervals, difference and the
    paired test's p-value (the experiment's ``evaluation.paired_test``)."""
    ev = result.config.evaluation
    metric = metric or ev.primary_metric
    outcomes = {o.label: o for o in result.outcomes}
    for label in (a, b):
        if label not in outcomes:
            raise ValueError(f"no model {label!r} in the result; it has {list(outcomes)}")
    joined = pd.concat(
        [
            outcomes[a].per_user(part)[metric].rename("a"),
            outcomes[b].per_user(part)[metric].rename("b"),
        ],
        axis=1,
        join="inner",
    )
    seed = result.config.seeds[0]
    out: dict[str, Any] = {"metric": metric, "users": len(joined)}
    for key, label in (("a", a), ("b", b)):
        lo, hi = bootstrap_ci(joined[key].to_numpy(), ev.bootstrap_resamples, ev.confidence, seed)
        out.update(
            {key: label, f"{key} mean": float(joined[key].mean()), f"{key} low": lo, f"{key} high": hi}
        )
    diff = (joined["a"] - joined["b"]).to_numpy()
    lo, hi = bootstrap_ci(diff, ev.bootstrap_resamples, ev.confidence, seed)
    out.update(
        {
            "difference": float(diff.mean()),
            "difference low": lo,
            "difference high": hi,
            "p": paired_test(joined["a"].to_numpy(), joined["b"].to_numpy(), ev.paired_test, seed),
            "test": ev.paired_test,
        }
    )
    return out


def hybrid_vs_parts(
    result: ExperimentResult, hybrid: str, parts: Sequence[str], metric: str | None = None
) -> pd.DataFrame:
    """One row per part: the hybrid against that part (see :func:`compare_models`), with the
    p-values Holm-adjusted across the parts (``p (Holm)``: the family is this hybrid's parts)."""
    rows = [compare_models(result, hybrid, part, metric) for part in parts]
    table = pd.DataFrame(rows).rename(columns={"a": "hybrid", "b": "part"})
    table["p (Holm)"] = holm(table["p"].tolist())
    return table


# --------------------------------------------------------------------------- cold users


def warm_cold_table(long: pd.DataFrame, metric: str = "ndcg", k: int = 10) -> pd.DataFrame:
    """Per model: ``metric``@k in the warm and cold slices with intervals and user counts
    (empty when the split has no cold test users)."""
    data = long[(long["metric"] == metric) & (long["k"] == k) & long["slice"].isin(["warm", "cold"])]
    if data.empty:
        return pd.DataFrame()
    wide = data.pivot_table(
        index=["model", "family"], columns="slice", values=["mean", "ci_low", "ci_high", "users"]
    )
    out = pd.DataFrame(index=wide.index)
    for s in ("warm", "cold"):
        out[f"{s}"] = wide[("mean", s)]
        out[f"{s} low"] = wide[("ci_low", s)]
        out[f"{s} high"] = wide[("ci_high", s)]
        out[f"{s} users"] = wide[("users", s)].astype(int)
    order = long.drop_duplicates("model")["model"].tolist()
    return (
        out.reset_index().set_index("model").loc[lambda f: [m for m in order if m in f.index]].reset_index()
    )


@P.house_style
def plot_warm_cold(long: pd.DataFrame, metric: str = "ndcg", k: int = 10, title: str | None = None):
    """Grouped bars: ``metric``@k of every model for warm and cold test users, with intervals."""
    table = warm_cold_table(long, metric, k)
    if table.empty:
        raise ValueError("this result has no cold test users (use a split like global_temporal)")
    fig, axes = P.figure(width=max(P.WIDTH, 0.55 * len(table) + 3), height=4.0)
    ax = axes[0][0]
    x = np.arange(len(table))
    width = 0.4
    for offset, s, colour in ((-width / 2, "warm", "tab:blue"), (width / 2, "cold", "tab:orange")):
        err = [table[s] - table[f"{s} low"], table[f"{s} high"] - table[s]]
        ax.bar(
            x + offset,
            table[s],
            width,
            yerr=err,
            capsize=2,
            color=colour,
            label=f"{s} ({int(table[f'{s} users'].iloc[0])} users)",
        )
    ax.set_xticks(x, table["model"], rotation=35, ha="right")
    ax.set_ylabel(f"test {metric.upper()}@{k}")
    P.legend_outside(fig, ax, "test users (95% intervals)")
    ax.set_title(title or f"Warm and cold test users: {metric.upper()}@{k}")
    return fig


# ---------------------------------------------------------------- beyond accuracy


@P.house_style
def plot_tradeoffs(table: pd.DataFrame, metric: str = "ndcg@10"):
    """Accuracy against coverage, novelty and popularity bias (ARP), one labelled point per model
    (labels placed so that they do not overlap), coloured by family."""
    k = MetricName.parse(metric).k
    panels = [
        (f"coverage@{k}", "catalogue coverage (share of items in some top list)"),
        (f"novelty@{k}", "novelty (bits; higher = less popular items)"),
        (f"popularity@{k}", "popularity bias (mean training interactions)"),
    ]
    panels = [(col, label) for col, label in panels if col in table.columns]
    fig, axes = P.figure(len(panels), 1, height=3.2 * len(panels), sharey=True)
    for ax, (col, label) in zip(axes[:, 0], panels):
        ax.scatter(table[col], table[metric], c=[P.family_colour(f) for f in table["family"]], s=30)
        P.label_points(ax, table[col].tolist(), table[metric].tolist(), table["model"].tolist())
        ax.set_xlabel(label)
        ax.set_ylabel(f"test {metric.upper()}")
    P.family_legend(fig, table["family"].tolist())
    fig.suptitle("Accuracy against coverage, novelty and popularity bias")
    return fig


# --------------------------------------------------------------------- more like this


def find_items(items: pd.DataFrame, titles: Iterable[str]) -> list[Any]:
    """Item IDs for titles: an exact (case-insensitive) title match first, else the first
    catalogue item whose title contains the text. A title not found is a clear error."""
    names = items[C.TITLE].astype("string").str.lower().fillna("")
    out = []
    for title in titles:
        key = title.lower()
        exact = np.flatnonzero((names == key).to_numpy())
        hits = exact if len(exact) else np.flatnonzero(names.str.contains(key, regex=False).to_numpy())
        if not len(hits):
            raise ValueError(f"no catalogue item has a title like {title!r}")
        out.append(items[C.ITEM].iloc[hits[0]])
    return out


def more_like_this(
    items: pd.DataFrame, titles: Iterable[str], vectors: str = "dense", k: int = 5
) -> pd.DataFrame:
    """ "More like this" for films by title: their ``k`` nearest items by content (FAISS over
    :func:`personalize.features.items.item_vectors`), with titles, years, genres, similarity."""
    from personalize.features.index import VectorIndex
    from personalize.features.items import item_vectors

    catalogue = items.reset_index(drop=True)
    index = VectorIndex(item_vectors(catalogue, vectors), catalogue[C.ITEM])
    ids = find_items(catalogue, titles)
    table = index.similar_items(ids, k)
    info = catalogue.set_index(C.ITEM)
    label = {i: _label(info.loc[i]) for i in set(table["item_id"]) | set(table["similar_item_id"])}
    return pd.DataFrame(
        {
            "query": table["item_id"].map(label),
            "rank": table["rank"],
            "similar": table["similar_item_id"].map(label),
            "genres": table["similar_item_id"].map(
                lambda i: (
                    ", ".join(map(str, info.loc[i, C.GENRES]))
                    if isinstance(info.loc[i, C.GENRES], (list, tuple, np.ndarray))
                    else ""
                )
            ),
            "similarity": table["similarity"],
            C.ITEM: table["similar_item_id"],
        }
    )


def _label(row: pd.Series) -> str:
    title = row.get(C.TITLE)
    year = row.get(C.YEAR)
    text = str(title) if isinstance(title, str) else "(untitled)"
    return f"{text} ({int(year)})" if year is not None and not pd.isna(year) else text


@P.house_style
def plot_more_like_this(table: pd.DataFrame, title: str | None = None):
    """One panel per query film: its nearest items by content similarity."""
    queries = list(dict.fromkeys(table["query"]))
    cols = min(2, len(queries))
    rows_n = int(np.ceil(len(queries) / cols))
    k = int(table["rank"].max())
    fig, axes = P.figure(rows_n, cols, width=P.WIDTH + 2, height=(0.3 * k + 0.9) * rows_n)
    for ax, query in zip(axes.ravel(), queries):
        sub = table[table["query"] == query].sort_values("rank", ascending=False)
        ax.barh(np.arange(len(sub)), sub["similarity"], color="tab:green", alpha=0.8)
        ax.set_yticks(np.arange(len(sub)), sub["similar"], fontsize=7.5)
        ax.set_xlim(0, 1)
        ax.set_title(f"more like {query}", fontsize=9)
        ax.set_xlabel("cosine similarity of content vectors")
        ax.grid(axis="y", alpha=0)
    for ax in axes.ravel()[len(queries) :]:
        ax.axis("off")
    fig.suptitle(title or "More like this")
    return fig


# --------------------------------------------------------------------- over seeds


def seed_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval over independent runs (e.g. split seeds):
    mean -/+ t_{(1+c)/2, n-1} * s / sqrt(n), s the sample standard deviation. One run: (x, nan, nan)."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf((1 + confidence) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return mean, mean - half, mean + half


def seed_summary(
    outcomes: Sequence[ModelOutcome], metrics: Sequence[str], confidence: float = 0.95
) -> pd.DataFrame:
    """Per model: each metric's mean over seeds with a t-interval over seeds (see
    :func:`seed_interval`), sorted by the first metric."""
    rows = []
    for o in outcomes:
        row: dict[str, Any] = {"model": o.label, "family": o.family, "seeds": len(o.seeds)}
        for m in metrics:
            mean, lo, hi = seed_interval([s.test.metric(m) for s in o.seeds], confidence)
            row.update({m: mean, f"{m} low": lo, f"{m} high": hi})
        rows.append(row)
    return pd.DataFrame(rows).sort_values(metrics[0], ascending=False, kind="stable").reset_index(drop=True)


def seed_spread(outcomes: Sequence[ModelOutcome], metrics: Sequence[str]) -> pd.DataFrame:
    """Per model: each metric's mean and sample standard deviation over seeds (std is NaN with
    one seed), sorted by the first metric's mean."""
    rows = []
    for o in outcomes:
        row: dict[str, Any] = {"model": o.label, "family": o.family, "seeds": len(o.seeds)}
        for m in metrics:
            x = np.array([s.test.metric(m) for s in o.seeds], dtype=np.float64)
            row[f"{m} mean"] = float(x.mean())
            row[f"{m} std"] = float(x.std(ddof=1)) if len(x) > 1 else float("nan")
        rows.append(row)
    first = f"{metrics[0]} mean"
    return pd.DataFrame(rows).sort_values(first, ascending=False, kind="stable").reset_index(drop=True)


def msr_table(result: ExperimentResult) -> pd.DataFrame:
    """The benchmark table: NDCG@10 and MAP (``map_r@10``) mean and 95% interval over split
    seeds, the published best row beside it, and whether each model beats it on both."""
    table = seed_summary(result.outcomes, ["ndcg@10", "map_r@10"], result.config.evaluation.confidence)
    beats = (table["ndcg@10"] > MSR_PUBLISHED["ndcg@10"]) & (table["map_r@10"] > MSR_PUBLISHED["map_r@10"])
    table["beats published best"] = np.where(beats, "yes", "no")
    table["seeds"] = table["seeds"].astype(str)
    published = pd.DataFrame(
        [{**MSR_PUBLISHED, "family": "reference", "seeds": "-", "beats published best": "-"}]
    )
    return pd.concat([table, published], ignore_index=True)


def format_intervals(table: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """'mean [low, high]' cells for every column that has ' low' / ' high' companions."""
    out = pd.DataFrame()
    for col in table.columns:
        if col.endswith(" low") or col.endswith(" high"):
            continue
        if f"{col} low" in table.columns:
            out[col] = [
                f"{m:.{digits}f}" if pd.isna(lo) else f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
                for m, lo, hi in zip(table[col], table[f"{col} low"], table[f"{col} high"])
            ]
        elif col == "p":
            out[col] = [f"{p:.2g}" for p in table[col]]
        elif pd.api.types.is_float_dtype(table[col]):
            out[col] = [f"{v:.{digits}f}" for v in table[col]]
        else:
            out[col] = table[col]
    return out


# -------------------------------------------------------------------------- tracking


def log_figures(
    result: ExperimentResult, figures: dict[str, Any], tables: dict[str, pd.DataFrame] | None = None
) -> None:
    """Log figures (``{'plots/name.png': fig}``) and tables (``{'report/name.csv': frame}``) to
    the experiment's parent MLflow run; a result run without tracking is left alone."""
    if result.parent_run_id is None:
        return
    tracker = Tracker(result.config.tracking.experiment or result.config.name, result.tracking_uri)
    handle = RunHandle(tracker.client, result.parent_run_id, result.experiment_id, result.config.name)
    for path, fig in figures.items():
        handle.log_figure(fig, path)
    for path, frame in (tables or {}).items():
        handle.log_table(frame, path)


def msr_report(
    path: str | Path, overrides: list[str] | None = None, track: bool = True, echo=print
) -> pd.DataFrame:
    """Run the MS Recommenders benchmark experiment and print (and log) the table of means and
    intervals over split seeds against the published best row (``personalize msr``)."""
    result = run_experiment(Path(path), overrides, track=track, echo=echo)
    table = msr_table(result)
    if echo:
        echo(f"\n{result.config.name}: mean [95% t-interval over {len(result.config.seeds)} split seeds]")
        echo(format_intervals(table).to_markdown(index=False))
    log_figures(result, {}, {"report/msr_table.csv": table, "report/msr_table.md": format_intervals(table)})
    return table


# --------------------------------------------------------------------- notebook 02


def run_peers(
    experiment: str | Path | None, overrides: list[str], labels: Iterable[str] | None, track: bool
) -> ExperimentResult | None:
    """RecBole's models as peers on our split (``experiment``; None: not run)."""
    if not experiment:
        return None
    from personalize.recipe import load_experiment

    config = select_models(load_experiment(experiment, overrides), labels)
    return run_experiment(config, track=track, progress=False, echo=None)


def parts_view(parts: pd.DataFrame) -> pd.DataFrame:
    """:func:`hybrid_vs_parts` as a reader needs it: each part's mean, the hybrid minus the part
    with its interval, the paired test and its Holm adjustment across the parts."""
    table = parts.rename(columns={"a mean": "hybrid mean", "b mean": "part mean"})
    columns = [
        "part",
        "hybrid mean",
        "part mean",
        "difference",
        "difference low",
        "difference high",
        "p",
        "p (Holm)",
    ]
    return views.comparison(table[columns], "the hybrid's parts")


def notebook_summary(
    result: ExperimentResult, peers: ExperimentResult | None, similar: pd.DataFrame
) -> dict[str, Any]:
    """What notebook 02 records for its test besides its findings."""
    board = result.leaderboard
    return {
        "models": board["model"].tolist(),
        "families": sorted(board["family"].unique()),
        "tracked": bool(result.parent_run_id),
        "peers": [] if peers is None else peers.leaderboard["model"].tolist(),
        "peers_families": [] if peers is None else sorted(peers.leaderboard["family"].unique()),
        "more_like_this_rows": len(similar),
    }
