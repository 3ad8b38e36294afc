"""The multi-source sample's experiment, reading files written to a temporary folder."""

from __future__ import annotations

from pathlib import Path

from personalize.config import ExperimentConfig
from personalize.recipe import load_experiment

ROOT = Path(__file__).resolve().parents[1]
EVENTS_EXPERIMENT = ROOT / "experiments" / "ml100k_events.yaml"


def in_folder(config: ExperimentConfig, folder: Path) -> ExperimentConfig:
    """``config`` with every data file read from ``folder`` (same file names), nothing written."""
    data = config.data.relocated(folder).model_copy(update={"write_processed": False})
    return config.model_copy(update={"data": data})


def events_experiment(folder: Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """experiments/ml100k_events.yaml reading the sample in ``folder``."""
    return in_folder(load_experiment(EVENTS_EXPERIMENT, overrides), folder)
