"""The ``export:`` block of an experiment file: which champion to export and how it serves."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from personalize.config.base import StrictModel

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$")


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
