"""The data hygiene audit: checks an ingested :class:`~personalize.data.ingest.Dataset` before
anyone trains on it.

Each check (configured by :class:`~personalize.config.audit.AuditConfig`) lists the rows it
flags -- columns, users, bursts, items, interactions or time bins, with their IDs and the
evidence -- and has a severity: ``off`` (not run), ``warn`` or ``fail``. A check *trips* when its
list is not empty; its status is then its severity, else ``ok`` (``skipped`` when the data lacks
what it needs, e.g. ratings). Nothing is removed from the data: the lists say what to look at.

Checks, in order:

- ``completeness``: share of non-missing values of every optional column (users, items, and
  interaction values within each event type that has any); an empty list counts as missing.
- ``types``: standard columns hold the expected type (IDs integer or text, the same in every
  table; timestamps UTC datetimes; numbers numeric; text as text; genres as lists).
- ``ranges``: values outside configured plausible ranges (e.g. age in [5, 100]).
- ``epoch_timestamps``: interactions before a date just after 1970-01-01 (epoch seconds read as
  milliseconds, or 0 written for 'unknown').
- ``before_release``: interactions dated before the item's release year (minus a tolerance).
- ``extreme_activity``: users whose interaction count is extreme: robust z-score
  z = (x - median(x)) / s above k, with s = MAD / 0.6745 (MAD: median absolute deviation from the
  median; when it is 0, s = 1.2533 * mean absolute deviation from the median) and x the count or
  its log; or the count above a quantile.
- ``bursts``: at least N interactions of one user within M minutes. Overlapping qualifying
  windows of a user merge into one burst, which can therefore last longer than M minutes.
- ``flagged_user_items``: items with at least a share of their interactions from users flagged
  by ``extreme_activity`` or ``bursts``.
- ``rating_shift``: per calendar bin, the total variation distance
  TV = 1/2 * sum_r |p_bin(r) - p_all(r)| between the bin's rating distribution and the overall
  one; bins with fewer ratings than a minimum are not judged. More than 20 distinct rating
  values are grouped into 10 equal-width bins first.
- ``duplicate_titles``: items sharing a title (case-insensitive, spaces collapsed), and the
  release year unless configured otherwise.

Everything is vectorised (sorting is the only step above linear time); ML-100K takes well
under a second.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from personalize.config.audit import AuditConfig
from personalize.core import columns as C
from personalize.core.errors import AuditFailed
from personalize.data.ingest import Dataset
from personalize.plotting import figure, house_style, integer_ticks, legend_outside

STATUS_COLOURS = {"ok": "tab:green", "warn": "tab:orange", "fail": "tab:red"}
FLAGS_FILE = "audit_flags.parquet"
REPORT_FILE = "audit.md"
NS_PER_MINUTE = 60 * 10**9
NS_PER_DAY = 86_400 * 10**9
MANY_RATING_VALUES = 20  # above this many distinct ratings, rating_shift groups them in 10 bins


@dataclass
class Flag:
    """One check's result. ``rows`` lists what it flags (one row per ``unit``) with the IDs and
    the evidence; ``count`` is the length of that list."""

    name: str
    table: str
    checks: str  # what the check looks at, one sentence
    threshold: str
    severity: str  # off, warn or fail
    status: str  # ok, warn, fail, off (not run) or skipped (not applicable to this data)
    rows: pd.DataFrame
    unit: str  # what one listed row is: columns, users, bursts, items, interactions, bins
    note: str = ""  # context: what was judged, totals
    advice: str = ""  # what to look at when it trips
    plot: dict[str, Any] = field(default_factory=dict, repr=False)  # the figure's data

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def ran(self) -> bool:
        return self.status not in ("off", "skipped")


@dataclass
class HygieneAudit:
    """The audit of one dataset: every check's :class:`Flag`, in the configured order."""

    dataset: str
    fingerprint: str
    config: AuditConfig
    flags: list[Flag]
    seconds: float
    size: dict[str, int] = field(default_factory=dict)

    def flag(self, name: str) -> Flag:
        for f in self.flags:
            if f.name == name:
                return f
        raise KeyError(f"no audit check named {name!r} (checks: {[f.name for f in self.flags]})")

    @property
    def failed(self) -> list[Flag]:
        return [f for f in self.flags if f.status == "fail"]

    @property
    def warnings(self) -> list[Flag]:
        return [f for f in self.flags if f.status == "warn"]

    def verdict(self) -> str:
        """One line: passed, passed with warnings, or failed (naming the checks)."""
        warn = ", ".join(f.name for f in self.warnings)
        if self.failed:
            text = f"FAILED ({', '.join(f.name for f in self.failed)})"
            return text + (f"; warnings: {warn}" if warn else "")
        return f"passed with warnings ({warn})" if warn else "passed"

    def summary(self) -> pd.DataFrame:
        """One row per check: check, table, severity, status, count, unit, threshold, note."""
        return pd.DataFrame(
            [
                {
                    "check": f.name,
                    "table": f.table,
                    "severity": f.severity,
                    "status": f.status,
                    "count": f.count,
                    "unit": f.unit,
                    "threshold": f.threshold,
                    "note": f.note,
                }
                for f in self.flags
            ]
        )

    def flagged_rows(self) -> pd.DataFrame:
        """Every check's list in one table: ``check`` first, then the IDs, then the evidence
        columns (empty where a check has no such column)."""
        parts = [f.rows.assign(check=f.name) for f in self.flags if f.count]
        if not parts:
            return pd.DataFrame({"check": pd.Series(dtype="string")})
        table = pd.concat(parts, ignore_index=True)
        for col in table.columns:  # integer columns stay integers beside the gaps of other checks
            kinds = [p[col].dtype for p in parts if col in p.columns]
            if pd.api.types.is_float_dtype(table[col]) and all(map(pd.api.types.is_integer_dtype, kinds)):
                table[col] = table[col].astype("Int64")
        first = [c for c in ("check", C.USER, C.ITEM) if c in table.columns]
        return table[first + [c for c in table.columns if c not in first]]

    def metrics(self) -> dict[str, float]:
        """Numbers to log: ``audit_<check>_count`` for each check that ran, ``audit_failed``
        (0/1), ``audit_warnings`` (checks with status warn) and ``audit_seconds``."""
        out: dict[str, float] = {f"audit_{f.name}_count": f.count for f in self.flags if f.ran}
        out["audit_failed"] = int(bool(self.failed))
        out["audit_warnings"] = len(self.warnings)
        out["audit_seconds"] = round(self.seconds, 4)
        return out

    def to_markdown(self) -> str:
        """A self-contained report: the summary table, then per check what it looks at, the
        threshold and the first ``config.show_rows`` rows of its list."""
        size = ", ".join(f"{v:,} {k}" for k, v in self.size.items())
        lines = [
            f"# Data hygiene audit: {self.dataset}",
            "",
            f"Fingerprint `{self.fingerprint[:16]}`; {size}. Audit took {self.seconds:.2f} s.",
            "",
            f"**Result: {self.verdict()}.** Flagged rows are listed, never removed from the data.",
            "",
            "## Summary",
            "",
            "`threshold` states what passes; every listed row breaks it. `status` is the severity when "
            "the check lists anything, else ok (skipped: the data lacks what the check needs).",
            "",
            self.summary().to_markdown(index=False),
        ]
        for f in self.flags:
            lines += ["", f"## {f.name}: {f.status} ({f.count} {f.unit})", "", f.checks, ""]
            lines.append(f"- table: {f.table}; severity: {f.severity}; threshold: {f.threshold}")
            if f.note:
                lines.append(f"- {f.note}")
            if f.count and f.advice:
                lines.append(f"- what to do: {f.advice}")
            if f.count and self.config.show_rows:
                shown = f.rows.head(self.config.show_rows)
                lines += ["", _markdown_table(shown)]
                if f.count > len(shown):
                    lines.append(f"\n... and {f.count - len(shown)} more rows (all in `{FLAGS_FILE}`).")
        return "\n".join(lines) + "\n"

    def figures(self) -> dict[str, Any]:
        """{file name: matplotlib figure}, one per check that ran and has a picture."""
        out = {}
        for f in self.flags:
            draw = _FIGURES.get(f.name)
            if draw is not None and f.ran and f.plot:
                out[f"{f.name}.png"] = draw(f, self.dataset)
        return out

    def raise_if_failed(self) -> None:
        """:class:`AuditFailed` naming every check whose status is ``fail``."""
        if not self.failed:
            return
        what = "; ".join(f"{f.name}: {f.count} {f.unit} ({f.threshold})" for f in self.failed)
        raise AuditFailed(
            f"data hygiene audit of {self.dataset} failed: {what}. Read the lists (personalize audit "
            "writes audit.md), fix the data, or set audit.<check>.severity: warn to go on."
        )

    def write(self, folder: str | Path) -> dict[str, Path]:
        """Write audit.md, the flagged rows (Parquet) and the figures (PNG) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"report": folder / REPORT_FILE, "rows": folder / FLAGS_FILE}
        paths["report"].write_text(self.to_markdown())
        self.flagged_rows().to_parquet(paths["rows"], index=False)
        for name, fig in self.figures().items():
            paths[name] = folder / name
            fig.savefig(paths[name])
        return paths


# ------------------------------------------------------------------------------ the audit


def audit_dataset(dataset: Dataset, config: AuditConfig | None = None) -> HygieneAudit:
    """Run every check of ``config`` (defaults when None) on ``dataset``."""
    config = config or AuditConfig()
    start = time.perf_counter()
    ctx = _Context(dataset)
    flags = []
    for name, check in _CHECKS.items():
        cfg = getattr(config, name)
        if cfg.severity == "off":
            flags.append(_off(name))
            continue
        flags.append(check(ctx, cfg))
        ctx.flags[name] = flags[-1]
    size = {
        "interactions": len(dataset.interactions),
        "users": len(dataset.users),
        "items": len(dataset.items),
    }
    return HygieneAudit(dataset.name, dataset.fingerprint, config, flags, time.perf_counter() - start, size)


class _Context:
    """The dataset and what several checks share, computed once on first use. IDs are coded
    by hashing (``pd.factorize``), counts by ``np.bincount``: linear time."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.inter = dataset.interactions
        self.flags: dict[str, Flag] = {}
        self._cache: dict[str, Any] = {}

    def _once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def has_times(self) -> bool:
        return isinstance(self.inter[C.TIMESTAMP].dtype, pd.DatetimeTZDtype) or (
            pd.api.types.is_datetime64_dtype(self.inter[C.TIMESTAMP])
        )

    @property
    def ns(self) -> np.ndarray:
        """Timestamps as int64 nanoseconds since 1970-01-01 UTC (naive stamps read as UTC)."""

        def make() -> np.ndarray:
            ts = self.inter[C.TIMESTAMP]
            if isinstance(ts.dtype, pd.DatetimeTZDtype):
                ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
            return np.asarray(ts, dtype="datetime64[ns]").view("int64")

        return self._once("ns", make)

    @property
    def days(self) -> np.ndarray:
        """Day of every interaction, in days since 1970-01-01 (UTC)."""
        return self._once("days", lambda: self.ns // NS_PER_DAY)

    def calendar(self, unit: str) -> np.ndarray:
        """The calendar bin (:func:`_time_bins`) of every interaction, looked up per day."""

        def make() -> np.ndarray:
            d0 = int(self.days.min())
            table = _time_bins(np.arange(d0, int(self.days.max()) + 1), unit)
            return table[self.days - d0]

        return self._once(f"calendar:{unit}", make) if len(self.days) else np.zeros(0, np.int64)

    @property
    def years(self) -> np.ndarray:
        """Calendar year (UTC) of every interaction."""
        return self.calendar("year") + 1970

    def codes(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(code of every interaction's ``key``, the distinct IDs in code order)."""
        return self._once(f"codes:{key}", lambda: pd.factorize(self.inter[key].to_numpy()))

    def counts(self, key: str) -> pd.Series:
        """Interactions per user or item (those with any), indexed by ID."""

        def make() -> pd.Series:
            codes, ids = self.codes(key)
            return pd.Series(np.bincount(codes, minlength=len(ids)), index=ids)

        return self._once(f"counts:{key}", make)

    def times(self, positions: np.ndarray) -> pd.Series:
        return _utc(self.ns[positions])


def _utc(ns: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(np.asarray(ns, dtype="int64"), unit="ns", utc=True))


def _flag(name: str, cfg, rows: pd.DataFrame, **kwargs) -> Flag:
    """A flag whose status follows from its list: the severity when it lists anything."""
    rows = rows.reset_index(drop=True)
    status = cfg.severity if len(rows) else "ok"
    return Flag(name, severity=cfg.severity, status=status, rows=rows, **{**_ABOUT[name], **kwargs})


def _skipped(name: str, cfg, why: str, threshold: str) -> Flag:
    return Flag(
        name,
        severity=cfg.severity,
        status="skipped",
        rows=pd.DataFrame(),
        threshold=threshold,
        note=why,
        **_ABOUT[name],
    )


def _off(name: str) -> Flag:
    return Flag(name, severity="off", status="off", rows=pd.DataFrame(), threshold="-", **_ABOUT[name])


# ---------------------------------------------------------------------------- the checks


def _check_completeness(ctx: _Context, cfg) -> Flag:
    data = ctx.dataset
    found = []
    for table, frame, key in (("users", data.users, C.USER), ("items", data.items, C.ITEM)):
        for col in frame.columns:
            if col != key:
                missing = _missing(frame[col])
                keys = frame[key].to_numpy()
                found.append(_completeness_row(table, col, "all rows", missing, lambda p, k=keys: k[p]))
    inter = ctx.inter
    users, items = inter[C.USER].to_numpy(), inter[C.ITEM].to_numpy()

    def pairs(positions: np.ndarray) -> list[str]:
        return [f"{u}:{i}" for u, i in zip(users[positions], items[positions], strict=True)]

    for col in inter.columns:
        if col in (C.USER, C.ITEM, C.TIMESTAMP, C.EVENT):
            continue
        missing = _missing(inter[col])
        if C.EVENT not in inter.columns:
            found.append(_completeness_row("interactions", col, "all rows", missing, pairs))
            continue
        events = inter[C.EVENT].astype("string").fillna("(none)")
        for event, idx in events.groupby(events, sort=True).indices.items():
            part = missing[idx]
            if part.all():  # this event type never carries the column: not incomplete
                continue
            found.append(
                _completeness_row(
                    "interactions", col, f"event={event}", part, lambda p, idx=idx: pairs(idx[p])
                )
            )
    judged = pd.DataFrame(
        found, columns=["table", "column", "scope", "rows", "missing", "complete_share", "examples"]
    )
    rows = judged[judged["complete_share"] < cfg.min_share]
    return _flag(
        "completeness",
        cfg,
        rows,
        threshold=f"share of non-missing values >= {cfg.min_share:g}",
        note=f"{len(judged)} columns judged",
        plot={"judged": judged, "min_share": cfg.min_share} if len(judged) else {},
    )


def _missing(col: pd.Series) -> np.ndarray:
    """Missing values; for lists and text, an empty one too."""
    missing = col.isna().to_numpy()
    if pd.api.types.is_object_dtype(col.dtype) or pd.api.types.is_string_dtype(col.dtype):
        # values without a length (numbers in an object column) raise: only missing counts then
        with contextlib.suppress(AttributeError, TypeError):
            missing = missing | (col.str.len() == 0).to_numpy(dtype=bool, na_value=False)
    return missing


def _completeness_row(table, col, scope, missing: np.ndarray, ids: Callable) -> dict:
    """``ids(positions)``: the IDs of those rows (the first five missing ones are examples)."""
    n = len(missing)
    examples = ids(np.flatnonzero(missing)[:5])
    return {
        "table": table,
        "column": col,
        "scope": scope,
        "rows": n,
        "missing": int(missing.sum()),
        "complete_share": 1 - missing.sum() / n if n else 1.0,
        "examples": ", ".join(map(str, examples)),
    }


_EXPECTED = {
    C.USER: "ID (integer or text)",
    C.ITEM: "ID (integer or text)",
    C.TIMESTAMP: "UTC datetime",
    C.RATING: "number",
    C.WEIGHT: "number",
    C.AGE: "number",
    C.YEAR: "number",
    C.EVENT: "text",
    C.TITLE: "text",
    C.GENDER: "text",
    C.OCCUPATION: "text",
    C.ZIP: "text",
    C.GENRES: "list",
}


def _check_types(ctx: _Context, cfg) -> Flag:
    data = ctx.dataset
    found = []
    tables = {"interactions": data.interactions, "users": data.users, "items": data.items}
    for table, frame in tables.items():
        for col in frame.columns:
            expected = _EXPECTED.get(col)
            if expected is not None and not _has_kind(frame[col], expected):
                found.append((table, col, str(frame[col].dtype), expected))
    for key, other in ((C.USER, "users"), (C.ITEM, "items")):
        a, b = data.interactions[key].dtype, tables[other][key].dtype
        if _id_kind(a) != _id_kind(b):
            found.append((other, key, f"{b} (interactions: {a})", "the same ID type in every table"))
    rows = pd.DataFrame(found, columns=["table", "column", "dtype", "expected"])
    return _flag(
        "types",
        cfg,
        rows,
        threshold="every standard column of the expected type",
        note=f"{sum(c in _EXPECTED for t in tables.values() for c in t.columns)} standard columns judged",
    )


def _id_kind(dtype) -> str:
    return "integer" if pd.api.types.is_integer_dtype(dtype) else "text"


def _has_kind(col: pd.Series, expected: str) -> bool:
    dtype = col.dtype
    if expected.startswith("ID"):
        return (pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)) or _is_text(
            col
        )
    if expected == "UTC datetime":
        return isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC"
    if expected == "number":
        return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    if expected == "text":
        return _is_text(col)
    if expected == "list":
        return pd.api.types.is_object_dtype(dtype) and pd.api.types.infer_dtype(
            col.dropna(), skipna=True
        ) in ("mixed", "empty")
    raise ValueError(expected)  # pragma: no cover - _EXPECTED names the kinds


def _is_text(col: pd.Series) -> bool:
    if isinstance(col.dtype, pd.StringDtype):
        return True
    return col.dtype == object and pd.api.types.infer_dtype(col, skipna=True) in ("string", "empty")


def _check_ranges(ctx: _Context, cfg) -> Flag:
    data = ctx.dataset
    parts, judged = [], []
    tables = (
        ("users", data.users, [C.USER]),
        ("items", data.items, [C.ITEM]),
        ("interactions", data.interactions, [C.USER, C.ITEM, C.TIMESTAMP]),
    )
    for column, (lo, hi) in cfg.bounds.items():
        for table, frame, keys in tables:
            if column not in frame.columns or not pd.api.types.is_numeric_dtype(frame[column]):
                continue  # absent, or not numeric (the types check lists that)
            values = frame[column]
            outside = np.zeros(len(frame), dtype=bool)
            if lo is not None:
                outside |= (values < lo).to_numpy(dtype=bool, na_value=False)
            if hi is not None:
                outside |= (values > hi).to_numpy(dtype=bool, na_value=False)
            judged.append(f"{table}.{column}")
            if outside.any():
                part = frame.loc[outside, keys].copy()
                part.insert(0, "table", table)
                part["column"] = column
                part["value"] = values[outside].astype(float).to_numpy()
                part["range"] = _range_text(lo, hi)
                parts.append(part)
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    text = "; ".join(f"{c} in {_range_text(lo, hi)}" for c, (lo, hi) in cfg.bounds.items())
    return _flag(
        "ranges",
        cfg,
        rows,
        threshold=text or "no ranges configured",
        note=f"judged: {', '.join(judged) or 'none (no configured column in the data)'}",
    )


def _range_text(lo, hi) -> str:
    return f"[{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"


def _check_epoch(ctx: _Context, cfg) -> Flag:
    threshold = f"timestamp >= {cfg.before.isoformat()}"
    if not ctx.has_times:
        return _skipped("epoch_timestamps", cfg, "timestamp is not a datetime column", threshold)
    cutoff = pd.Timestamp(cfg.before).value  # ns since the epoch (the date at 00:00 UTC)
    early = np.flatnonzero(ctx.ns < cutoff)
    rows = pd.DataFrame(
        {
            C.USER: ctx.inter[C.USER].to_numpy()[early],
            C.ITEM: ctx.inter[C.ITEM].to_numpy()[early],
            C.TIMESTAMP: ctx.times(early),
        }
    )
    n = len(ctx.inter)
    years = ctx.years if n else np.zeros(0, np.int64)
    return _flag(
        "epoch_timestamps",
        cfg,
        rows,
        threshold=threshold,
        note=f"{len(early) / max(n, 1):.2%} of interactions before {cfg.before.isoformat()}",
        plot={"years": _histogram(years), "cutoff": cfg.before.year},
    )


def _histogram(values: np.ndarray) -> pd.Series:
    """Occurrences of each integer value present, by value."""
    if not len(values):
        return pd.Series(dtype=np.int64)
    lo = int(values.min())
    counts = np.bincount(values - lo)
    present = np.flatnonzero(counts)
    return pd.Series(counts[present], index=present + lo)


def _check_release(ctx: _Context, cfg) -> Flag:
    threshold = f"interaction year >= release year - {cfg.tolerance_years}"
    items = ctx.dataset.items
    if C.YEAR not in items.columns or not pd.api.types.is_numeric_dtype(items[C.YEAR]):
        return _skipped("before_release", cfg, "no numeric year column in the items table", threshold)
    if not ctx.has_times:
        return _skipped("before_release", cfg, "timestamp is not a datetime column", threshold)
    codes, ids = ctx.codes(C.ITEM)
    where = pd.Index(items[C.ITEM]).get_indexer(ids)  # per distinct item, then per interaction
    release = items[C.YEAR].to_numpy(dtype=float, na_value=np.nan)
    release = np.where(where >= 0, release[np.maximum(where, 0)], np.nan)[codes]
    early = np.flatnonzero(ctx.years < release - cfg.tolerance_years)
    rows = pd.DataFrame(
        {
            C.USER: ctx.inter[C.USER].to_numpy()[early],
            C.ITEM: ctx.inter[C.ITEM].to_numpy()[early],
            C.TIMESTAMP: ctx.times(early),
            C.YEAR: release[early],
        }
    )
    return _flag(
        "before_release",
        cfg,
        rows,
        threshold=threshold,
        note=f"{int(np.isfinite(release).sum())} interactions with a known release year judged",
    )


def _check_activity(ctx: _Context, cfg) -> Flag:
    counts = ctx.counts(C.USER)
    x = counts.to_numpy(dtype=float)
    if cfg.method == "quantile":
        limit = float(np.quantile(x, cfg.quantile)) if len(x) else np.inf
        above = x > limit
        z = np.full(len(x), np.nan)
        threshold = f"interactions per user <= {limit:g} (quantile {cfg.quantile:g})"
    else:
        v = np.log(x) if cfg.scale == "log" else x
        centre = float(np.median(v)) if len(v) else 0.0
        spread = _robust_scale(v, centre)
        z = (v - centre) / spread if spread > 0 else np.zeros(len(v))
        above = z > cfg.k
        limit_v = centre + cfg.k * spread
        limit = float(np.exp(limit_v) if cfg.scale == "log" else limit_v)
        threshold = f"robust z <= {cfg.k:g} on {cfg.scale} counts, i.e. <= {limit:,.0f} interactions per user"
    flagged = counts.index[above]
    codes, _ = ctx.codes(C.USER)
    sub = ctx.inter[above[codes]]
    stats = sub.groupby(C.USER).agg(
        distinct_items=(C.ITEM, "nunique"), first=(C.TIMESTAMP, "min"), last=(C.TIMESTAMP, "max")
    )
    rows = pd.DataFrame({C.USER: flagged, "interactions": counts.to_numpy()[above], "robust_z": z[above]})
    rows = rows.join(stats, on=C.USER).sort_values("interactions", ascending=False, kind="stable")
    return _flag(
        "extreme_activity",
        cfg,
        rows,
        threshold=threshold,
        note=f"median {np.median(x) if len(x) else 0:g} interactions per user; {len(x)} users judged",
        plot={"counts": x, "limit": limit, "above": int(above.sum())},
    )


def _robust_scale(v: np.ndarray, centre: float) -> float:
    """sigma estimate: MAD / 0.6745, or 1.2533 * mean absolute deviation when MAD is 0."""
    if not len(v):
        return 0.0
    dev = np.abs(v - centre)
    mad = float(np.median(dev))
    return mad / 0.6745 if mad > 0 else 1.253314 * float(dev.mean())


def _check_bursts(ctx: _Context, cfg) -> Flag:
    n, window = cfg.interactions, round(cfg.minutes * NS_PER_MINUTE)
    threshold = f"< {n} interactions of one user within {cfg.minutes:g} minutes"
    if not ctx.has_times:
        return _skipped("bursts", cfg, "timestamp is not a datetime column", threshold)
    users, _ = ctx.codes(C.USER)
    ns = ctx.ns
    # only rows that can be in a burst are sorted (by user, then time); see _burst_candidates
    rows_in = _burst_candidates(users, ns, window, n)
    order = rows_in[np.lexsort((ns[rows_in], users[rows_in]))]
    u, t = users[order], ns[order]
    m = len(t)
    if m >= n:
        ok = (u[n - 1 :] == u[: m - n + 1]) & (t[n - 1 :] - t[: m - n + 1] <= window)
        starts = np.flatnonzero(ok)
    else:
        starts = np.zeros(0, dtype=np.int64)
    # overlapping qualifying windows (start gap < n) are one burst: from its first window's
    # first row to its last window's last row
    new = np.ones(len(starts), dtype=bool)
    new[1:] = starts[1:] > starts[:-1] + n - 1
    heads = np.flatnonzero(new)
    first = starts[heads]
    last = starts[np.append(heads[1:] - 1, len(starts) - 1)] + n - 1 if len(heads) else first
    ids = ctx.inter[C.USER].to_numpy()[order]
    rows = pd.DataFrame(
        {
            C.USER: ids[first],
            "start": _utc(t[first]),
            "end": _utc(t[last]),
            "interactions": (last - first + 1).astype(np.int64),
            "minutes": (t[last] - t[first]) / NS_PER_MINUTE,
        }
    )
    edges = np.zeros(m + 1, dtype=np.int64)
    np.add.at(edges, first, 1)
    np.add.at(edges, last + 1, -1)
    inside = order[np.cumsum(edges[:m]) > 0]  # positions of the interactions in bursts
    days = ctx.days
    d0 = int(days.min()) if len(days) else 0
    daily = np.bincount(days - d0) if len(days) else np.zeros(0, dtype=np.int64)
    daily_burst = np.bincount(days[inside] - d0, minlength=len(daily))
    return _flag(
        "bursts",
        cfg,
        rows,
        threshold=threshold,
        note=f"{len(inside)} interactions in bursts, by {rows[C.USER].nunique()} users",
        plot={
            "first_day": d0,
            "daily": daily,
            "daily_burst": daily_burst,
            "bursts": len(rows),
            "rule": f">= {n} interactions within {cfg.minutes:g} minutes",
        },
    )


def _burst_candidates(users: np.ndarray, ns: np.ndarray, window: int, n: int) -> np.ndarray:
    """Positions of the interactions that can belong to a burst, in linear time.

    Time is cut into buckets of the window's length, so a window of that length touches at most
    two consecutive buckets of its user, one of which then holds at least ceil(n / 2) of its
    interactions. Kept: every interaction in such a heavy (user, bucket) or in a bucket next to
    one. (user, bucket) pairs are counted in a hashed table: a collision can only add a count, so
    more rows may be kept, never fewer. Every row of every qualifying window is kept, hence the
    exact sweep over the kept rows finds the same bursts as a sweep over all rows."""
    if len(ns) < n:
        return np.zeros(0, dtype=np.int64)
    bucket = ((ns - ns.min()) // max(window, 1)).astype(np.uint64)
    # wrapping arithmetic is fine: equal keys for different pairs are collisions like any other
    key = users.astype(np.uint64) * np.uint64(int(bucket.max()) + 3) + bucket + np.uint64(1)
    bits = int(np.clip(np.ceil(np.log2(len(ns))) + 1, 10, 23))
    shift = np.uint64(64 - bits)

    def slot(k: np.ndarray) -> np.ndarray:  # Fibonacci hashing: the top bits of k * 2^64 / phi
        return ((k * _GOLDEN) >> shift).astype(np.int64)

    heavy = np.bincount(slot(key), minlength=1 << bits) >= -(-n // 2)
    if not heavy.any():
        return np.zeros(0, dtype=np.int64)
    one = np.uint64(1)
    return np.flatnonzero(heavy[slot(key)] | heavy[slot(key - one)] | heavy[slot(key + one)])


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _check_flagged_items(ctx: _Context, cfg) -> Flag:
    threshold = f"share of interactions from flagged users < {cfg.min_share:g}"
    sources = [ctx.flags[n] for n in ("extreme_activity", "bursts") if n in ctx.flags and ctx.flags[n].ran]
    if not sources:
        return _skipped("flagged_user_items", cfg, "extreme_activity and bursts did not run", threshold)
    flagged_users = pd.unique(np.concatenate([f.rows[C.USER].to_numpy() for f in sources]))
    user_codes, user_ids = ctx.codes(C.USER)
    by_flagged = pd.Index(user_ids).isin(flagged_users)[user_codes]
    item_codes, item_ids = ctx.codes(C.ITEM)
    total = np.bincount(item_codes, minlength=len(item_ids))
    from_flagged = np.bincount(item_codes[by_flagged], minlength=len(item_ids))
    share = from_flagged / np.maximum(total, 1)
    hit = np.flatnonzero((from_flagged > 0) & (share >= cfg.min_share))
    rows = pd.DataFrame(
        {
            C.ITEM: item_ids[hit],
            "interactions": total[hit],
            "from_flagged_users": from_flagged[hit],
            "flagged_share": share[hit],
        }
    )
    if len(rows):
        hit_mask = np.zeros(len(item_ids), dtype=bool)
        hit_mask[hit] = True
        sub = ctx.inter.loc[by_flagged & hit_mask[item_codes], [C.USER, C.ITEM]]
        rows["flagged_users"] = rows[C.ITEM].map(sub.groupby(C.ITEM)[C.USER].nunique()).to_numpy()
        items = ctx.dataset.items
        if C.TITLE in items.columns:
            rows[C.TITLE] = rows[C.ITEM].map(items.set_index(C.ITEM)[C.TITLE]).to_numpy()
        rows = rows.sort_values(["interactions", C.ITEM], ascending=[False, True], kind="stable")
    return _flag(
        "flagged_user_items",
        cfg,
        rows,
        threshold=threshold,
        note=f"{len(flagged_users)} flagged users ({', '.join(f.name for f in sources)}), "
        f"{int(by_flagged.sum())} of their interactions",
    )


_BIN_UNITS = {"day": "D", "week": "D", "month": "M", "quarter": "M", "year": "Y"}


def _check_rating_shift(ctx: _Context, cfg) -> Flag:
    threshold = f"TV distance <= {cfg.max_distance:g} (bins with >= {cfg.min_interactions} ratings)"
    inter = ctx.inter
    if C.RATING not in inter.columns or not pd.api.types.is_numeric_dtype(inter[C.RATING]):
        return _skipped("rating_shift", cfg, "no numeric rating column", threshold)
    if not ctx.has_times:
        return _skipped("rating_shift", cfg, "timestamp is not a datetime column", threshold)
    rated = np.flatnonzero(inter[C.RATING].notna().to_numpy())
    if not len(rated):
        return _skipped("rating_shift", cfg, "no ratings", threshold)
    ratings = inter[C.RATING].to_numpy(dtype=float, na_value=np.nan)[rated]
    levels, codes = _rating_levels(ratings)
    b = ctx.calendar(cfg.time_bin)[rated]
    b0 = int(b.min())
    b = b - b0
    n_bins, n_levels = int(b.max()) + 1, len(levels)
    table = np.bincount(b * n_levels + codes, minlength=n_bins * n_levels).reshape(n_bins, n_levels)
    per_bin = table.sum(axis=1)
    present = np.flatnonzero(per_bin)
    overall = table.sum(axis=0) / len(ratings)
    shares = table[present] / per_bin[present, None]
    tv = 0.5 * np.abs(shares - overall).sum(axis=1)
    sums = np.bincount(b, weights=ratings, minlength=n_bins)[present]
    judged = per_bin[present] >= cfg.min_interactions
    labels = _bin_labels(present + b0, cfg.time_bin)
    trip = judged & (tv > cfg.max_distance)
    rows = pd.DataFrame(
        {
            "bin": labels[trip],
            "interactions": per_bin[present][trip].astype(np.int64),
            "tv_distance": tv[trip],
            "mean_rating": sums[trip] / per_bin[present][trip],
            "overall_mean_rating": float(ratings.mean()),
        }
    )
    return _flag(
        "rating_shift",
        cfg,
        rows,
        threshold=threshold,
        note=f"{int(judged.sum())} of {len(present)} {cfg.time_bin} bins judged; "
        f"largest TV distance judged {tv[judged].max() if judged.any() else float('nan'):.3f}",
        plot={
            "labels": labels,
            "shares": shares,
            "levels": levels,
            "tv": tv,
            "judged": judged,
            "max_distance": cfg.max_distance,
            "overall": overall,
            "bin": cfg.time_bin,
        },
    )


def _rating_levels(ratings: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Rating value labels and each rating's code; more than MANY_RATING_VALUES distinct values
    are grouped into 10 equal-width bins between the minimum and the maximum."""
    codes, values = pd.factorize(ratings)
    if len(values) <= MANY_RATING_VALUES:
        order = np.argsort(values)
        rank = np.empty(len(values), dtype=np.int64)
        rank[order] = np.arange(len(values))
        return [f"{v:g}" for v in values[order]], rank[codes]
    values = np.sort(values)
    edges = np.linspace(values[0], values[-1], 11)
    codes = np.clip(np.searchsorted(edges, ratings, side="right") - 1, 0, 9)
    return [f"[{lo:g}, {hi:g})" for lo, hi in itertools.pairwise(edges)], codes


def _time_bins(days: np.ndarray, unit: str) -> np.ndarray:
    """Integer calendar bin of each day (days since 1970-01-01): days, Monday weeks, months,
    quarters, years since 1970."""
    values = days.astype("datetime64[D]").astype(f"datetime64[{_BIN_UNITS[unit]}]").astype(np.int64)
    if unit == "week":  # 1970-01-01 was a Thursday: shift so weeks start on Monday
        return (values + 3) // 7
    if unit == "quarter":
        return values // 3
    return values


def _bin_labels(bins: np.ndarray, unit: str) -> np.ndarray:
    if unit == "week":
        starts = (bins * 7 - 3).astype("datetime64[D]")
        return np.array([f"week of {s}" for s in starts.astype(str)], dtype=object)
    if unit == "quarter":
        return np.array([f"{1970 + q // 4}Q{q % 4 + 1}" for q in bins], dtype=object)
    return bins.astype(f"datetime64[{_BIN_UNITS[unit]}]").astype(str).astype(object)


def _check_duplicate_titles(ctx: _Context, cfg) -> Flag:
    items = ctx.dataset.items
    use_year = cfg.match_year and C.YEAR in items.columns
    threshold = "unique (title" + (", year)" if use_year else ")")
    if C.TITLE not in items.columns:
        return _skipped("duplicate_titles", cfg, "no title column in the items table", threshold)
    title = items[C.TITLE].astype("string")
    key = title.str.casefold().str.split().str.join(" ")
    keys = [key] + ([items[C.YEAR].astype(float).fillna(-1.0)] if use_year else [])
    frame = pd.DataFrame({"key": key, **({"year": keys[1]} if use_year else {}), C.ITEM: items[C.ITEM]})
    frame = frame[key.notna().to_numpy() & (key != "").to_numpy(dtype=bool, na_value=False)]
    cols = ["key", "year"] if use_year else ["key"]
    dup = frame[frame.duplicated(cols, keep=False)]
    groups = dup.groupby(cols, sort=False)[C.ITEM]
    rows = pd.DataFrame(
        {
            C.ITEM: dup[C.ITEM].to_numpy(),
            C.TITLE: title.loc[dup.index].to_numpy(),
            C.YEAR: items[C.YEAR].loc[dup.index].to_numpy(dtype=float) if C.YEAR in items else np.nan,
            "group": groups.transform("min").to_numpy(),
            "group_size": groups.transform("size").to_numpy(),
        }
    )
    rows["interactions"] = rows[C.ITEM].map(ctx.counts(C.ITEM)).fillna(0).astype(np.int64)
    rows = rows.sort_values(["group", C.ITEM], kind="stable")
    return _flag(
        "duplicate_titles",
        cfg,
        rows,
        threshold=threshold,
        note=f"{rows['group'].nunique()} groups of items sharing a title",
    )


_CHECKS: dict[str, Callable[[_Context, Any], Flag]] = {
    "completeness": _check_completeness,
    "types": _check_types,
    "ranges": _check_ranges,
    "epoch_timestamps": _check_epoch,
    "before_release": _check_release,
    "extreme_activity": _check_activity,
    "bursts": _check_bursts,
    "flagged_user_items": _check_flagged_items,
    "rating_shift": _check_rating_shift,
    "duplicate_titles": _check_duplicate_titles,
}

_ABOUT: dict[str, dict[str, str]] = {
    "completeness": {
        "table": "users, items, interactions",
        "unit": "columns",
        "checks": "Share of non-missing values of every optional column (an empty list or text counts as "
        "missing; interaction values within each event type that has any).",
        "advice": "check the source export or the column mapping (data.*.columns); models that use "
        "the attribute see the missing values as unknown.",
    },
    "types": {
        "table": "interactions, users, items",
        "unit": "columns",
        "checks": "Standard columns hold the expected type: IDs integer or text (the same in every "
        "table), timestamps UTC datetimes, ratings/weights/age/year numbers, text as text, genres lists.",
        "advice": "build the Dataset through personalize.data.ingest, which parses every standard column.",
    },
    "ranges": {
        "table": "users, items, interactions",
        "unit": "values",
        "checks": "Attribute values inside plausible ranges (tighter than the validity ranges of "
        "ingestion, which set impossible values to missing).",
        "advice": "look at the listed rows in the source; a placeholder value (0, 999) is often "
        "meant as 'unknown'.",
    },
    "epoch_timestamps": {
        "table": "interactions",
        "unit": "interactions",
        "checks": "Interactions dated right after 1970-01-01: epoch seconds read as milliseconds land "
        "in January 1970, and 0 written for 'unknown' lands on the epoch itself.",
        "advice": "if most interactions are listed, set data.timestamp.epoch_unit to the file's unit; "
        "otherwise the source writes 0 for unknown times: quarantine those rows at the source.",
    },
    "before_release": {
        "table": "interactions, items",
        "unit": "interactions",
        "checks": "Interactions dated before the item's release year (a wrong year or a wrong timestamp).",
        "advice": "check the item's year and the interaction's timestamp in the sources.",
    },
    "extreme_activity": {
        "table": "interactions",
        "unit": "users",
        "checks": "Users whose number of interactions is extreme relative to the others (robust z-score "
        "on median and MAD, or a quantile).",
        "advice": "look for shared accounts, crawlers or test users; such users dominate item-item "
        "co-occurrence and popularity.",
    },
    "bursts": {
        "table": "interactions",
        "unit": "bursts",
        "checks": "Bursts: many interactions of one user within minutes (overlapping windows merged).",
        "advice": "bulk imports and bots rate in bursts; a sign-up flow that asks for many ratings does "
        "too (MovieLens). Decide whether these interactions reflect taste.",
    },
    "flagged_user_items": {
        "table": "interactions, items",
        "unit": "items",
        "checks": "Items whose interactions come (almost) only from users flagged by extreme_activity "
        "or bursts: their popularity is an artefact of those users.",
        "advice": "these items' statistics rest on the flagged users alone.",
    },
    "rating_shift": {
        "table": "interactions",
        "unit": "bins",
        "checks": "Rating distribution of each time bin against the overall one: total variation "
        "distance TV = 1/2 * sum_r |p_bin(r) - p_all(r)|.",
        "advice": "a changed rating scale, interface or population in that period; a temporal split "
        "then tests on a different distribution than it trains on.",
    },
    "duplicate_titles": {
        "table": "items",
        "unit": "items",
        "checks": "Items sharing a title (case-insensitive, spaces collapsed) and, by default, a "
        "release year: one film under several IDs splits its interactions.",
        "advice": "review them; data.merge_duplicate_items maps duplicates to one ID before splitting.",
    },
}


# ------------------------------------------------------------------------------ figures


@house_style
def _figure_completeness(flag: Flag, dataset: str):
    judged = flag.plot["judged"]
    labels = [
        f"{r.table}.{r.column}" + ("" if r.scope == "all rows" else f" ({r.scope})")
        for r in judged.itertuples()
    ]
    fig, axes = figure(height=max(2.4, 0.3 * len(judged) + 1.4))
    ax = axes[0, 0]
    y = np.arange(len(judged))[::-1]
    low = judged["complete_share"].to_numpy() < flag.plot["min_share"]
    colours = [STATUS_COLOURS[flag.severity] if bad else STATUS_COLOURS["ok"] for bad in low]
    ax.barh(y, judged["complete_share"].to_numpy(), color=colours)
    ax.axvline(
        flag.plot["min_share"], color="0.3", ls="--", lw=1, label=f"threshold {flag.plot['min_share']:g}"
    )
    ax.set_yticks(y, labels)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("share of rows with a value")
    ax.set_title(f"{dataset}: completeness of optional columns")
    ax.grid(axis="y", alpha=0)
    legend_outside(fig, ax)
    return fig


@house_style
def _figure_activity(flag: Flag, dataset: str):
    counts, limit = flag.plot["counts"], flag.plot["limit"]
    fig, axes = figure()
    ax = axes[0, 0]
    low = max(1.0, float(counts.min()) / 1.05)
    top = max(float(counts.max()), limit if np.isfinite(limit) else 1.0) * 1.05
    bins = np.unique(np.geomspace(low, max(top, low + 1), 50).round())
    ax.hist(counts, bins=bins, color="tab:blue", alpha=0.8, label="users")
    if np.isfinite(limit):
        ax.axvline(limit, color=STATUS_COLOURS["fail"], ls="--", lw=1.2, label=f"threshold {limit:,.0f}")
    ax.set_xscale("log")
    ax.set_xlabel("interactions per user (log scale)")
    ax.set_ylabel("users")
    integer_ticks(ax, "y")
    ax.set_title(f"{dataset}: activity per user ({flag.plot['above']} above the threshold)")
    legend_outside(fig, ax)
    return fig


@house_style
def _figure_bursts(flag: Flag, dataset: str):
    daily, burst = flag.plot["daily"], flag.plot["daily_burst"]
    days = pd.to_datetime((flag.plot["first_day"] + np.arange(len(daily))) * NS_PER_DAY, unit="ns")
    fig, axes = figure()
    ax = axes[0, 0]
    ax.plot(days, daily, color="tab:blue", lw=0.8, label="all interactions")
    ax.fill_between(days, burst, color=STATUS_COLOURS["warn"], step="mid", label="in bursts")
    ax.set_xlabel("day (UTC)")
    ax.set_ylabel("interactions per day")
    ax.set_title(f"{dataset}: {flag.plot['bursts']} bursts ({flag.plot['rule']})")
    legend_outside(fig, ax)
    return fig


@house_style
def _figure_rating_shift(flag: Flag, dataset: str):
    p = flag.plot
    labels, shares, tv, judged = p["labels"], p["shares"], p["tv"], p["judged"]
    fig, axes = figure(2, 1, height=6.0, sharex=True)
    top, bottom = axes[0, 0], axes[1, 0]
    x = np.arange(len(labels))
    base = np.zeros(len(labels))
    colours = _level_colours(len(p["levels"]))
    for j, level in enumerate(p["levels"]):
        top.bar(x, shares[:, j], bottom=base, color=colours[j], width=0.85, label=level)
        base += shares[:, j]
    top.set_ylabel("share of ratings")
    top.set_ylim(0, 1)
    top.set_title(f"{dataset}: rating distribution per {p['bin']}")
    bottom.plot(x[judged], tv[judged], "o-", color="tab:blue", label="TV distance (judged)")
    if (~judged).any():
        bottom.plot(x[~judged], tv[~judged], "o", color="0.7", label="too few ratings (not judged)")
    bottom.axhline(p["max_distance"], color=STATUS_COLOURS["fail"], ls="--", lw=1, label="threshold")
    bottom.set_ylabel("TV distance to overall")
    bottom.set_xlabel(f"{p['bin']} (UTC)")
    step = max(1, len(labels) // 12)
    bottom.set_xticks(x[::step], [str(v) for v in labels[::step]], rotation=45, ha="right")
    handles, names = top.get_legend_handles_labels()
    more, more_names = bottom.get_legend_handles_labels()
    fig.legend(handles + more, names + more_names, title="rating", loc="outside right upper")
    return fig


def _level_colours(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["RdYlGn"]
    return [cmap(v) for v in np.linspace(0.05, 0.95, n)]


@house_style
def _figure_epoch(flag: Flag, dataset: str):
    years, cutoff = flag.plot["years"], flag.plot["cutoff"]
    fig, axes = figure()
    ax = axes[0, 0]
    early = years.index < cutoff
    ax.bar(years.index[~early], years.to_numpy()[~early], color="tab:blue", label="interactions")
    if early.any():
        ax.bar(
            years.index[early],
            years.to_numpy()[early],
            color=STATUS_COLOURS[flag.severity],
            label=f"before {cutoff}",
        )
    ax.set_xlabel("year (UTC)")
    ax.set_ylabel("interactions")
    integer_ticks(ax, "x")
    ax.set_title(f"{dataset}: interactions per year")
    legend_outside(fig, ax)
    return fig


_FIGURES: dict[str, Callable[[Flag, str], Any]] = {
    "completeness": _figure_completeness,
    "epoch_timestamps": _figure_epoch,
    "extreme_activity": _figure_activity,
    "bursts": _figure_bursts,
    "rating_shift": _figure_rating_shift,
}


def _markdown_table(rows: pd.DataFrame) -> str:
    shown = rows.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    return shown.to_markdown(index=False)
