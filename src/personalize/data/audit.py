"""A data audit: what ingestion accepted and quarantined, and the shape of the data
(sparsity, the popularity long tail, activity over time, ratings, cold users per split).

Tables are plain DataFrames; each ``plot_*`` function returns a matplotlib figure.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from personalize.config import SplitConfig
from personalize.core import columns as C
from personalize.data.ingest import Dataset
from personalize.data.splits import RULES, make_split

SPLITS: tuple[str, ...] = tuple(RULES)


def overview(dataset: Dataset) -> pd.DataFrame:
    """Users, items, interactions, density, time span and rating scale, one row per fact."""
    inter = dataset.interactions
    facts = dataset.describe()
    facts["first interaction (UTC)"] = str(inter[C.TIMESTAMP].min())
    facts["last interaction (UTC)"] = str(inter[C.TIMESTAMP].max())
    per_user = inter.groupby(C.USER).size()
    per_item = inter.groupby(C.ITEM).size()
    facts["interactions per user (median)"] = float(per_user.median())
    facts["interactions per item (median)"] = float(per_item.median())
    facts["fingerprint"] = dataset.fingerprint[:16]
    return pd.DataFrame({"value": facts}).rename_axis("fact").reset_index()


def quarantine_reasons(dataset: Dataset) -> pd.DataFrame:
    """Quarantined rows per table and reason (a row with several reasons counts for each)."""
    rows = [
        {"table": role, "reason": reason, "rows": n}
        for role, rep in dataset.report.tables.items()
        for reason, n in rep.reasons.items()
    ]
    return pd.DataFrame(rows, columns=["table", "reason", "rows"])


def long_tail(dataset: Dataset) -> pd.DataFrame:
    """Items by popularity rank with their share and the cumulative share of interactions."""
    counts = dataset.interactions.groupby(C.ITEM).size().sort_values(ascending=False)
    total = counts.sum()
    return pd.DataFrame(
        {
            C.ITEM: counts.index,
            "interactions": counts.to_numpy(),
            "rank": np.arange(1, len(counts) + 1),
            "cumulative_share": counts.cumsum().to_numpy() / total,
        }
    )


def head_share(dataset: Dataset, top_fraction: float = 0.2) -> float:
    """Share of interactions that go to the most popular ``top_fraction`` of catalogue items."""
    tail = long_tail(dataset)
    n = max(1, round(top_fraction * len(dataset.items)))
    return float(tail["interactions"].iloc[:n].sum() / tail["interactions"].sum())


def activity_by_month(dataset: Dataset) -> pd.DataFrame:
    """Interactions and active users per calendar month (UTC)."""
    inter = dataset.interactions
    month = inter[C.TIMESTAMP].dt.tz_convert("UTC").dt.tz_localize(None).dt.to_period("M")
    return (
        inter.assign(month=month)
        .groupby("month")
        .agg(interactions=(C.ITEM, "size"), active_users=(C.USER, "nunique"))
        .reset_index()
    )


def rating_distribution(dataset: Dataset) -> pd.DataFrame:
    if C.RATING not in dataset.interactions.columns:
        return pd.DataFrame(columns=[C.RATING, "interactions"])
    counts = dataset.interactions[C.RATING].value_counts().sort_index()
    return pd.DataFrame({C.RATING: counts.index, "interactions": counts.to_numpy()})


def cold_users_by_split(dataset: Dataset, seed: int = 0) -> pd.DataFrame:
    """For each protocol split: test users, and how many have no training interactions (cold),
    counted against train alone and against train + validation."""
    rows = []
    for name in SPLITS:
        split = make_split(dataset.interactions, SplitConfig(name=name), seed, dataset.users, dataset.items)
        s = split.summary()
        rows.append(
            {
                "split": name,
                "train rows": s["train_rows"],
                "valid rows": s["valid_rows"],
                "test rows": s["test_rows"],
                "test users": s["test_users"],
                "cold vs train": s["test_users_cold_vs_train"],
                "cold vs train+valid": s["test_users_cold"],
            }
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------- plots


def plot_quarantine(dataset: Dataset):
    table = quarantine_reasons(dataset)
    fig, ax = plt.subplots(figsize=(7, 3))
    if table.empty:
        ax.text(0.5, 0.5, "no row quarantined", ha="center", va="center")
        ax.set_axis_off()
    else:
        labels = table["table"] + ": " + table["reason"]
        ax.barh(labels, table["rows"])
        ax.set_xlabel("rows")
    ax.set_title("Quarantined rows by reason")
    fig.tight_layout()
    return fig


def plot_long_tail(dataset: Dataset):
    tail = long_tail(dataset)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(tail["rank"], tail["interactions"])
    a.set_yscale("log")
    a.set_xlabel("item popularity rank")
    a.set_ylabel("interactions (log)")
    a.set_title("Popularity long tail")
    b.plot(tail["rank"] / len(dataset.items), tail["cumulative_share"])
    b.axvline(0.2, color="grey", ls="--")
    b.set_xlabel("share of catalogue (most popular first)")
    b.set_ylabel("share of interactions")
    b.set_title(f"Top 20% of items take {head_share(dataset):.0%} of interactions")
    fig.tight_layout()
    return fig


def plot_activity(dataset: Dataset):
    act = activity_by_month(dataset)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = act["month"].astype(str)
    ax.bar(x, act["interactions"], color="tab:blue")
    ax.set_ylabel("interactions", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(x, act["active_users"], color="tab:orange", marker="o")
    ax2.set_ylabel("active users", color="tab:orange")
    ax.set_title("Activity over time (UTC months)")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def plot_ratings(dataset: Dataset):
    dist = rating_distribution(dataset)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(dist[C.RATING].astype(str), dist["interactions"])
    ax.set_xlabel("rating")
    ax.set_ylabel("interactions")
    ax.set_title("Rating distribution")
    fig.tight_layout()
    return fig


def plot_cold_users(table: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["test users"], width=0.4, label="test users")
    ax.bar(x + 0.2, table["cold vs train"], width=0.4, label="cold (no train interactions)")
    ax.set_xticks(x, table["split"], rotation=20)
    ax.set_ylabel("users")
    ax.set_title("Test users each split leaves cold")
    ax.legend()
    fig.tight_layout()
    return fig
