"""One ingestion path for every dataset: read -> parse -> validate -> de-duplicate ->
check IDs across tables -> accepted tables + quarantine -> fingerprint -> data/processed/.

Raw inputs are never modified. Every input row is either accepted or quarantined with its
reasons, and ``accepted + quarantined == input rows`` for every table (checked here, so that a
bug cannot drop data silently).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from personalize.config.data import DataConfig, TableSource
from personalize.core import columns as C
from personalize.core.errors import DataError
from personalize.core.paths import processed_dir
from personalize.data.movielens import movielens_100k_config
from personalize.data.readers import ROW, read_table
from personalize.data.validate import (
    LIST_ATTRIBUTES,
    NUMERIC_ATTRIBUTES,
    Issues,
    TableReport,
    attributes_schema,
    ids_are_integers,
    interactions_schema,
    now_utc,
    parse_ids,
    parse_list,
    parse_number,
    parse_timestamps,
    schema_failures,
)

QUARANTINE_COLUMNS = [C.Q_TABLE, C.Q_SOURCE, C.Q_ROW, C.Q_REASON, "detail", C.Q_VALUES]


@dataclass
class IngestReport:
    """Per-table counts and reasons; printed by the CLI and logged with every run."""

    tables: dict[str, TableReport] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {role: rep.to_dict() for role, rep in self.tables.items()}

    def summary(self) -> pd.DataFrame:
        """One row per table: input rows, accepted, quarantined, and the reasons."""
        rows = []
        for role, rep in self.tables.items():
            rows.append(
                {
                    "table": role,
                    "input_rows": rep.input_rows,
                    "accepted": rep.accepted,
                    "quarantined": rep.quarantined,
                    "sampled_out": rep.sampled_out,
                    "reasons": ", ".join(f"{k} ({v})" for k, v in rep.reasons.most_common()) or "-",
                    "values_set_missing": ", ".join(f"{k} ({v})" for k, v in rep.nulled.items()) or "-",
                }
            )
        return pd.DataFrame(rows)


@dataclass(frozen=True)
class Dataset:
    """Validated tables of one dataset.

    ``interactions``: user_id, item_id, timestamp (UTC), [rating], [weight], [event], sorted in
    the protocol's total order (timestamp, item_id, user_id). ``users`` and ``items`` hold every
    known user and item (the item table is the catalogue). IDs are int64 when every ID of that
    kind is an integer, otherwise strings.
    """

    name: str
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    quarantine: pd.DataFrame
    report: IngestReport
    fingerprint: str
    processed_path: Path | None = None

    def describe(self) -> dict[str, float]:
        n_users = self.interactions[C.USER].nunique()
        n_items = self.interactions[C.ITEM].nunique()
        n = len(self.interactions)
        return {
            "interactions": n,
            "users": len(self.users),
            "items": len(self.items),
            "users_with_interactions": n_users,
            "items_with_interactions": n_items,
            "density": n / max(1, len(self.users) * len(self.items)),
            "quarantined": len(self.quarantine),
        }


def ingest(config: DataConfig) -> Dataset:
    """Ingest the tables ``config`` names (or MovieLens-100K) into a validated :class:`Dataset`."""
    if config.source == "movielens-100k":
        config = movielens_100k_config(
            write_processed=config.write_processed, sample_users=config.sample_users
        )
    name = config.name or config.interactions.path.stem
    now = now_utc()
    sources: dict[str, TableSource] = {
        role: src
        for role, src in (
            ("users", config.users),
            ("items", config.items),
            ("interactions", config.interactions),
        )
        if src is not None
    }
    raw = {role: read_table(src, role) for role, src in sources.items()}

    report = IngestReport()
    accepted: dict[str, pd.DataFrame] = {}
    quarantined: list[pd.DataFrame] = []
    issues: dict[str, Issues] = {}
    for role in ("users", "items"):
        if role in raw:
            key = C.USER if role == "users" else C.ITEM
            accepted[role], issues[role], nulled = _clean_entities(raw[role], role, key, sources[role])
            report.tables[role] = TableReport(role, raw[role].attrs["source"], len(raw[role]))
            report.tables[role].nulled.update(nulled)

    frame, issues["interactions"] = _clean_interactions(raw["interactions"], config, now)
    report.tables["interactions"] = TableReport(
        "interactions", raw["interactions"].attrs["source"], len(raw["interactions"])
    )
    # IDs must exist in the users / items tables when those are given
    inter_issues = issues["interactions"]
    for role, key in (("users", C.USER), ("items", C.ITEM)):
        if role in accepted:
            known = frame[key].isin(accepted[role][key]).to_numpy()
            unknown = ~known & frame[key].notna().to_numpy()
            inter_issues.add(
                unknown,
                f"{key}: not in {role} table",
                key + " '" + frame[key] + f"' is not in the {role} table",
            )
    bad = inter_issues.bad()
    _mark_exact_duplicates(frame, inter_issues, ~bad, [c for c in frame.columns if c != ROW])
    bad = inter_issues.bad()
    accepted["interactions"] = frame.loc[~bad].drop(columns=[ROW])

    for role, table_issues in issues.items():
        q = _quarantine_rows(raw[role], table_issues, role)
        quarantined.append(q)
        rep = report.tables[role]
        rep.quarantined = len(q)
        rep.accepted = len(accepted[role])
        for reason in q[C.Q_REASON]:
            for kind in reason.split("; "):
                rep.reasons[kind] += 1
        if rep.accepted + rep.quarantined != rep.input_rows:  # pragma: no cover - invariant
            raise AssertionError(f"{role}: accepted + quarantined != input rows")
        if rep.accepted == 0:
            raise DataError(
                f"{role} file {rep.source}: no row passed validation "
                f"({rep.quarantined} quarantined: {dict(rep.reasons)})"
            )

    interactions, users, items = _finalise(accepted, sources)
    if config.sample_users is not None:
        interactions, users = _sample_users(interactions, users, config.sample_users, report)
    quarantine = (
        pd.concat(quarantined, ignore_index=True) if quarantined else pd.DataFrame(columns=QUARANTINE_COLUMNS)
    )
    fingerprint = fingerprint_tables(interactions, users, items)
    dataset = Dataset(name, interactions, users, items, quarantine, report, fingerprint)
    if config.write_processed:
        dataset = write_processed(dataset)
    return dataset


def load_movielens_100k(write_processed: bool = True, sample_users: int | None = None) -> Dataset:
    """Ingest ML-100K (shipped in the recbole wheel) through the standard validated path."""
    return ingest(movielens_100k_config(write_processed=write_processed, sample_users=sample_users))


# ----------------------------------------------------------------------------- per table


def _clean_entities(
    raw: pd.DataFrame, role: str, key: str, source: TableSource
) -> tuple[pd.DataFrame, Issues, dict[str, int]]:
    frame = raw.copy()
    issues = Issues(len(frame))
    frame[key] = parse_ids(frame[key], key, issues)
    nulled: dict[str, int] = {}
    for col in frame.columns:
        if col in NUMERIC_ATTRIBUTES:
            numbers = parse_number(frame[col], col, issues, required=False)
            lost = int((numbers.isna() & frame[col].notna()).sum())
            frame[col] = numbers
            if lost:
                nulled[f"{col}: not a number"] = lost
    for _, case in schema_failures(attributes_schema(), frame).iterrows():
        frame.loc[int(case["index"]), case["column"]] = np.nan
        label = f"{case['column']}: {case['check']}"
        nulled[label] = nulled.get(label, 0) + 1
    for col in frame.columns:
        if col in LIST_ATTRIBUTES:
            frame[col] = parse_list(frame[col], source.list_separator)
    ok = ~issues.bad()
    compare = [c for c in frame.columns if c != ROW]
    _mark_exact_duplicates(frame, issues, ok, compare)
    ok = ~issues.bad()
    # same key, different values: keep the first, quarantine the rest
    first_row = frame.loc[ok].groupby(key, sort=False)[ROW].transform("first")
    repeat = np.zeros(len(frame), dtype=bool)
    repeat[np.flatnonzero(ok)] = (first_row != frame.loc[ok, ROW]).to_numpy()
    detail = pd.Series("", index=frame.index, dtype="string")
    detail.loc[first_row.index] = (
        key
        + " '"
        + frame.loc[first_row.index, key]
        + "' already defined at row "
        + first_row.astype("string")
    )
    issues.add(repeat, f"{key}: defined twice", detail)
    accepted = frame.loc[~issues.bad()].drop(columns=[ROW])
    return accepted, issues, nulled


def _clean_interactions(
    raw: pd.DataFrame, config: DataConfig, now: pd.Timestamp
) -> tuple[pd.DataFrame, Issues]:
    frame = raw.copy()
    issues = Issues(len(frame))
    frame[C.USER] = parse_ids(frame[C.USER], C.USER, issues)
    frame[C.ITEM] = parse_ids(frame[C.ITEM], C.ITEM, issues)
    frame[C.TIMESTAMP] = parse_timestamps(frame[C.TIMESTAMP], config.timestamp, issues)
    for col in (C.RATING, C.WEIGHT):
        if col in frame.columns:
            frame[col] = parse_number(frame[col], col, issues, required=True)
    for _, case in schema_failures(interactions_schema(config, now), frame).iterrows():
        pos = int(case["index"])
        mask = np.zeros(len(frame), dtype=bool)
        mask[pos] = True
        issues.add(
            mask,
            f"{case['column']}: {case['check']}",
            f"{case['column']} {case['failure_case']} is {case['check']}",
        )
    return frame, issues


def _mark_exact_duplicates(
    frame: pd.DataFrame, issues: Issues, candidates: np.ndarray, columns: list[str]
) -> None:
    """Quarantine rows identical (after parsing) to an earlier valid row, keeping the first."""
    if not candidates.any():
        return
    canon = _canonical(frame.loc[candidates, columns])
    group = canon.groupby(columns, dropna=False, sort=False).ngroup().to_numpy()
    rows = frame.loc[candidates, ROW].to_numpy()
    first = pd.Series(rows).groupby(group).transform("first").to_numpy()
    dup = first != rows
    if not dup.any():
        return
    positions = np.flatnonzero(candidates)[dup]
    mask = np.zeros(len(frame), dtype=bool)
    mask[positions] = True
    detail = pd.Series("", index=frame.index, dtype="string")
    detail.iloc[positions] = [f"exact duplicate of row {r}" for r in first[dup]]
    issues.add(mask, "exact duplicate", detail)


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """List values (genres) as joined strings, so that rows can be hashed and compared."""
    return frame.apply(
        lambda col: (
            col.map(lambda v: "|".join(map(str, v)) if isinstance(v, list) else v)
            if col.dtype == object
            else col
        )
    )


def _quarantine_rows(raw: pd.DataFrame, issues: Issues, role: str) -> pd.DataFrame:
    bad = np.flatnonzero(issues.bad())
    if not len(bad):
        return pd.DataFrame({c: pd.Series(dtype="object") for c in QUARANTINE_COLUMNS})
    rows = raw.iloc[bad]
    values = [
        json.dumps({k: (None if pd.isna(v) else str(v)) for k, v in rec.items() if k != ROW})
        for rec in rows.to_dict(orient="records")
    ]
    return pd.DataFrame(
        {
            C.Q_TABLE: role,
            C.Q_SOURCE: raw.attrs["source"],
            C.Q_ROW: rows[ROW].to_numpy(),
            C.Q_REASON: ["; ".join(issues.kinds[i]) for i in bad],
            "detail": ["; ".join(issues.details[i]) for i in bad],
            C.Q_VALUES: values,
        }
    )


def _finalise(
    accepted: dict[str, pd.DataFrame], sources: dict[str, TableSource]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    inter = accepted["interactions"]
    users = accepted.get("users")
    items = accepted.get("items")
    if users is None:
        users = pd.DataFrame({C.USER: inter[C.USER].drop_duplicates().to_numpy()})
    if items is None:
        items = pd.DataFrame({C.ITEM: inter[C.ITEM].drop_duplicates().to_numpy()})
    for key in (C.USER, C.ITEM):
        table = users if key == C.USER else items
        ints = ids_are_integers(table[key]) and ids_are_integers(inter[key])
        dtype = "int64" if ints else "string"
        table[key] = table[key].astype(dtype)
        inter[key] = inter[key].astype(dtype)
    users = users.sort_values(C.USER, kind="stable").reset_index(drop=True)
    items = items.sort_values(C.ITEM, kind="stable").reset_index(drop=True)
    inter = inter.sort_values([C.TIMESTAMP, C.ITEM, C.USER], kind="stable").reset_index(drop=True)
    return inter, users, items


def _sample_users(
    interactions: pd.DataFrame, users: pd.DataFrame, n: int, report: IngestReport
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded random sample of ``n`` users with interactions; the rest counted as sampled out."""
    candidates = np.sort(interactions[C.USER].unique())
    if n >= len(candidates):
        return interactions, users
    keep = np.random.default_rng(0).choice(candidates, size=n, replace=False)
    kept_inter = interactions[interactions[C.USER].isin(keep)].reset_index(drop=True)
    kept_users = users[users[C.USER].isin(keep)].reset_index(drop=True)
    report.tables["interactions"].sampled_out = len(interactions) - len(kept_inter)
    if "users" in report.tables:
        report.tables["users"].sampled_out = len(users) - len(kept_users)
    return kept_inter, kept_users


