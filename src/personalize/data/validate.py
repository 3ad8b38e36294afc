"""Row-level validation: parse fields, check them against a schema, route failures to quarantine.

Each input row ends in exactly one place: the accepted table or the quarantine table, with
every reason it failed. Required fields (IDs, timestamps, ratings when present) that fail to
parse or check quarantine the row; optional attributes (age, year, ...) that fail to parse are
set to missing and counted in the report instead, so that one bad attribute does not drop a
user's or an item's interactions.

(One module: every field rule writes into the same :class:`Issues` record that routes a row to
quarantine, and the event stream applies the same rules (:mod:`personalize.online.validate`), so
they are read and changed together.)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa

from personalize.config.data import DataConfig, TimestampConfig
from personalize.core import columns as C

# an offset after a time of day: '...T10:00Z', '... 10:00:00.5+02:00', '...T10:00-0500'
_ISO_OFFSET = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$")
# ASCII digits only: other Unicode digits ('１２') are text, never the integer 12
_NUMBER = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_INTEGER = re.compile(r"(?:0|-?[1-9][0-9]*)")  # canonical: no sign of plus, no leading zeros, no '-0'
_INTEGER_SPELLING = re.compile(r"[+-]?[0-9]+")  # any spelling of an integer in ASCII digits

NUMERIC_ATTRIBUTES = {C.AGE, C.YEAR}
LIST_ATTRIBUTES = {C.GENRES}


Details = str | pd.Series | Callable[[np.ndarray], Iterable[str]]


class Issues:
    """Reasons collected for rows of one table, keyed by row position in the frame. Sparse: only
    flagged rows hold anything, and a detail given as a function is built for them alone."""

    def __init__(self, n_rows: int):
        self.n_rows = n_rows
        self._bad = np.zeros(n_rows, dtype=bool)
        self._found: dict[int, list[tuple[str, str]]] = {}

    def add(self, mask: np.ndarray | pd.Series, kind: str, details: Details) -> None:
        """Flag the rows of ``mask`` with ``kind``; ``details``: one text for all, a Series by
        position, or a function of the flagged positions returning their texts."""
        positions = np.flatnonzero(np.asarray(mask, dtype=bool))
        if not len(positions):
            return
        if isinstance(details, str):
            texts = [details] * len(positions)
        elif callable(details):
            texts = [str(t) for t in details(positions)]
        else:
            texts = list(pd.Series(details).iloc[positions].astype(str))
        self._bad[positions] = True
        for pos, text in zip(positions.tolist(), texts, strict=True):
            self._found.setdefault(pos, []).append((kind, text))

    def bad(self) -> np.ndarray:
        """True for every flagged row (a copy)."""
        return self._bad.copy()

    def kinds(self, pos: int) -> list[str]:
        return [k for k, _ in self._found.get(pos, [])]

    def details(self, pos: int) -> list[str]:
        return [d for _, d in self._found.get(pos, [])]

    @classmethod
    def concat(cls, parts: list[Issues]) -> Issues:
        """The issues of consecutive row ranges as one."""
        out = cls(sum(p.n_rows for p in parts))
        start = 0
        for p in parts:
            out._bad[start : start + p.n_rows] = p._bad
            out._found.update({start + pos: list(v) for pos, v in p._found.items()})
            start += p.n_rows
        return out

    def take(self, positions: np.ndarray) -> Issues:
        """The issues of the rows at ``positions`` (in that order), numbered from 0."""
        positions = np.asarray(positions, dtype=np.int64)
        out = Issues(len(positions))
        out._bad[:] = self._bad[positions]
        found = self._found
        out._found = {new: list(found[old]) for new, old in enumerate(positions.tolist()) if old in found}
        return out

    def slice(self, start: int, stop: int) -> Issues:
        """The issues of rows ``start:stop``."""
        out = Issues(stop - start)
        out._bad[:] = self._bad[start:stop]
        out._found = {pos - start: v for pos, v in self._found.items() if start <= pos < stop}
        return out


def quoted(values: pd.Series, suffix: str, prefix: str = "") -> Callable[[np.ndarray], list[str]]:
    """Details ``<prefix>'<value>'<suffix>`` of the flagged positions (built for them only)."""

    def texts(positions: np.ndarray) -> list[str]:
        shown = values.iloc[positions].astype("string").fillna("<NA>")
        return [f"{prefix}'{v}'{suffix}" for v in shown]

    return texts


@dataclass
class TableReport:
    """Counts for one ingested table. ``accepted + quarantined + suppressed == input_rows`` always;
    ``sampled_out`` counts accepted rows left out by ``data.sample_users``, ``no_consent`` accepted
    rows of users without training consent (:mod:`personalize.data.consent`)."""

    role: str
    source: str
    input_rows: int
    accepted: int = 0
    quarantined: int = 0
    sampled_out: int = 0
    no_consent: int = 0
    suppressed: int = 0  # rows of users on the suppression list, dropped before anything is written
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
            "no_consent": self.no_consent,
            "suppressed": self.suppressed,
            "reasons": dict(self.reasons),
            "values_set_missing": dict(self.nulled),
        }


# ---------------------------------------------------------------------------- field parsers


INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
_INT64_WIDTH = len(str(INT64_MIN))  # 20 characters: the longest int64 written in decimal


def integer_id(text: str) -> int | None:
    """The ID rule, shared by ingestion (:func:`ids_are_integers`) and the event stream: an ID is
    text, and only a canonical ASCII decimal integer (``0`` or ``-?[1-9][0-9]*``: the digits
    ``0``-``9`` alone: ``[0-9]``, not :meth:`str.isdigit`) that fits int64 is a number; returns
    that number, else None (the ID stays text).

    Why text for every other digit: ``'١٢٣'`` (Arabic-Indic) and ``'１２'`` (full-width) are
    distinct identifiers a producer may mean as different from ``123`` and ``12``; folding them
    into those numbers would silently merge IDs, and refusing them would reject legitimate IDs in
    non-Latin scripts. ``'²'`` (a digit to :meth:`str.isdigit`, no decimal digit to :func:`int`)
    is text too. The length is checked before :func:`int`, so an ID of 5,000 digits is text
    (too large for int64) instead of an error (Python refuses to convert more than 4,300 digits).
    Non-canonical spellings (``'007'``, ``'+7'``) are canonicalised first by :func:`canonical_ids`.
    """
    if not isinstance(text, str) or len(text) > _INT64_WIDTH or not _INTEGER.fullmatch(text):
        return None
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else None


def canonical_ids(values: pd.Series, name: str, issues: Issues) -> pd.Series:
    """IDs as canonical text: surrounding spaces dropped (the reader strips them), a decimal
    integer written without a sign of plus and without leading zeros (``'007'`` and ``' 7'`` are
    ``'7'``). Whether a kind of ID becomes int64 is decided once all its IDs are known
    (:func:`ids_are_integers`: every one a number by :func:`integer_id`); an ID too large for
    int64, or written with other than ASCII digits, keeps every ID of its kind a string. A
    missing ID quarantines the row."""
    if pd.api.types.is_integer_dtype(values.dtype):  # numbers read as numbers: written one way
        text = values.astype("string")
        issues.add(text.isna().to_numpy(dtype=bool), f"{name}: missing", f"{name} is missing")
        return text
    text = values.astype("string").str.strip()
    missing = text.isna() | (text == "")
    issues.add(missing.to_numpy(dtype=bool), f"{name}: missing", f"{name} is missing")
    integer = text.str.fullmatch(_INTEGER_SPELLING.pattern).fillna(False).to_numpy(dtype=bool)
    integer &= ~text.str.fullmatch(_INTEGER.pattern).fillna(False).to_numpy(dtype=bool)  # canonical already
    if integer.any():
        digits = text[integer].str.lstrip("+")
        negative = digits.str.startswith("-")
        body = digits.str.lstrip("-").str.lstrip("0").replace("", "0")
        text = text.copy()
        text[integer] = np.where(negative & (body != "0"), "-" + body, body)
    return text.mask(missing)


def parse_timestamps(
    values: pd.Series, cfg: TimestampConfig, issues: Issues, now: pd.Timestamp | None = None
) -> pd.Series:
    """Epoch numbers (``cfg.epoch_unit``) or ISO 8601 strings -> ``datetime64[ns, UTC]``.

    ISO 8601 strings must carry an offset ('Z', '+02:00', '-0500') unless
    ``cfg.assume_timezone`` names the zone of naive ones. The plausible window
    (``cfg.earliest`` to ``now`` when ``cfg.reject_future``) is checked on the parsed value, and
    for epoch numbers on the number itself before conversion, so a value in the wrong unit (e.g.
    milliseconds read as seconds) is quarantined instead of overflowing into another century.
    ``values`` has a positional index.
    """
    now = now if now is not None else now_utc()
    out = _parse_timestamps(values, cfg, issues, now)
    early = (out < pd.Timestamp(cfg.earliest, tz="UTC")).fillna(False).to_numpy(dtype=bool)
    issues.add(early, f"timestamp: before {cfg.earliest}", quoted(values, f" is before {cfg.earliest}"))
    if cfg.reject_future:
        late = (out > now).fillna(False).to_numpy(dtype=bool)
        issues.add(late, "timestamp: in the future", quoted(values, " is in the future"))
    return out


def _parse_timestamps(
    values: pd.Series, cfg: TimestampConfig, issues: Issues, now: pd.Timestamp
) -> pd.Series:
    n = len(values)
    out = np.full(n, np.datetime64("NaT", "ns"), dtype="datetime64[ns]")
    missing = values.isna().to_numpy()
    issues.add(missing, "timestamp: missing", "timestamp is missing")
    present = ~missing

    if pd.api.types.is_datetime64_any_dtype(values):  # Parquet with a real timestamp type
        text = values.astype("string")
        if getattr(values.dt, "tz", None) is None:
            if cfg.assume_timezone is None:
                issues.add(
                    present,
                    "timestamp: no UTC offset",
                    "timestamp column has no time zone (set data.timestamp.assume_timezone)",
                )
                return _utc(out)
            values = values.dt.tz_localize(cfg.assume_timezone, ambiguous="NaT", nonexistent="NaT")
            issues.add(
                present & values.isna().to_numpy(),
                "timestamp: unparseable",
                quoted(text, f" does not exist or is ambiguous in {cfg.assume_timezone}"),
            )
        _place(out, np.flatnonzero(present), values[present], text, cfg, issues, now)
        return _utc(out)

    text = values.astype("string")
    if pd.api.types.is_numeric_dtype(values):
        is_number = present
    else:
        is_number = text.str.fullmatch(_NUMBER.pattern).fillna(False).to_numpy(dtype=bool)

    # epoch numbers
    numbers = decimal_numbers(text, is_number)
    finite = np.isfinite(numbers)
    issues.add(is_number & ~finite, "timestamp: unparseable", quoted(text, " is not a finite number"))
    # the window on the number itself: converting a number far out of range would overflow (or
    # wrap around) before the parsed value could be checked
    scale = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[cfg.epoch_unit]
    unit_hint = f" as epoch {cfg.epoch_unit} (data.timestamp.epoch_unit; a number in another unit?)"
    low = pd.Timestamp(cfg.earliest, tz="UTC").timestamp() * scale
    early = is_number & finite & (numbers < low)
    issues.add(
        early, f"timestamp: before {cfg.earliest}", quoted(text, f"{unit_hint} is before {cfg.earliest}")
    )
    if cfg.reject_future:
        late = is_number & finite & (numbers > now.timestamp() * scale)
        issues.add(late, "timestamp: in the future", quoted(text, f"{unit_hint} is in the future"))
    else:
        late = is_number & finite & (numbers > pd.Timestamp.max.timestamp() * scale)
        issues.add(late, "timestamp: out of range", quoted(text, f"{unit_hint} is after the year 2262"))
    absurd = early | late
    epoch = is_number & finite & ~absurd
    # integers exactly (a float64 holds 15-16 digits; nanoseconds since 1970 take 19)
    whole = epoch & (np.abs(numbers) < 2**62)
    whole &= text.str.fullmatch(r"[+-]?[0-9]+").fillna(False).to_numpy(dtype=bool)
    exact = decimal_numbers(text, whole, integer=True)[whole]
    for part, number in ((whole, exact), (epoch & ~whole, numbers[epoch & ~whole])):
        if not part.any():
            continue
        converted = pd.to_datetime(pd.Series(number), unit=cfg.epoch_unit, utc=True, errors="coerce")
        out[part] = converted.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        overflow = np.zeros(n, dtype=bool)
        overflow[np.flatnonzero(part)[converted.isna().to_numpy()]] = True
        issues.add(overflow, "timestamp: out of range", quoted(text, " is out of the datetime range"))

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
            quoted(text, " is neither epoch seconds nor ISO 8601"),
        )
        keep = ok & has_offset
        _place(out, iso_pos[keep], as_utc[keep], text, cfg, issues, now)
        naive_pos = iso_pos[ok & ~has_offset]
        if len(naive_pos):
            naive = np.zeros(n, dtype=bool)
            naive[naive_pos] = True
            if cfg.assume_timezone is None:
                issues.add(
                    naive,
                    "timestamp: no UTC offset",
                    quoted(text, " has no UTC offset (set data.timestamp.assume_timezone)"),
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
                    quoted(text, f" does not exist or is ambiguous in {cfg.assume_timezone}"),
                )
                _place(out, naive_pos, localized, text, cfg, issues, now)
    return _utc(out)


def _place(
    out: np.ndarray,
    positions: np.ndarray,
    moments: pd.Series,
    text: pd.Series,
    cfg: TimestampConfig,
    issues: Issues,
    now: pd.Timestamp,
) -> None:
    """Write tz-aware ``moments`` (any resolution) at ``positions`` of ``out`` (nanoseconds), the
    window checked first: a moment outside it (e.g. the year 2600 or 0001) would overflow, and
    wrap around silently, on the way to nanoseconds. Missing moments stay NaT."""
    moments = moments.dt.tz_convert("UTC")
    high = now if cfg.reject_future else pd.Timestamp.max.tz_localize("UTC")
    early = (moments < pd.Timestamp(cfg.earliest, tz="UTC")).to_numpy(dtype=bool)
    late = (moments > high).to_numpy(dtype=bool)
    issues.add(
        _at(len(out), positions[early]),
        f"timestamp: before {cfg.earliest}",
        quoted(text, f" is before {cfg.earliest}"),
    )
    if cfg.reject_future:
        issues.add(
            _at(len(out), positions[late]), "timestamp: in the future", quoted(text, " is in the future")
        )
    else:
        issues.add(
            _at(len(out), positions[late]), "timestamp: out of range", quoted(text, " is after the year 2262")
        )
    keep = moments.notna().to_numpy() & ~early & ~late
    out[positions[keep]] = moments[keep].dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")


def _at(n: int, positions: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[positions] = True
    return mask


def _utc(values: np.ndarray) -> pd.Series:
    return pd.Series(values).dt.tz_localize("UTC").astype("datetime64[ns, UTC]")


def decimal_numbers(text: pd.Series, ok: np.ndarray, integer: bool = False) -> np.ndarray:
    """The values of ``text`` at ``ok`` (checked decimal numbers: ``_NUMBER``, or integers with
    ``integer``) as float64 (int64), NaN (0) elsewhere; parsed by Arrow's cast (correctly rounded,
    and ten times faster than ``pd.to_numeric`` on text)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = np.zeros(len(text), dtype=np.int64) if integer else np.full(len(text), np.nan)
    if ok.any():
        chosen = pa.array(text[ok].astype("string").to_numpy(dtype=object), type=pa.string())
        if integer:
            chosen = pc.replace_substring_regex(chosen, r"^\+", "")
        out[ok] = pc.cast(chosen, pa.int64() if integer else pa.float64()).to_numpy(zero_copy_only=False)
    return out


