"""What running an experiment gives back."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from personalize.config import ExperimentConfig
from personalize.data.ingest import Dataset
from personalize.data.splits import Split
from personalize.evaluation.leaderboard import ModelOutcome
from personalize.tracking.store import run_url


@dataclass
class ExperimentResult:
    config: ExperimentConfig
    dataset: Dataset
    splits: dict[int, Split]
    outcomes: list[ModelOutcome]
    leaderboard: pd.DataFrame
    metrics: pd.DataFrame  # every metric at every K (long form), test part
    experiment_id: str | None = None
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    ui_command: str | None = None
    extras: dict = field(default_factory=dict)
    by_segment: pd.DataFrame | None = None  # evaluation.by: segment (evaluation.breakdown)
    routing: pd.DataFrame | None = None  # the routed hybrid against the best single model
    segment_names: dict[int, str] = field(default_factory=dict)

    @property
    def best(self) -> ModelOutcome:
        name = self.leaderboard.iloc[0]["model"]
        return next(o for o in self.outcomes if o.label == name)

    def run_url(self, port: int = 5000) -> str | None:
        if self.experiment_id is None:
            return None
        return run_url(self.experiment_id, self.parent_run_id, port, self.tracking_uri)


@dataclass
class CurveResult:
    """The privacy-utility curve: each unit's experiment and the curve table
    (:func:`personalize.evaluation.privacy_curve.curve_table`)."""

    config: ExperimentConfig
    parts: list[ExperimentResult]
    table: pd.DataFrame
    metric: str
    experiment_id: str | None = None
    run_id: str | None = None
    tracking_uri: str | None = None