# ------------------------------------------------------------------------- fingerprinting


def fingerprint_tables(*tables: pd.DataFrame) -> str:
    """SHA-256 over the content (column names, values, order) of the accepted tables."""
    digest = hashlib.sha256()
    for table in tables:
        digest.update(json.dumps(list(map(str, table.columns))).encode())
        canonical = _canonical(table)
        digest.update(pd.util.hash_pandas_object(canonical, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def write_processed(dataset: Dataset, root: Path | None = None) -> Dataset:
    """Write the validated tables, the quarantine and the report as Parquet/JSON."""
    out = (root or processed_dir()) / dataset.name
    out.mkdir(parents=True, exist_ok=True)
    dataset.interactions.to_parquet(out / "interactions.parquet", index=False)
    dataset.users.to_parquet(out / "users.parquet", index=False)
    dataset.items.to_parquet(out / "items.parquet", index=False)
    dataset.quarantine.astype({C.Q_ROW: "int64"}).to_parquet(out / "quarantine.parquet", index=False)
    (out / "report.json").write_text(
        json.dumps(
            {
                "name": dataset.name,
                "fingerprint": dataset.fingerprint,
                "tables": dataset.report.to_dict(),
            },
            indent=2,
        )
    )
    return Dataset(**{**dataset.__dict__, "processed_path": out})
