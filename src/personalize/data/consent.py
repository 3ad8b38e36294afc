"""Consent per user and purpose: the consent table as a data source, applied at ingestion.

**The table** (``data.privacy.consent``; CSV, TSV or Parquet): one row per consent record with
the columns ``user_id``, ``purpose``, ``granted`` and ``timestamp``.

- ``user_id``: the raw ID, canonicalised as in ingestion (``'007'`` is ``'7'``);
- ``purpose``: one of the purposes of ``data.privacy.record.purposes`` (by default
  ``training`` and ``personalisation``); an unknown purpose is an error, since a misspelt
  withdrawal would otherwise be ignored;
- ``granted``: ``true``/``false``, ``1``/``0``, ``yes``/``no`` (any case), or a boolean column;
- ``timestamp``: as interactions' timestamps (``data.timestamp``: epoch numbers or ISO 8601
  with an offset, inside the plausible window).

**A bad row is an error, not quarantine**: a DataError names the file, the row (1-based data
record, header excluded) and the field. A consent record is a legal statement: quarantining a
withdrawal would silently leave an older grant in force, so the table must be fixed first.

**The latest record wins**: per (user, purpose), the record with the latest timestamp; between
records with the same timestamp, the later row of the file.

**No record means not granted** when a consent table is configured: a user with no
``training`` record is left out of training, and one with no ``personalisation`` record gets
the non-personalised answer. Without a consent table (``consent: null``) every purpose counts
as granted and nothing is removed.

**Applied at ingestion** (:func:`apply_consent`, called by :func:`personalize.data.ingest.ingest`
after sampling and before the fingerprint): users on the suppression list are dropped from the
consent table (their records are not kept anywhere); IDs are mapped to pseudonyms by the same
callable as every other table; users without ``training`` consent lose their interactions and
their users-table row, counted as ``no_consent`` in the report (a column of its own, not
quarantine). The returned consent table (user_id, purpose, granted, timestamp; the latest
record per user and purpose) travels with the dataset; the export ships the users without
``personalisation`` consent with the served state (:mod:`personalize.serving.state`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from personalize.config.data import DataConfig
from personalize.core import columns as C
from personalize.core.errors import DataError
from personalize.data.privacy import SuppressionList, canonical, resolve
from personalize.data.validate import Issues, canonical_ids, ids_are_integers, now_utc, parse_timestamps

TRAINING = "training"
PERSONALISATION = "personalisation"
PURPOSE, GRANTED = "purpose", "granted"
CONSENT_COLUMNS = (C.USER, PURPOSE, GRANTED, C.TIMESTAMP)
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}

Pseudonymise = Callable[[Sequence[str]], Sequence[str]]


def read_consent_file(path: str | Path) -> pd.DataFrame:
    """The consent table's rows as read (text columns, plus ``_row``: the 1-based data record;
    an ``event_id`` column is kept when present).
    DataError for a missing or unreadable file, or a missing column."""
    path = resolve(Path(path))
    if not path.exists():
        raise DataError(f"consent file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            sep = "\t" if suffix in (".tsv", ".tab") else ","
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except (ValueError, OSError) as exc:
        raise DataError(f"consent file {path} cannot be read: {exc}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in CONSENT_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"consent file {path}: required column(s) {missing} missing; the file has {list(frame.columns)} "
            f"(expected {list(CONSENT_COLUMNS)})"
        )
    extra = [c for c in ("event_id",) if c in frame.columns]  # kept for the stream (online.stream)
    frame = frame[[*CONSENT_COLUMNS, *extra]].reset_index(drop=True)
    frame.insert(0, "_row", np.arange(1, len(frame) + 1, dtype=np.int64))
    return frame


def parse_granted(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(granted, valid) of ``values``: booleans, or text true/false, 1/0, yes/no (any case)."""
    if pd.api.types.is_bool_dtype(values) and not values.isna().any():
        return values.to_numpy(dtype=bool), np.ones(len(values), dtype=bool)
    text = values.astype("string").str.strip().str.lower()
    granted = text.isin(list(_TRUE)).fillna(False).to_numpy(dtype=bool)
    denied = text.isin(list(_FALSE)).fillna(False).to_numpy(dtype=bool)
    return granted, granted | denied


