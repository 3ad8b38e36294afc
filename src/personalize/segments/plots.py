"""Figures of the segmentation in the house style (:mod:`personalize.plotting`): the internal
indices and the stability against the number of segments, and the route comparison.

Each function returns a figure (detached from pyplot) and takes the tables the clustering
functions return: :func:`~personalize.segments.clustering.selection_table`,
:func:`~personalize.segments.clustering.choose_k`'s choice and
:func:`~personalize.segments.autoencoder.compare_routes`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from personalize import plotting as P
from personalize.segments.clustering import Choice

METHOD_COLOURS = {"kmeans": "tab:blue", "ward": "tab:orange"}
METHOD_LABELS = {"kmeans": "K-Means", "ward": "Ward"}
INDICES = [
    ("silhouette", "silhouette (higher is better)"),
    ("davies_bouldin", "Davies-Bouldin (lower is better)"),
    ("calinski_harabasz", "Calinski-Harabasz (higher is better)"),
]


def _mark_choice(ax, choice: Choice | None) -> None:
    if choice is None:
        return
    lo, hi = choice.choose_from
    ax.axvspan(lo - 0.4, hi + 0.4, color="0.85", alpha=0.5, zorder=0, lw=0)
    ax.axvline(choice.k, color="tab:red", ls="--", lw=1.0)


def _legend(fig, ax, choice: Choice | None, below: bool = False) -> None:
    """The axes' legend plus the chosen k and the range it was chosen from, outside the data."""
    handles, labels = ax.get_legend_handles_labels()
    if choice is not None:
        lo, hi = choice.choose_from
        handles += [Line2D([], [], color="tab:red", ls="--", lw=1.0), Patch(color="0.85", alpha=0.5)]
        labels += [f"chosen k = {choice.k}", f"range k is chosen from ({lo}-{hi})"]
    if below:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(handles)))
    else:
        fig.legend(handles, labels, loc="outside right upper")


@P.house_style
def plot_selection(table: pd.DataFrame, choice: Choice | None = None, title: str | None = None) -> plt.Figure:
    """Silhouette, Davies-Bouldin and Calinski-Harabasz against k, one line per method; the
    range k is chosen from shaded and the chosen k as a dashed red line."""
    fig, axes = P.figure(1, 3, height=3.4)
    for ax, (column, label) in zip(axes[0], INDICES):
        for method, rows in table.groupby("method", sort=False):
            rows = rows.sort_values("k")
            ax.plot(
                rows["k"],
                rows[column],
                marker="o",
                ms=4,
                color=METHOD_COLOURS.get(method, "tab:gray"),
                label=METHOD_LABELS.get(method, method),
            )
        _mark_choice(ax, choice)
        ax.set_xlabel("segments k")
        ax.set_title(label, fontsize=9.5, fontweight="normal")
        P.integer_ticks(ax)
    _legend(fig, axes[0][0], choice, below=True)
    fig.suptitle(title or "Internal indices of the profile segments by number of segments", fontweight="bold")
    return fig


@P.house_style
def plot_stability(
    table: pd.DataFrame,
    choice: Choice | None = None,
    min_stability: float | None = None,
    title: str | None = None,
) -> plt.Figure:
    """Stability against k: the adjusted Rand index across seeds and across bootstrap resamples
    (mean, band of one standard deviation), one colour per method; the minimum bootstrap ARI a
    chosen k should reach as a horizontal line."""
    fig, axes = P.figure(1, 2, height=3.4, sharey=True)
    panels = [("seed_ari", "across seeds"), ("bootstrap_ari", "bootstrap resamples")]
    threshold = min_stability if min_stability is not None else (choice.min_stability if choice else None)
    for ax, (column, label) in zip(axes[0], panels):
        for method, rows in table.groupby("method", sort=False):
            rows = rows.sort_values("k")
            colour = METHOD_COLOURS.get(method, "tab:gray")
            mean, std = rows[column], rows[f"{column}_std"]
            ax.plot(rows["k"], mean, marker="o", ms=4, color=colour, label=METHOD_LABELS.get(method, method))
            ax.fill_between(rows["k"], mean - std, mean + std, color=colour, alpha=0.15, lw=0)
        if threshold is not None:
            ax.axhline(threshold, color="0.3", ls=":", lw=1.0, label=f"minimum ({threshold:.2f})")
        _mark_choice(ax, choice)
        ax.set_xlabel("segments k")
        ax.set_title(label, fontsize=9.5, fontweight="normal")
        P.integer_ticks(ax)
    axes[0][0].set_ylabel("adjusted Rand index")
    _legend(fig, axes[0][0], choice, below=True)
    fig.suptitle(title or "Stability of the segments by number of segments (mean ± 1 sd)", fontweight="bold")
    return fig


@P.house_style
def plot_routes(routes: pd.DataFrame, title: str | None = None) -> plt.Figure:
    """The route comparison: each route's silhouette in the scaled profile space (the same space
    for every route) and its bootstrap ARI (mean ± 1 sd); kept routes in colour, others grey."""
    n = len(routes)
    fig, axes = P.figure(1, 2, height=P.rows_height(n, extra=1.6))
    labels = [f"{r}\n(kept)" if kept else r for r, kept in zip(routes["route"], routes["kept"])]
    colours = ["tab:blue" if kept else "0.55" for kept in routes["kept"]]
    P.interval_rows(
        axes[0][0], labels, routes["silhouette"], None, None, colours, "silhouette in the profile space"
    )
    ari, std = routes["bootstrap_ari"], routes["bootstrap_ari_std"]
    P.interval_rows(axes[0][1], labels, ari, ari - std, ari + std, colours, "bootstrap adjusted Rand index")
    axes[0][1].set_yticklabels([])
    for ax in axes[0]:
        ax.set_ylim(-0.6, n - 0.4)
    low = float(routes["silhouette"].min())
    axes[0][0].set_xlim(left=min(0.0, low - 0.01))
    k = sorted(set(routes["k"]))
    fig.suptitle(title or f"Segment routes at k = {', '.join(map(str, k))}", fontweight="bold")
    return fig
