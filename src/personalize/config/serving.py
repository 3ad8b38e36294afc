"""The ``export:`` block of an experiment file: which champion to export and how it serves."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from personalize.config.base import StrictModel

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class ServedOnlineConfig(StrictModel):
    """The online store (Redis) the served model reads each request user's recent events from.

    Where the served model finds its store, first match wins: (1) ``online_url`` /
    ``online_namespace`` in the MLflow ``model_config`` given at load time
    (``mlflow.pyfunc.load_model(uri, model_config={...})``); (2) the environment variables
    ``PERSONALIZE_ONLINE_URL`` / ``PERSONALIZE_ONLINE_NAMESPACE`` of the serving process;
    (3) ``url`` / ``namespace`` here, recorded in the model at export. None of them: no store,
    the model answers from the exported state alone (every row ``fresh: false``).
    """

    enabled: bool = Field(
        default=False,
        description="Ship the online client with the model: adds redis==<installed version> to its "
        "requirements and records url / namespace below in the model.",
    )
    url: str | None = Field(
        default=None,
        description="Redis URL recorded in the model (e.g. redis://host:6379/0); null: none recorded, "
        "the serving environment gives it (PERSONALIZE_ONLINE_URL or model_config online_url).",
    )
    namespace: str | None = Field(
        default=None,
        description="Key prefix of the online state (the stream workers' namespace); null: the "
        "experiment's online.namespace (recorded as null in a run's config.yaml, so a later export of "
        "the run resolves it the same way).",
    )
    timeout_seconds: float = Field(
        default=0.05,
        gt=0,
        le=10,
        description="A request's budget (seconds) per store round trip; late or unreachable: the "
        "answer comes from the exported state with fresh false.",
    )
    cache_ttl_seconds: int = Field(
        default=300, ge=1, description="Lifetime (seconds) of a cached answer in the store."
    )

    @field_validator("namespace")
    @classmethod
    def _valid_namespace(cls, value: str | None) -> str | None:
        if value is not None and not _NAMESPACE.match(value):
            raise ValueError(f"namespace {value!r}: use letters, digits, '_', '-' or '.' (no ':' or spaces)")
        return value

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"url {value!r} is not a Redis URL (redis://, rediss:// or unix://)")
        return value

    @model_validator(mode="after")
    def _url_needs_enabled(self) -> ServedOnlineConfig:
        if self.url is not None and not self.enabled:
            raise ValueError("online.url is set but online.enabled is false: set enabled: true")
        return self


class PrivateFallbackConfig(StrictModel):
    """The exported popularity fallback (what cold and unknown users get) as user-level private
    noisy item counts (:func:`personalize.models.privacy.aggregates.noisy_item_counts`)."""

    epsilon: float = Field(gt=0, description="Privacy budget of the released counts (one user's history).")
    mechanism: Literal["laplace", "gaussian"] = Field(
        default="laplace",
        description="laplace: pure epsilon-DP, each user counts at most max_items_per_user items; "
        "gaussian: (epsilon, delta)-DP, each user's row scaled to L2 norm sqrt(max_items_per_user).",
    )
    delta: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="gaussian only; null: min(1e-6, 1 / max_units^2); must be below 1 / (10 max_units).",
    )
    max_units: int = Field(
        ge=1,
        description="Public upper bound N on the number of users (stated, not counted from the data).",
    )
    max_items_per_user: int = Field(default=50, ge=1, description="Contribution bound per user.")

    @model_validator(mode="after")
    def _delta_is_gaussian(self) -> PrivateFallbackConfig:
        if self.mechanism == "laplace" and self.delta is not None:
            raise ValueError("delta: the laplace mechanism has delta 0; set mechanism: gaussian to use delta")
        return self


class ExportConfig(StrictModel):
    """Export the champion (best validation metric among exportable models) at the end of a run."""

    enabled: bool = Field(
        default=False,
        description=(
            "Export the champion when the run ends: refit on all data, log it as an MLflow model, "
            "register it and move the alias to it (`personalize export RUN_ID` does it later)."
        ),
    )
    registered_model: str | None = Field(
        default=None,
        description="Model Registry name (default: '<dataset name>-recommender', e.g. ml-100k-recommender).",
    )
    alias: str = Field(default="champion", description="Registry alias moved to the exported version.")
    promote: bool = Field(
        default=True, description="Move the alias to the new version (false: register only)."
    )
    metric: str = Field(
        default="ndcg@10", description="Validation metric that picks the champion (higher is better)."
    )
    segments: bool = Field(
        default=False,
        description="Ship the segments (needs segments.enabled): each response row names its segment, "
        "and a cold or unknown user whose request gives age / gender / occupation / zip_code gets "
        "their segment's popular items instead of everyone's.",
    )
    default_k: int = Field(default=10, ge=1, description="k of a request that gives none.")
    max_k: int = Field(default=1000, ge=1, description="Largest k a request may ask for.")
    max_rows: int = Field(default=10_000, ge=1, description="Most request rows (users) in one call.")
    online: ServedOnlineConfig = Field(
        default_factory=ServedOnlineConfig,
        description="Online fold-in at request time: the Redis store of events after the fit.",
    )
    private: bool | None = Field(
        default=None,
        description=(
            "Private export: ship only what the champion's mechanism released (no training user ID, "
            "history or per-user array for a user-level model, which answers each request from the "
            "history it sends; an event-level model's users and their DP-SGD vectors, no history). "
            "null: on exactly when the champion is private (epsilon set); true refuses a champion "
            "that is not."
        ),
    )
    private_fallback: PrivateFallbackConfig | None = Field(
        default=None,
        description=(
            "Ship the popularity fallback as noisy counts with a stated epsilon (null: exact counts). "
            "It covers the fallback only: the scorer's own state is as private as the model "
            "(a dp_* model for a private one)."
        ),
    )

    @field_validator("registered_model", "alias")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid registry name: use letters, digits, '_', '-', '.' or spaces"
            )
        return value

    @model_validator(mode="after")
    def _k_range(self) -> ExportConfig:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) exceeds max_k ({self.max_k})")
        return self

    def model_name(self, dataset_name: str) -> str:
        """The registry name in force for data named ``dataset_name``."""
        if self.registered_model:
            return self.registered_model
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", dataset_name).strip("-") or "data"
        return f"{slug}-recommender"
