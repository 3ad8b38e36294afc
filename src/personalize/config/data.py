"""Typed configuration of the data a run ingests (the ``data:`` block of an experiment file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from personalize.config.base import StrictModel
from personalize.core import columns as C

TableFormat = Literal["csv", "tsv", "parquet", "recbole"]

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "interactions": (C.USER, C.ITEM, C.TIMESTAMP),
    "users": (C.USER,),
    "items": (C.ITEM,),
}


class TableSource(StrictModel):
    """One input table (CSV, TSV, Parquet or a RecBole atomic file)."""

    path: Path = Field(description="File path; relative paths are resolved against the project root.")
    format: TableFormat | None = Field(
        default=None, description="File format; inferred from the suffix when omitted."
    )
    separator: str | None = Field(
        default=None,
        description="Field separator for text files (default: ',' for csv, tab for tsv).",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Mapping from standard column name (user_id, item_id, rating, timestamp, weight, event, "
            "title, year, genres, age, gender, occupation, zip_code, ...) to the column in the file. "
            "Standard names present in the file need no entry; other file columns are kept as they are."
        ),
    )
    list_separator: str = Field(
        default="|", description="Separator inside list-valued fields such as genres."
    )
    missing_values: list[str] = Field(
        default_factory=list,
        description="Extra tokens (besides the empty string) that mean 'missing' in this file.",
    )

    def resolved_format(self) -> TableFormat:
        if self.format is not None:
            return self.format
        suffix = self.path.suffix.lower().lstrip(".")
        if suffix in ("parquet", "pq"):
            return "parquet"
        if suffix in ("tsv", "tab"):
            return "tsv"
        if suffix in ("inter", "user", "item"):
            return "recbole"
        return "csv"


class TimestampConfig(StrictModel):
    """How timestamps are parsed into UTC."""

    epoch_unit: Literal["s", "ms", "us", "ns"] = Field(
        default="s", description="Unit of numeric (epoch) timestamps."
    )
    assume_timezone: str | None = Field(
        default=None,
        description=(
            "Time zone (e.g. 'UTC', 'Europe/Paris') assumed for ISO 8601 timestamps without an "
            "offset. When null, such rows are quarantined: their instant is ambiguous."
        ),
    )
    reject_future: bool = Field(
        default=True, description="Quarantine timestamps later than the time of ingestion."
    )


class DataConfig(StrictModel):
    """Which data a run uses and how it is validated."""

    source: Literal["movielens-100k", "files"] = Field(
        default="movielens-100k",
        description="'movielens-100k': the copy shipped in the recbole wheel; 'files': your own tables.",
    )
    name: str | None = Field(
        default=None, description="Dataset name (default: 'ml-100k' or the interactions file stem)."
    )
    interactions: TableSource | None = Field(default=None, description="Interactions table.")
    users: TableSource | None = Field(
        default=None, description="Optional users table (user_id plus attributes)."
    )
    items: TableSource | None = Field(
        default=None,
        description="Optional items table; without it the catalogue is the items seen in interactions.",
    )
    timestamp: TimestampConfig = Field(default_factory=TimestampConfig)
    rating_range: tuple[float, float] | None = Field(
        default=None,
        description="Inclusive valid rating range, e.g. [1, 5]; rows outside are quarantined.",
    )
    sample_users: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Keep a seeded random sample of this many users (and their interactions) after "
            "validation: tiny data for smoke tests and notebooks. Reported as 'sampled out'."
        ),
    )
    write_processed: bool = Field(
        default=True, description="Write validated tables and the quarantine under data/processed/."
    )

    @model_validator(mode="after")
    def _files_need_interactions(self) -> DataConfig:
        if self.source == "files" and self.interactions is None:
            raise ValueError("data.source is 'files' but data.interactions is not set")
        if self.source == "movielens-100k" and any(
            t is not None for t in (self.interactions, self.users, self.items)
        ):
            raise ValueError(
                "data.interactions/users/items are only used with data.source: files "
                "(data.source is 'movielens-100k')"
            )
        return self