def parse_number(values: pd.Series, name: str, issues: Issues, required: bool) -> pd.Series:
    """Numbers in text or numeric columns -> float64. Text must be a decimal number (``3``,
    ``-2.5``, ``1e3``; not ``inf`` or ``nan``). Unparseable values quarantine the row when
    ``required`` (the caller reports them as set-to-missing otherwise)."""
    if pd.api.types.is_numeric_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    else:
        text = values.astype("string").str.strip()
        numbers = pd.Series(
            decimal_numbers(text, text.str.fullmatch(_NUMBER.pattern).fillna(False).to_numpy(bool))
        )
    if required:
        missing = values.isna().to_numpy()
        issues.add(missing, f"{name}: missing", f"{name} is missing")
        bad = numbers.isna().to_numpy() & ~missing
        issues.add(
            bad,
            f"{name}: not a number",
            quoted(values, f" is not a number ({name})"),
        )
    return numbers


def parse_list(values: pd.Series, separator: str) -> pd.Series:
    """'Action|Comedy' -> ['Action', 'Comedy']; missing -> [] (an object column of lists)."""
    sep = separator if separator.strip() else None  # whitespace: split on runs of it
    parsed = [[] if pd.isna(v) else [p for p in str(v).split(sep) if p.strip()] for v in values]
    return pd.Series(parsed, index=values.index, dtype=object)


def ids_are_integers(values: pd.Series) -> bool:
    """Every ID a number: an integer column, or text whose every value is one by
    :func:`integer_id` (a canonical ASCII decimal integer that fits int64)."""
    if pd.api.types.is_integer_dtype(values):
        return True
    text = values.dropna().astype("string")
    if not len(text) or not bool(text.str.fullmatch(_INTEGER.pattern).all()):
        return False
    width = text.str.lstrip("-").str.len()
    if int(width.max()) < 19:
        return True
    big = text[width >= 19]
    return all(integer_id(str(v)) is not None for v in big)


# ------------------------------------------------------------------------------ the schemas


def interactions_schema(config: DataConfig) -> pa.DataFrameSchema:
    """Value checks on parsed interactions; a failure quarantines the row. Each check is named
    by what is wrong, so a failure reads '<column>: <check name>'. (The timestamp window is
    checked by :func:`parse_timestamps`.)"""
    cols = {
        C.USER: pa.Column(nullable=True),
        C.ITEM: pa.Column(nullable=True),
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
