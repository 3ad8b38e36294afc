"""Figures of results (matplotlib): metric against K, learning curves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd


def metric_vs_k(
    long: pd.DataFrame,
    metrics: tuple[str, ...] = ("ndcg", "map"),
    slice_name: str = "all",
    title: str | None = None,
):
    """One panel per metric: mean and 95% interval against K, a line per model."""
    data = long[(long["slice"] == slice_name) & long["metric"].isin(metrics)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sub = data[data["metric"] == metric]
        for model, rows in sub.groupby("model", sort=False):
            rows = rows.sort_values("k")
            err = [rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]]
            ax.errorbar(rows["k"], rows["mean"], yerr=err, marker="o", capsize=3, label=model)
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric.upper()}@K")
        ax.set_xticks(sorted(sub["k"].unique()))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def learning_curve(history: list[dict], title: str = ""):
    """Training loss and validation metric per epoch (two y-axes)."""
    frame = pd.DataFrame(history)
    fig, ax = plt.subplots(figsize=(6, 4))
    if "train_loss" in frame:
        ax.plot(frame["epoch"], frame["train_loss"], color="tab:blue", label="train loss")
        ax.set_ylabel("train loss", color="tab:blue")
    ax.set_xlabel("epoch")
    valid_cols = [c for c in frame.columns if c.startswith("valid_")]
    if valid_cols:
        ax2 = ax.twinx()
        rows = frame.dropna(subset=valid_cols)
        ax2.plot(rows["epoch"], rows[valid_cols[0]], color="tab:orange", marker="o", label=valid_cols[0])
        ax2.set_ylabel(valid_cols[0], color="tab:orange")
    ax.set_title(title)
    fig.tight_layout()
    return fig
