"""Figures of results in the house style (:mod:`personalize.plotting`): a metric against K,
learning curves."""

from __future__ import annotations

import pandas as pd

from personalize import plotting as P


@P.house_style
def metric_vs_k(
    long: pd.DataFrame,
    metrics: tuple[str, ...] = ("ndcg", "map"),
    slice_name: str = "all",
    title: str | None = None,
):
    """One panel per metric: the test mean and its 95% interval over users against K, a line per
    model (legend right of the panels)."""
    data = long[(long["slice"] == slice_name) & long["metric"].isin(metrics)]
    fig, axes = P.figure(1, len(metrics), width=P.WIDTH + 1.5, height=3.6, sharey=False)
    for ax, metric in zip(axes[0], metrics):
        sub = data[data["metric"] == metric]
        for model, rows in sub.groupby("model", sort=False):
            rows = rows.sort_values("k")
            err = [rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]]
            ax.errorbar(rows["k"], rows["mean"], yerr=err, marker="o", ms=4, capsize=2, label=model)
        ax.set_xlabel("K (list length)")
        ax.set_ylabel(f"test {metric.upper()}@K")
        ax.set_xticks(sorted(sub["k"].unique()))
    P.legend_outside(fig, axes[0][0], "model")
    fig.suptitle(title or f"{' and '.join(m.upper() for m in metrics)} against K ({slice_name} users)")
    return fig


@P.house_style
def learning_curve(history: list[dict], title: str = ""):
    """Training loss (left axis) and the validation metric (right axis) per epoch."""
    frame = pd.DataFrame(history)
    fig, axes = P.figure(height=3.6)
    ax = axes[0][0]
    handles = []
    if "train_loss" in frame:
        handles += ax.plot(frame["epoch"], frame["train_loss"], color="tab:blue", label="training loss")
        ax.set_ylabel("training loss (mean per batch)")
    ax.set_xlabel("epoch")
    P.integer_ticks(ax)
    valid_cols = [c for c in frame.columns if c.startswith("valid_")]
    if valid_cols:
        right = ax.twinx()
        right.grid(False)
        rows = frame.dropna(subset=valid_cols)
        label = valid_cols[0].replace("valid_", "validation ").replace("_at_", "@")
        handles += right.plot(
            rows["epoch"], rows[valid_cols[0]], color="tab:orange", marker="o", ms=3, label=label
        )
        right.set_ylabel(label)
    if handles:
        fig.legend(handles=handles, loc="outside right upper")
    ax.set_title(title or "Learning curve")
    return fig
