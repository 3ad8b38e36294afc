"""Typed settings of the synthetic interaction-log generator (the ``data.synthetic:`` block).

The generative process these settings drive is documented in :mod:`personalize.data.synthetic`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from personalize.config.base import StrictModel

_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class SyntheticConfig(StrictModel):
    """How many users, items and events to generate, and the shape of the logs."""

    interactions: int = Field(
        default=100_000,
        ge=1_000,
        description="Events generated (valid rows over every event file; planted duplicates and "
        "malformed lines come on top).",
    )
    users: int | None = Field(default=None, ge=1, description="Users (default: interactions / 100).")
    items: int | None = Field(default=None, ge=1, description="Items (default: interactions / 500).")
    seed: int = Field(default=0, ge=0, description="Seed of every random draw.")
    format: Literal["parquet", "csv"] = Field(default="parquet", description="File format written.")
    clusters: int = Field(default=20, ge=1, description="K, the number of latent taste clusters.")
    duplicate_share: float = Field(
        default=0.001,
        ge=0,
        le=0.5,
        description="Exact duplicate rows planted, as a share of the events (ingestion quarantines "
        "them as 'exact duplicate').",
    )
    malformed_share: float = Field(
        default=0.0,
        ge=0,
        le=0.5,
        description="Malformed lines (a field too many or too few) planted, as a share of the events; "
        "CSV only (a Parquet file cannot hold a malformed line).",
    )
    popularity_zipf: float = Field(
        default=1.0, ge=0, description="s: the item of popularity rank r has base popularity r^-s."
    )
    popularity_weight: float = Field(
        default=1.0, ge=0, description="a: choice probability proportional to popularity^a x affinity."
    )
    user_concentration: float = Field(
        default=0.1,
        gt=0,
        description="Dirichlet concentration of a user's mixture over clusters (small: a few tastes).",
    )
    item_focus: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="Share of an item's cluster profile on its own cluster (the rest spread at random).",
    )
    min_user_interactions: int = Field(default=5, ge=1, description="Events of the least active user.")
    activity_sigma: float = Field(
        default=1.0, ge=0, description="sigma of the lognormal that spreads activity over users."
    )
    start: dt.date = Field(default=dt.date(2022, 1, 1), description="First day of the log (UTC).")
    days: int = Field(default=730, ge=7, description="Length of the log in days.")
    daily_amplitude: float = Field(
        default=0.6, ge=0, lt=1, description="Amplitude of the daily cycle of activity (0: flat)."
    )
    peak_hour: int = Field(default=20, ge=0, le=23, description="Hour (UTC) of peak daily activity.")
    weekend_boost: float = Field(
        default=0.3, ge=0, description="Extra activity on Saturdays and Sundays (0.3: 30% more)."
    )
    back_catalogue: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Share of items released before the log starts (the others are released during it).",
    )
    event_shares: dict[str, float] = Field(
        default_factory=lambda: {"view": 0.7, "click": 0.2, "purchase": 0.1},
        description="Event types and the share of events of each type (one file per type).",
    )
    rated_events: list[str] = Field(
        default_factory=lambda: ["purchase"], description="Event types whose rows carry a rating (1-5)."
    )
    block_events: int = Field(
        default=100_000,
        ge=1_000,
        description="Events per generation block (block b draws from default_rng([seed, b])); part "
        "of what the rows depend on, unlike the write chunk.",
    )

    @field_validator("event_shares")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("event_shares: at least one event type is needed")
        for name, share in value.items():
            if not _EVENT_NAME.fullmatch(name):
                raise ValueError(f"event_shares: event name {name!r} must be lower-case letters, digits, _")
            if not share > 0:
                raise ValueError(f"event_shares: the share of {name!r} must be positive, got {share}")
        total = sum(value.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"event_shares must sum to 1, got {total:g}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticConfig:
        unknown = [e for e in self.rated_events if e not in self.event_shares]
        if unknown:
            raise ValueError(f"rated_events {unknown} are not in event_shares {list(self.event_shares)}")
        if self.malformed_share > 0 and self.format != "csv":
            raise ValueError(
                f"malformed_share {self.malformed_share} needs format csv (a {self.format} file cannot "
                "hold a malformed line)"
            )
        need = self.min_user_interactions * self.n_users
        if self.interactions < need:
            raise ValueError(
                f"interactions {self.interactions} < min_user_interactions x users = "
                f"{self.min_user_interactions} x {self.n_users} = {need}"
            )
        return self

    @property
    def n_users(self) -> int:
        return self.users if self.users is not None else max(1, self.interactions // 100)

    @property
    def n_items(self) -> int:
        return self.items if self.items is not None else max(1, self.interactions // 500)

    def settings(self) -> dict:
        """Every setting with the defaults filled in (JSON-able): what the rows depend on."""
        out = self.model_dump(mode="json")
        out["users"], out["items"] = self.n_users, self.n_items
        return out

    def key(self) -> str:
        """SHA-256 of :meth:`settings`: names the cache folder of these settings."""
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()
