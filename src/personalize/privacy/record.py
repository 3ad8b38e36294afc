"""``personalize privacy record``: the record of processing and the plain-language notice of an
experiment. The texts are generated in :mod:`personalize.data.records` (they depend on the config
only, and every tracked run logs them); this module is the command's entry point."""

from __future__ import annotations

from pathlib import Path

from personalize.data.records import (
    NOTICE_ARTIFACT,
    RECORD_ARTIFACT,
    Category,
    Store,
    data_categories,
    privacy_notice,
    record_of_processing,
    redact_url,
    stores,
    write_records,
)
from personalize.recipe import load_experiment

__all__ = [
    "NOTICE_ARTIFACT",
    "RECORD_ARTIFACT",
    "Category",
    "Store",
    "data_categories",
    "privacy_notice",
    "record_of_processing",
    "redact_url",
    "stores",
    "write_experiment_records",
    "write_records",
]


def write_experiment_records(
    experiment: str | Path, out: str | Path | None = None, overrides: list[str] | None = None
) -> tuple[Path, Path]:
    """Load the experiment file and write ``record.md`` and ``notice.md`` to ``out`` (default:
    ``privacy/<experiment name>/`` under the current folder); returns both paths."""
    config = load_experiment(experiment, overrides)
    folder = Path(out) if out is not None else Path("privacy") / config.name
    return write_records(config, folder)
