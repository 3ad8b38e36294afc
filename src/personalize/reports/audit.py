"""Figures of the data audit (notebook 01), drawn from :mod:`personalize.data.audit`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from personalize import plotting as P
from personalize.data import audit
from personalize.data.ingest import Dataset


@P.house_style
def plot_quarantine(dataset: Dataset):
    """Quarantined rows per table and reason (or a note that none was)."""
    table = audit.quarantine_reasons(dataset)
    fig, axes = P.figure(height=P.rows_height(max(1, len(table))))
    ax = axes[0][0]
    if table.empty:
        ax.text(0.5, 0.5, "no row was quarantined", ha="center", va="center")
        ax.set_axis_off()
    else:
        ax.barh(table["table"] + ": " + table["reason"], table["rows"], color="tab:red")
        ax.set_xlabel("rows quarantined")
        P.integer_ticks(ax)
    ax.set_title("Quarantined rows by reason")
    return fig


@P.house_style
def plot_distributions(dataset: Dataset):
    """How many users (items) have n interactions, on log-log axes: the heavy tails."""
    fig, axes = P.figure(1, 2, height=3.4)
    for ax, key, what in ((axes[0][0], "user_id", "users"), (axes[0][1], "item_id", "items")):
        counts = audit.per_entity_counts(dataset, key)
        freq = counts.value_counts().sort_index()
        ax.scatter(freq.index, freq.to_numpy(), s=8, color="tab:blue")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("interactions (log scale)")
        ax.set_ylabel(f"{what} with that many (log scale)")
        ax.set_title(f"Interactions per {what[:-1]} (median {counts.median():g})")
    return fig


@P.house_style
def plot_long_tail(dataset: Dataset):
    """Cumulative share of interactions against the share of the catalogue, most popular first."""
    tail = audit.long_tail(dataset)
    share = audit.head_share(dataset)
    fig, axes = P.figure(height=3.4)
    ax = axes[0][0]
    ax.plot(tail["rank"] / len(dataset.items), tail["cumulative_share"], color="tab:blue")
    ax.axvline(0.2, color="0.5", ls="--", lw=1)
    ax.annotate(
        f"top 20% of items: {share:.0%} of interactions",
        (0.2, share),
        xytext=(0.3, share - 0.2),
        arrowprops={"arrowstyle": "->", "color": "0.4"},
    )
    ax.set_xlabel("share of the catalogue (most popular items first)")
    ax.set_ylabel("share of all interactions")
    ax.set_title("The popularity long tail")
    return fig


@P.house_style
def plot_activity(dataset: Dataset):
    """Interactions per month (bars) and active users (line); partial months hatched."""
    act = audit.activity_by_month(dataset)
    fig, axes = P.figure(height=3.6)
    ax = axes[0][0]
    x = np.arange(len(act))
    bars = ax.bar(x, act["interactions"], color="tab:blue", label="interactions")
    for bar, partial in zip(bars, act["partial"]):
        if partial:
            bar.set_hatch("//")
            bar.set_alpha(0.5)
    ax.set_xticks(x, act["month"].astype(str), rotation=45, ha="right")
    ax.set_ylabel("interactions per month")
    right = ax.twinx()
    right.grid(False)
    right.plot(x, act["active_users"], color="tab:orange", marker="o", ms=3, label="active users")
    right.set_ylabel("active users per month")
    from matplotlib.patches import Patch

    handles = [
        bars,
        *right.get_lines(),
        Patch(facecolor="white", edgecolor="0.3", hatch="//", label="partial month"),
    ]
    fig.legend(
        handles=handles,
        labels=["interactions", "active users", "partial month (not comparable)"],
        loc="outside right upper",
    )
    ax.set_title("Activity over time (UTC months)")
    return fig


@P.house_style
def plot_ratings(dataset: Dataset):
    """Interactions per rating value."""
    dist = audit.rating_distribution(dataset)
    fig, axes = P.figure(height=3.2, width=5.5)
    ax = axes[0][0]
    ax.bar(dist["rating"].astype(str), dist["interactions"], color="tab:blue")
    ax.set_xlabel("rating")
    ax.set_ylabel("interactions")
    ax.set_title("Ratings")
    return fig


@P.house_style
def plot_demographics(dataset: Dataset):
    """Users per age band, gender, occupation and region (zip prefix)."""
    tables = audit.demographics(dataset)
    if not tables:
        return None
    n = len(tables)
    fig, axes = P.figure(1, n, width=P.WIDTH + 2.5, height=3.8)
    for ax, (name, counts) in zip(axes[0], tables.items()):
        counts = counts.sort_values() if name == "occupation" else counts[::-1]
        ax.barh(counts.index.astype(str), counts.to_numpy(), color="tab:blue")
        ax.set_xlabel("users")
        ax.set_title(name)
        ax.tick_params(axis="y", labelsize=7.5)
        ax.grid(axis="y", alpha=0)
    fig.suptitle("Who the users are")
    return fig


@P.house_style
def plot_catalogue(dataset: Dataset):
    """Items and interactions per genre, and per release decade."""
    genres, years = audit.genre_coverage(dataset), audit.year_coverage(dataset)
    fig, axes = P.figure(1, 2, width=P.WIDTH + 1.5, height=4.2)
    for ax, table, key, title in (
        (axes[0][0], genres, "genre", "Genres"),
        (axes[0][1], years, "years", "Release years"),
    ):
        if table.empty:
            ax.set_axis_off()
            continue
        table = table.iloc[::-1] if key == "genre" else table
        y = np.arange(len(table))
        ax.barh(y - 0.2, table["items"] / table["items"].sum(), 0.4, label="share of items", color="tab:gray")
        ax.barh(
            y + 0.2,
            table["interactions"] / table["interactions"].sum(),
            0.4,
            label="share of interactions",
            color="tab:blue",
        )
        ax.set_yticks(y, table[key].astype(str))
        ax.tick_params(axis="y", labelsize=7.5)
        ax.set_xlabel("share")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0)
    P.legend_outside(fig, axes[0][0])
    fig.suptitle("What the catalogue holds and what users watch")
    return fig


@P.house_style
def plot_cold_users(table: pd.DataFrame):
    """Test users per split, and how many of them are cold against each reference."""
    fig, axes = P.figure(height=3.6)
    ax = axes[0][0]
    x = np.arange(len(table))
    w = 0.27
    ax.bar(x - w, table["test users"], w, label="test users", color="tab:gray")
    ax.bar(x, table["cold vs train"], w, label="cold vs train (validation's reference)", color="tab:orange")
    ax.bar(
        x + w,
        table["cold vs train+valid"],
        w,
        label="cold vs train + validation (test's reference)",
        color="tab:red",
    )
    ax.set_xticks(x, table["split"], rotation=15)
    ax.set_ylabel("users")
    P.integer_ticks(ax, "y")
    P.legend_outside(fig, ax, below=True)
    ax.set_title("Test users each split leaves cold")
    return fig


@P.house_style
def plot_id_consistency(dataset: Dataset):
    """The ID-consistency report as bars: what matched across the tables and sources, and what
    did not (zero bars are labelled, so a clean report reads as clean)."""
    table = audit.id_consistency(dataset)
    labels = table["check"].str.replace(r" \(e\.g\. .*\)$", "", regex=True).str.strip()
    fig, axes = P.figure(height=P.rows_height(len(table)))
    ax = axes[0][0]
    y = np.arange(len(table))[::-1]
    ax.barh(y, table["count"], color="tab:purple")
    ax.set_yticks(y, labels)
    for yi, count in zip(y, table["count"]):
        ax.annotate(f"{count:,}", (count, yi), xytext=(3, 0), textcoords="offset points", va="center")
    ax.set_xlabel("IDs")
    P.integer_ticks(ax)
    ax.set_title("ID consistency across tables and sources")
    return fig


@P.house_style
def plot_events(dataset: Dataset):
    """Accepted interactions per event type, labelled with the type's training weight and
    whether it counts as relevant."""
    table = audit.events_by_source(dataset)
    fig, axes = P.figure(height=P.rows_height(len(table), extra=1.6), width=7.5)
    ax = axes[0][0]
    y = np.arange(len(table))[::-1]
    colours = np.where(table["relevant"], "tab:green", "tab:gray")
    ax.barh(y, table["interactions"], color=colours)
    ax.set_yticks(y, table["event"])
    for yi, row in zip(y, table.itertuples()):
        note = f"{row.interactions:,}  (weight {row.weight:g}{', relevant' if row.relevant else ''})"
        ax.annotate(note, (row.interactions, yi), xytext=(3, 0), textcoords="offset points", va="center")
    ax.set_xlabel("accepted interactions")
    ax.set_xlim(0, table["interactions"].max() * 1.6)
    ax.set_title("Event types: how many, how they train, which are relevant")
    return fig
