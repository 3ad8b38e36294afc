"""Typed configuration of the data hygiene audit (the ``audit:`` block of an experiment file).

Every check has a ``severity``: ``off`` (not run), ``warn`` (reported and logged; the run goes
on) or ``fail`` (reported and logged; ``personalize run`` stops before any model is fitted and
``personalize audit`` exits with code 1). A check *trips* when it lists at least one row; its
status is then its severity, otherwise ``ok``. Flagged rows are listed, never removed from the
data. The defaults pass MovieLens-100K (a few warnings, no failure).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator

from personalize.config.base import StrictModel

Severity = Literal["off", "warn", "fail"]
TimeBin = Literal["day", "week", "month", "quarter", "year"]

_SEVERITY = "off: not run; warn: reported, the run goes on; fail: reported, the run stops before fitting."


class CompletenessCheck(StrictModel):
    """Share of non-missing values of every optional column (user and item attributes, and
    interaction values such as rating or weight)."""

    severity: Severity = Field(default="warn", description=_SEVERITY)
    min_share: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="A column trips when its share of non-missing values is below this (an empty list "
        "counts as missing). Interaction values are judged within each event type that has any.",
    )


class TypesCheck(StrictModel):
    """Standard columns hold the type the models expect (IDs integer or text in every table alike,
    timestamps as UTC datetimes, numbers as numbers, text as text, genres as lists)."""

    severity: Severity = Field(default="warn", description=_SEVERITY)


class RangesCheck(StrictModel):
    """Attribute values inside plausible ranges (tighter than ingestion's validity ranges)."""

    severity: Severity = Field(default="warn", description=_SEVERITY)
    bounds: dict[str, list[float | None]] = Field(
        default_factory=lambda: {"age": [5, 100], "year": [1870, None]},
        description="Column -> [low, high], inclusive; null: unbounded on that side. Columns of any "
        "table; a column the data does not have is not checked.",
    )

    @field_validator("bounds")
    @classmethod
    def _pairs(cls, value: dict[str, list[float | None]]) -> dict[str, list[float | None]]:
        for column, bounds in value.items():
            if len(bounds) != 2:
                raise ValueError(f"bounds.{column}: expected [low, high], got {bounds}")
            lo, hi = bounds
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"bounds.{column}: low {lo:g} is above high {hi:g}")
        return value


class EpochCheck(StrictModel):
    """Interactions dated right after 1970-01-01: epoch seconds read as milliseconds land in the
    first weeks of 1970, and a 0 written for 'unknown' lands on the epoch itself."""

    severity: Severity = Field(default="fail", description=_SEVERITY)
    before: dt.date = Field(
        default=dt.date(1971, 1, 1), description="Interactions before this date (UTC) are listed."
    )


class ReleaseCheck(StrictModel):
    """Interactions dated before the item's release year (items with a ``year``)."""

    severity: Severity = Field(default="warn", description=_SEVERITY)
    tolerance_years: int = Field(
        default=1,
        ge=0,
        description="Listed when the interaction's year is below the release year minus this "
        "(pre-release screenings and festival dates make a year early common).",
    )


class ActivityCheck(StrictModel):
    """Users with extreme activity (interactions per user)."""

    severity: Severity = Field(default="warn", description=_SEVERITY)
    method: Literal["mad", "quantile"] = Field(
        default="mad",
        description="mad: robust z-score z = 0.6745 * (x - median) / MAD above k (Iglewicz and Hoaglin's "
        "modified z-score; MAD = median absolute deviation from the median); quantile: above the "
        "given quantile of interactions per user.",
    )
    scale: Literal["log", "linear"] = Field(
        default="log",
        description="Scale of x for method mad: log of the count (activity is heavy-tailed; the "
        "default flags users far outside a log-normal bulk) or the raw count.",
    )
    k: float = Field(default=3.5, gt=0, description="Robust z-score cut-off for method mad.")
    quantile: float = Field(default=0.999, gt=0, lt=1, description="Quantile for method quantile.")


class BurstCheck(StrictModel):
    """Bursts: at least ``interactions`` of one user within ``minutes``."""

    severity: Severity = Field(default="warn", description=_SEVERITY)
    interactions: int = Field(default=100, ge=2, description="Interactions of one user in the window.")
    minutes: float = Field(default=10.0, gt=0, description="Window length in minutes.")


class FlaggedUserItemsCheck(StrictModel):
    """Items whose interactions come (almost) only from users that extreme_activity or bursts
    flagged: their popularity is an artefact of those users."""

    severity: Severity = Field(default="warn", description=_SEVERITY)
    min_share: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Listed when at least this share of the item's interactions come from flagged users "
        "(1: every one).",
    )


class RatingShiftCheck(StrictModel):
    """Rating distribution per time bin against the overall one, by total variation distance
    TV = 1/2 * sum over rating values r of |p_bin(r) - p_all(r)| (0: same, 1: disjoint)."""

    severity: Severity = Field(default="warn", description=_SEVERITY)
    time_bin: TimeBin = Field(default="month", description="Calendar bin (UTC); weeks start on Monday.")
    max_distance: float = Field(
        default=0.1, gt=0, le=1, description="A bin trips when its TV distance is above this."
    )
    min_interactions: int = Field(
        default=1000,
        ge=1,
        description="Bins with fewer ratings are not judged (TV's sampling noise is about "
        "0.5 * sum_r sqrt(2 p(r) (1 - p(r)) / (pi n)): ~0.025 for 5 levels at n = 1000).",
    )


class DuplicateTitlesCheck(StrictModel):
    """Items sharing a title (compared case-insensitively, spaces collapsed)."""

    severity: Severity = Field(default="warn", description=_SEVERITY)
    match_year: bool = Field(
        default=True, description="Also require the same release year (remakes share titles)."
    )


class AuditConfig(StrictModel):
    """The data hygiene audit run after ingestion, before any model is fitted."""

    completeness: CompletenessCheck = Field(
        default_factory=CompletenessCheck,
        description="Optional columns (attributes, interaction values) with too many missing values.",
    )
    types: TypesCheck = Field(
        default_factory=TypesCheck, description="Standard columns of an unexpected type."
    )
    ranges: RangesCheck = Field(
        default_factory=RangesCheck, description="Attribute values outside plausible ranges."
    )
    epoch_timestamps: EpochCheck = Field(
        default_factory=EpochCheck,
        description="Interactions dated at the start of the Unix epoch (a wrong epoch unit, or 0 for "
        "'unknown').",
    )
    before_release: ReleaseCheck = Field(
        default_factory=ReleaseCheck, description="Interactions dated before the item's release year."
    )
    extreme_activity: ActivityCheck = Field(
        default_factory=ActivityCheck, description="Users with an extreme number of interactions."
    )
    bursts: BurstCheck = Field(
        default_factory=BurstCheck, description="Many interactions of one user within minutes."
    )
    flagged_user_items: FlaggedUserItemsCheck = Field(
        default_factory=FlaggedUserItemsCheck,
        description="Items whose interactions come from the users extreme_activity and bursts flag.",
    )
    rating_shift: RatingShiftCheck = Field(
        default_factory=RatingShiftCheck,
        description="Time bins whose rating distribution differs from the overall one.",
    )
    duplicate_titles: DuplicateTitlesCheck = Field(
        default_factory=DuplicateTitlesCheck, description="Items sharing a title (and release year)."
    )
    show_rows: int = Field(
        default=10, ge=0, description="Rows of each list shown in audit.md (the Parquet file has all)."
    )