def validate_consent(
    frame: pd.DataFrame, label: str, config: DataConfig, now: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Parse and check the rows of :func:`read_consent_file` (module doc); DataError naming the
    file, the row and every failure of the first bad rows. Returns user_id (canonical text),
    purpose, granted (bool), timestamp (UTC), _row."""
    n = len(frame)
    issues = Issues(n)
    users = canonical_ids(frame[C.USER], C.USER, issues)
    purposes = frame[PURPOSE].astype("string").str.strip()
    known = sorted(config.privacy.record.purposes)
    missing = (purposes.isna() | (purposes == "")).to_numpy(dtype=bool)
    issues.add(missing, "purpose: missing", "purpose is missing")
    unknown = ~missing & ~purposes.isin(known).fillna(False).to_numpy(dtype=bool)
    issues.add(
        unknown,
        "purpose: unknown",
        lambda pos: [
            f"purpose '{purposes.iloc[p]}' is not one of data.privacy.record.purposes {known}" for p in pos
        ],
    )
    granted, valid = parse_granted(frame[GRANTED])
    raw_granted = frame[GRANTED].astype("string")
    issues.add(
        ~valid,
        "granted: not a boolean",
        lambda pos: [f"granted '{raw_granted.iloc[p]}' is not true/false, 1/0 or yes/no" for p in pos],
    )
    stamps = parse_timestamps(
        frame[C.TIMESTAMP].reset_index(drop=True), config.timestamp, issues, now or now_utc()
    )
    bad = np.flatnonzero(issues.bad())
    if len(bad):
        rows = frame["_row"].to_numpy()
        shown = "; ".join(f"row {rows[p]}: {', '.join(issues.details(p))}" for p in bad[:5])
        more = f" (and {len(bad) - 5} more rows)" if len(bad) > 5 else ""
        raise DataError(
            f"consent file {label}: {len(bad)} invalid row(s); {shown}{more}. Consent rows are not "
            "quarantined (a dropped withdrawal would leave an older grant in force): fix the file"
        )
    return pd.DataFrame(
        {
            C.USER: users.astype("string").to_numpy(dtype=object),
            PURPOSE: purposes.to_numpy(dtype=object),
            GRANTED: granted,
            C.TIMESTAMP: stamps,
            "_row": frame["_row"].to_numpy(),
        }
    )


def latest(records: pd.DataFrame) -> pd.DataFrame:
    """The latest record per (user, purpose): the latest timestamp, ties broken by the later
    row (``_row``). Sorted by user, purpose."""
    order = records.sort_values([C.USER, PURPOSE, C.TIMESTAMP, "_row"], kind="stable")
    return order.drop_duplicates([C.USER, PURPOSE], keep="last").reset_index(drop=True)


def load_consent(
    config: DataConfig, pseudonymise: Pseudonymise | None = None, now: pd.Timestamp | None = None
) -> pd.DataFrame | None:
    """The configured consent table (module doc): validated, suppressed users dropped, the
    latest record per (user, purpose), IDs through ``pseudonymise`` (None: unchanged). Columns
    user_id (text), purpose, granted (bool), timestamp (UTC). None when no table is configured."""
    path = config.privacy.consent
    if path is None:
        return None
    raw = read_consent_file(path)
    records = validate_consent(raw, str(resolve(Path(path))), config, now)
    suppression = SuppressionList.load(config.privacy.suppression, config.privacy.suppression_key)
    if len(suppression):
        records = records.loc[~np.asarray(suppression.mask(records[C.USER].tolist()), dtype=bool)]
    out = latest(records).drop(columns=["_row"])
    if pseudonymise is not None and len(out):
        out[C.USER] = list(pseudonymise([canonical(u) for u in out[C.USER]]))
    return out.reset_index(drop=True)


def without(consent: pd.DataFrame | None, purpose: str, users: pd.Series | pd.Index) -> np.ndarray:
    """True for each of ``users`` whose latest ``purpose`` record is not a grant (no record: not
    granted). All False when ``consent`` is None (no consent table: every purpose granted)."""
    users = pd.Series(np.asarray(users, dtype=object))
    if consent is None:
        return np.zeros(len(users), dtype=bool)
    rows = consent[(consent[PURPOSE] == purpose) & consent[GRANTED].astype(bool)]
    granted = set(rows[C.USER].map(canonical))
    return ~users.map(canonical).isin(granted).to_numpy(dtype=bool)


def apply_consent(
    interactions: pd.DataFrame,
    users: pd.DataFrame,
    config: DataConfig,
    report,
    pseudonymise: Pseudonymise,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Apply the consent table to accepted tables (module doc): returns (interactions, users,
    consent). Interactions and users-table rows of users without ``training`` consent are
    removed and counted in ``report`` (an :class:`~personalize.data.ingest.IngestReport`):
    ``no_consent`` of the first interactions table (the accepted rows no longer say which source
    they came from, as for ``sampled_out``) and of the users table. ``consent`` has user IDs of
    the interactions' type (int64 when every ID is an integer, else text)."""
    consent = load_consent(config, pseudonymise)
    if consent is None:
        return interactions, users, None
    dropped = without(consent, TRAINING, interactions[C.USER])
    kept_users = ~without(consent, TRAINING, users[C.USER])
    inter_tables = [k for k in report.tables if k.startswith("interactions")]
    for key in inter_tables:
        report.tables[key].no_consent = 0
    if inter_tables:
        report.tables[inter_tables[0]].no_consent = int(dropped.sum())
    if "users" in report.tables:
        report.tables["users"].no_consent = int((~kept_users).sum())
    interactions = interactions.loc[~dropped].reset_index(drop=True)
    users = users.loc[kept_users].reset_index(drop=True)
    if pd.api.types.is_integer_dtype(interactions[C.USER].dtype) and ids_are_integers(consent[C.USER]):
        consent[C.USER] = consent[C.USER].astype("int64")
    else:
        consent[C.USER] = consent[C.USER].astype("string")
    return interactions, users, consent.sort_values([C.USER, PURPOSE], kind="stable").reset_index(drop=True)
