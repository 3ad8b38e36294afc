"""Row-level validation: parse fields, check them against a schema, route failures to quarantine.

Each input row ends in exactly one place: the accepted table or the quarantine table, with
every reason it failed. Required fields (IDs, timestamps, ratings when present) that fail to
parse or check quarantine the row; optional attributes (age, year, ...) that fail to parse are
set to missing and counted in the report instead, so that one bad attribute does not drop a
user's or an item's interactions.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa

from personalize.config.data import DataConfig, TimestampConfig
from personalize.core import columns as C

# an offset after a time of day: '...T10:00Z', '... 10:00:00.5+02:00', '...T10:00-0500'
_ISO_OFFSET = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^-?(0|[1-9]\d*)$")

NUMERIC_ATTRIBUTES = {C.AGE, C.YEAR}
LIST_ATTRIBUTES = {C.GENRES}


@dataclass
class Issues:
    """Reasons collected for rows of one table, keyed by row position in the frame."""

    n_rows: int
    kinds: list[list[str]] = field(default_factory=list)
    details: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kinds = [[] for _ in range(self.n_rows)]
        self.details = [[] for _ in range(self.n_rows)]

    def add(self, mask: np.ndarray | pd.Series, kind: str, details: pd.Series | str) -> None:
        mask = np.asarray(mask, dtype=bool)
        positions = np.flatnonzero(mask)
        if isinstance(details, str):
            detail_values = [details] * len(positions)
        else:
            detail_values = list(pd.Series(details).iloc[positions].astype(str))
        for pos, detail in zip(positions, detail_values, strict=True):
            self.kinds[pos].append(kind)
            self.details[pos].append(detail)

    def bad(self) -> np.ndarray:
        return np.fromiter((bool(k) for k in self.kinds), dtype=bool, count=self.n_rows)


@dataclass
class TableReport:
    """Counts for one ingested table. ``accepted + quarantined == input_rows`` always;
    ``sampled_out`` counts accepted rows left out by ``data.sample_users``."""

    role: str
    source: str
    input_rows: int
    accepted: int = 0
    quarantined: int = 0
    sampled_out: int = 0
    reasons: Counter = field(default_factory=Counter)
    nulled: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {
            "role": self.role,
            "source": self.source,
            "input_rows": self.input_rows,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "sampled_out": self.sampled_out,
            "reasons": dict(self.reasons),
            "values_set_missing": dict(self.nulled),
        }


# ---------------------------------------------------------------------------- field parsers


def parse_ids(values: pd.Series, name: str, issues: Issues) -> pd.Series:
    missing = values.isna().to_numpy()
    issues.add(missing, f"{name}: missing", f"{name} is missing")
    return values.astype("string")


def parse_timestamps(values: pd.Series, cfg: TimestampConfig, issues: Issues) -> pd.Series:
    """Epoch numbers (``cfg.epoch_unit``) or ISO 8601 strings -> ``datetime64[ns, UTC]``.

    ISO 8601 strings must carry an offset ('Z', '+02:00', '-0500') unless
    ``cfg.assume_timezone`` names the zone of naive ones. ``values`` has a positional index.
    """
    n = len(values)
    out = np.full(n, np.datetime64("NaT", "ns"), dtype="datetime64[ns]")
    missing = values.isna().to_numpy()
    issues.add(missing, "timestamp: missing", "timestamp is missing")
    present = ~missing

    if pd.api.types.is_datetime64_any_dtype(values):  # Parquet with a real timestamp type
        if getattr(values.dt, "tz", None) is None:
            if cfg.assume_timezone is None:
                issues.add(
                    present,
                    "timestamp: no UTC offset",
                    "timestamp column has no time zone (set data.timestamp.assume_timezone)",
                )
                return _utc(out)
            values = values.dt.tz_localize(cfg.assume_timezone)
        return values.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")

    text = values.astype("string")
    if pd.api.types.is_numeric_dtype(values):
        is_number = present
    else:
        is_number = text.str.fullmatch(_NUMBER.pattern).fillna(False).to_numpy(dtype=bool)

    # epoch numbers
    numbers = pd.to_numeric(text.where(is_number), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    finite = np.isfinite(numbers)
    issues.add(is_number & ~finite, "timestamp: unparseable", "'" + text + "' is not a finite number")
    epoch = is_number & finite
    if epoch.any():
        converted = pd.to_datetime(pd.Series(numbers[epoch]), unit=cfg.epoch_unit, utc=True, errors="coerce")
        out[epoch] = converted.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        overflow = np.zeros(n, dtype=bool)
        overflow[np.flatnonzero(epoch)[converted.isna().to_numpy()]] = True
        issues.add(overflow, "timestamp: out of range", "'" + text + "' is out of the datetime range")

    # ISO 8601 strings
    iso = present & ~is_number
    if iso.any():
        iso_text = text[iso]
        has_offset = iso_text.str.contains(_ISO_OFFSET.pattern, regex=True).fillna(False).to_numpy(dtype=bool)
        as_utc = pd.to_datetime(iso_text, utc=True, errors="coerce", format="ISO8601")
        ok = as_utc.notna().to_numpy()
        iso_pos = np.flatnonzero(iso)
        unparseable = np.zeros(n, dtype=bool)
        unparseable[iso_pos[~ok]] = True
        issues.add(
            unparseable,
            "timestamp: unparseable",
            "'" + text + "' is neither epoch seconds nor ISO 8601",
        )
        keep = ok & has_offset
        out[iso_pos[keep]] = as_utc[keep].dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        naive_pos = iso_pos[ok & ~has_offset]
        if len(naive_pos):
            naive = np.zeros(n, dtype=bool)
            naive[naive_pos] = True
            if cfg.assume_timezone is None:
                issues.add(
                    naive,
                    "timestamp: no UTC offset",
                    "'" + text + "' has no UTC offset (set data.timestamp.assume_timezone)",
                )
            else:
                local = pd.to_datetime(text.iloc[naive_pos], errors="coerce", format="ISO8601")
                localized = local.dt.tz_localize(
                    cfg.assume_timezone, ambiguous="NaT", nonexistent="NaT"
                ).dt.tz_convert("UTC")
                bad = np.zeros(n, dtype=bool)
                bad[naive_pos[localized.isna().to_numpy()]] = True
                issues.add(
                    bad,
                    "timestamp: unparseable",
                    "'" + text + f"' does not exist or is ambiguous in {cfg.assume_timezone}",
                )
                out[naive_pos] = localized.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    return _utc(out)


def _utc(values: np.ndarray) -> pd.Series:
    return pd.Series(values).dt.tz_localize("UTC").astype("datetime64[ns, UTC]")


def parse_number(values: pd.Series, name: str, issues: Issues, required: bool) -> pd.Series:
    """Numbers in text or numeric columns -> float64. Unparseable values quarantine the row
    when ``required`` (the caller reports them as set-to-missing otherwise)."""
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    if required:
        missing = values.isna().to_numpy()
        issues.add(missing, f"{name}: missing", f"{name} is missing")
        bad = numbers.isna().to_numpy() & ~missing
        issues.add(
            bad,
            f"{name}: not a number",
            "'" + values.astype("string") + f"' is not a number ({name})",
        )
    return numbers


def parse_list(values: pd.Series, separator: str) -> pd.Series:
    """'Action|Comedy' -> ['Action', 'Comedy']; missing -> [] (an object column of lists)."""
    sep = separator if separator.strip() else None  # whitespace: split on runs of it
    parsed = [[] if pd.isna(v) else [p for p in str(v).split(sep) if p.strip()] for v in values]
    return pd.Series(parsed, index=values.index, dtype=object)


def ids_are_integers(values: pd.Series) -> bool:
    text = values.dropna().astype("string")
    return bool(len(text)) and bool(text.str.fullmatch(_INTEGER.pattern).all())


# ------------------------------------------------------------------------------ the schemas


def interactions_schema(config: DataConfig, now: pd.Timestamp) -> pa.DataFrameSchema:
    """Value checks on parsed interactions; a failure quarantines the row. Each check is named
    by what is wrong, so a failure reads '<column>: <check name>'."""
    cols = {
        C.USER: pa.Column(nullable=True),
        C.ITEM: pa.Column(nullable=True),
        C.TIMESTAMP: pa.Column(
            nullable=True,
            checks=[pa.Check(lambda s: s.isna() | (s <= now), element_wise=False, name="in the future")]
            if config.timestamp.reject_future
            else [],
        ),
        C.RATING: pa.Column(
            float,
            nullable=True,
            required=False,
            checks=[
                pa.Check(
                    lambda s, lo=config.rating_range[0], hi=config.rating_range[1]: (
                        s.isna() | s.between(lo, hi)
                    ),
                    name=f"outside [{config.rating_range[0]:g}, {config.rating_range[1]:g}]",
                )
            ]
            if config.rating_range
            else [],
        ),
        C.WEIGHT: pa.Column(
            float,
            nullable=True,
            required=False,
            checks=[pa.Check(lambda s: s.isna() | (s >= 0), name="negative")],
        ),
    }
    return pa.DataFrameSchema(cols, strict=False, coerce=False)


def attributes_schema() -> pa.DataFrameSchema:
    """Plausibility checks on optional attributes; failures set the value to missing."""
    return pa.DataFrameSchema(
        {
            C.AGE: pa.Column(
                float,
                nullable=True,
                required=False,
                checks=pa.Check(lambda s: s.isna() | s.between(0, 120), name="outside [0, 120]"),
            ),
            C.YEAR: pa.Column(
                float,
                nullable=True,
                required=False,
                checks=pa.Check(lambda s: s.isna() | s.between(1800, 2200), name="outside [1800, 2200]"),
            ),
        },
        strict=False,
        coerce=False,
    )


def schema_failures(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame:
    """Row-level failures of ``schema`` on ``frame`` as (index, column, check, value) rows."""
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        cases = cases[cases["index"].notna()]
        return cases[["index", "column", "check", "failure_case"]].reset_index(drop=True)
    return pd.DataFrame(columns=["index", "column", "check", "failure_case"])


def now_utc() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")
