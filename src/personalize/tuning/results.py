"""What a tuning session gives back: per model its study's outcome, then the final comparison."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd
import yaml

from personalize.config import ExperimentConfig
from personalize.recipe import ExperimentResult

DEFAULT_SUFFIX = " (default)"  # the label of a tuned model's untuned self in the final comparison


@dataclass
class StudyOutcome:
    """What tuning found for one model (``tuned=False``: no search space, evaluated untuned)."""

    label: str
    model_type: str
    tuned: bool
    study_name: str | None = None
    best_value: float | None = None  # validation metric of the best trial
    best_trial: int | None = None
    best_params: dict[str, Any] = field(default_factory=dict)  # params to refit with (pasteable)
    best_epoch: int | None = None
    default_params: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)  # untuned models keep their grid
    counts: dict[str, int] = field(default_factory=dict)  # complete / pruned / failed / retried
    epochs_trained: int = 0  # over all finished trials
    epochs_in_pruned: int = 0  # epochs trained by the trials that were pruned
    epochs_not_run: int = 0  # epoch budget the pruned trials did not use (an upper bound of the saving)
    run_id: str | None = None  # MLflow run of the study
    seconds: float = 0.0  # this process's wall time on the study
    timed_out: bool = False
    resumed: bool = False  # the study existed in the storage: this session continued it
    trials_before: int = 0  # trials that counted towards the budget when this session opened it
    new_trials: int = 0  # trials this session (and its workers) added
    best_is_default: bool = False  # the best trial is the untuned params (trial 0)
    per_user: dict[int, pd.Series] = field(default_factory=dict, repr=False)  # keep_per_user only
    study: optuna.Study | None = field(default=None, repr=False)  # for plots (see tuning.plots)

    def spec(self) -> dict[str, Any]:
        """The model entry to paste under ``models:`` of an experiment file."""
        entry: dict[str, Any] = {"type": self.model_type, "name": self.label}
        if self.best_params:
            entry["params"] = self.best_params
        if self.grid:
            entry["grid"] = self.grid
        return entry

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.label,
            "type": self.model_type,
            "tuned": self.tuned,
            "complete": self.counts.get("complete", 0),
            "pruned": self.counts.get("pruned", 0),
            "failed": self.counts.get("failed", 0),
            "retried": self.counts.get("retried", 0),
            "best valid": self.best_value,
            "best trial": self.best_trial,
            "best epoch": self.best_epoch,
            "best params": json.dumps(self.best_params, sort_keys=True),
            "epochs trained": self.epochs_trained,
            "epochs in pruned trials": self.epochs_in_pruned,
            "epoch budget not run (pruned)": self.epochs_not_run,
            "seconds": round(self.seconds, 2),
        }


@dataclass
class TuningResult:
    """A tuning session: every model's study, the final test comparison and its statistics.

    :meth:`best_on_test` names the best model of the final comparison on *test* (a report, not
    a choice: the exported champion is chosen on validation); the experiment whose models carry
    the tuned params is :func:`personalize.tuning.final.tuned_experiment`.
    """

    config: ExperimentConfig
    metric: str
    studies: list[StudyOutcome]
    final: ExperimentResult | None = None
    comparison: pd.DataFrame | None = None  # tuned versus default, paired
    session_run_id: str | None = None
    experiment_id: str | None = None
    storage: str | None = None
    ui_command: str | None = None
    tracking_uri: str | None = None

    def study(self, label: str) -> StudyOutcome:
        return next(s for s in self.studies if s.label == label)

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame([s.summary() for s in self.studies])

    @property
    def leaderboard(self) -> pd.DataFrame | None:
        return None if self.final is None else self.final.leaderboard

    def best_params_yaml(self) -> str:
        """Every model's entry with its best params, to paste under ``models:``."""
        lines = [f"# Tuned on validation {self.metric} ({self.config.tuning.trials} trials per model)."]
        for s in self.studies:
            if s.tuned and s.best_value is not None:
                lines.append(
                    f"# {s.label}: best trial {s.best_trial}, valid {self.metric} = {s.best_value:.4f}"
                )
        entries = [s.spec() for s in self.studies if not s.tuned or s.best_value is not None]
        return "\n".join(lines) + "\n" + yaml.safe_dump(entries, sort_keys=False, default_flow_style=None)

    def best_on_test(self) -> dict[str, Any] | None:
        """The best model of the final comparison on test: label, type, params, seeds,
        validation and test values, and the MLflow runs (final model run, study run). None before
        the final comparison."""
        if self.final is None:
            return None
        row = self.final.leaderboard.iloc[0]
        label = str(row["model"])
        outcome = next(o for o in self.final.outcomes if o.label == label)
        base = label.removesuffix(DEFAULT_SUFFIX)
        study = next((s for s in self.studies if s.label == base), None)
        primary = self.config.evaluation.primary_metric
        return {
            "label": label,
            "type": outcome.model_type,
            "params": outcome.params,
            "seeds": [s.seed for s in outcome.seeds],
            "tuned": bool(study and study.tuned and label == base),
            "valid_value": study.best_value if study and label == base else None,
            f"test_{primary}": float(row[primary]),
            "final_model_run_id": outcome.run_id,
            "final_run_id": self.final.parent_run_id,
            "study_run_id": study.run_id if study else None,
        }
