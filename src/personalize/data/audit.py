"""A data audit: what ingestion accepted and quarantined, and the shape of the data
(sparsity, the popularity long tail, activity per user and item, activity over time, ratings,
demographics, the catalogue's genres and years, cold users per split).

Every function returns a plain DataFrame (or a number); the figures of notebook 01 are drawn
from them by :mod:`personalize.reports.audit`.
"""

from __future__ import annotations

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
    """Interactions and active users per calendar month (UTC), with the days of the month the
    data covers: the first and last months are usually partial (``partial``), so their counts
    are not comparable with full months."""
    inter = dataset.interactions
    stamps = inter[C.TIMESTAMP].dt.tz_convert("UTC").dt.tz_localize(None)
    table = (
        inter.assign(month=stamps.dt.to_period("M"))
        .groupby("month")
        .agg(interactions=(C.ITEM, "size"), active_users=(C.USER, "nunique"))
        .reset_index()
    )
    first, last = stamps.min(), stamps.max()
    days = table["month"].map(lambda m: m.days_in_month).astype(int)
    covered = days.copy()
    if len(table):
        covered.iloc[0] = days.iloc[0] - first.day + 1
        covered.iloc[-1] = last.day if len(table) > 1 else last.day - first.day + 1
    table["days covered"] = covered.to_numpy()
    table["partial"] = table["days covered"] < days
    return table


def per_entity_counts(dataset: Dataset, key: str) -> pd.Series:
    """Interactions per user (``key="user_id"``) or per item, over the entities that have any."""
    return dataset.interactions.groupby(key).size()


def relevance(dataset: Dataset, min_rating: float | None = None) -> pd.DataFrame:
    """Which ratings count as relevant in evaluation: every interaction by default (binary
    relevance), or ratings >= ``min_rating`` (``evaluation.min_rating``)."""
    inter = dataset.interactions
    if C.RATING not in inter.columns:
        return pd.DataFrame({"rule": ["every interaction"], "relevant share": [1.0]})
    ratings = inter[C.RATING]
    rows = [{"rule": "every interaction (default)", "relevant share": 1.0}]
    thresholds = [min_rating] if min_rating is not None else sorted(ratings.dropna().unique())[1:]
    for t in thresholds:
        rows.append({"rule": f"rating >= {t:g}", "relevant share": float((ratings >= t).mean())})
    return pd.DataFrame(rows)


def demographics(dataset: Dataset) -> dict[str, pd.Series]:
    """Users per value of each user attribute present (age in bands, gender, occupation,
    region = the zip code's first digit), missing values counted as "(missing)"."""
    users = dataset.users
    out: dict[str, pd.Series] = {}
    if C.AGE in users.columns:
        bands = pd.cut(
            users[C.AGE],
            [0, 18, 25, 35, 45, 50, 56, 200],
            right=False,
            labels=["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"],
        )
        out["age"] = bands.value_counts(sort=False, dropna=False).rename(index={np.nan: "(missing)"})
    for col, name in ((C.GENDER, "gender"), (C.OCCUPATION, "occupation")):
        if col in users.columns:
            out[name] = users[col].fillna("(missing)").value_counts()
    if C.ZIP in users.columns:
        region = users[C.ZIP].astype("string").str.slice(0, 1)
        out["region (zip prefix)"] = region.fillna("(missing)").value_counts().sort_index()
    return out


def genre_coverage(dataset: Dataset) -> pd.DataFrame:
    """Per genre: catalogue items and interactions (an item counts once per genre it has)."""
    items = dataset.items
    if C.GENRES not in items.columns:
        return pd.DataFrame(columns=["genre", "items", "interactions"])
    lists = items[[C.ITEM, C.GENRES]].copy()
    lists[C.GENRES] = lists[C.GENRES].map(
        lambda v: list(v) if isinstance(v, (list, tuple, np.ndarray)) else ["(none)"]
    )
    exploded = lists.explode(C.GENRES)
    counts = per_entity_counts(dataset, C.ITEM)
    exploded["interactions"] = exploded[C.ITEM].map(counts).fillna(0).astype(int)
    table = exploded.groupby(C.GENRES).agg(items=(C.ITEM, "size"), interactions=("interactions", "sum"))
    return table.sort_values("interactions", ascending=False).rename_axis("genre").reset_index()


def year_coverage(dataset: Dataset, width: int = 10) -> pd.DataFrame:
    """Catalogue items and interactions per release-year bucket (``width`` years)."""
    items = dataset.items
    if C.YEAR not in items.columns:
        return pd.DataFrame(columns=["years", "items", "interactions"])
    counts = per_entity_counts(dataset, C.ITEM)
    year = pd.to_numeric(items[C.YEAR], errors="coerce")
    start = (year // width * width).astype("Int64")
    label = start.map(lambda y: "(missing)" if pd.isna(y) else f"{y}-{y + width - 1}")
    frame = pd.DataFrame({"years": label, "interactions": items[C.ITEM].map(counts).fillna(0).astype(int)})
    table = frame.groupby("years").agg(items=("years", "size"), interactions=("interactions", "sum"))
    return table.reset_index()


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


def id_consistency(dataset: Dataset) -> pd.DataFrame:
    """The ID-consistency report: how the users, items and event sources fit together (users
    with events but no users-table row, users-table users without events, item IDs outside the
    catalogue, IDs written several ways), one row per check."""
    return dataset.report.ids.summary()


def events_by_source(dataset: Dataset) -> pd.DataFrame:
    """Accepted interactions per event type, with the type's training weight and whether it is
    relevant (one row per type; a dataset without event types has one row, 'interaction')."""
    inter = dataset.interactions
    if C.EVENT not in inter.columns or dataset.events is None:
        return pd.DataFrame(
            {
                "event": ["interaction"],
                "interactions": [len(inter)],
                "users": [inter[C.USER].nunique()],
                "weight": [1.0],
                "relevant": [True],
            }
        )
    grouped = inter.groupby(C.EVENT, observed=True)
    out = pd.DataFrame({"interactions": grouped.size(), "users": grouped[C.USER].nunique()})
    out = out.rename_axis("event").reset_index()
    out["weight"] = out["event"].map(dataset.events.weights)
    out["relevant"] = out["event"].isin(dataset.events.relevant)
    return out.sort_values("interactions", ascending=False, kind="stable").reset_index(drop=True)
