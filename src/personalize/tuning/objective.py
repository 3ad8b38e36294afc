"""One trial: sample params, fit with the recipe's own step on train, return the validation metric."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
import pandas as pd

from personalize.config import ExperimentConfig, ModelSpec
from personalize.recipe import PreparedSplit, fit_and_evaluate
from personalize.tracking.runs import result_metrics
from personalize.tuning.storage import worker_name


class Objective:
    """One trial: sample params, fit with the recipe's step on train, return the validation metric.

    ``keep_per_user`` keeps each complete trial's per-user validation values (for intervals).
    """

    def __init__(
        self,
        spec: ModelSpec,
        seed: int,
        prepared: PreparedSplit,
        config: ExperimentConfig,
        metric: str,
        start_run: Callable[[optuna.Trial, dict], Any] | None = None,
        keep_per_user: bool = False,
    ):
        self.spec = spec
        self.seed = seed
        self.prepared = prepared
        self.config = config
        self.metric = metric
        self.start_run = start_run
        self.keep_per_user = keep_per_user
        self.per_user: dict[int, pd.Series] = {}

    def params(self, trial: optuna.Trial) -> dict[str, Any]:
        return {**self.spec.params, **{k: dim.suggest(trial, k) for k, dim in self.spec.search.items()}}

    def __call__(self, trial: optuna.Trial) -> float:
        params = self.params(trial)
        trial.set_user_attr("worker", worker_name())
        try:
            run = self.start_run(trial, params) if self.start_run else None
        except Exception as exc:  # the tracking store refused the run: a failed trial, not a lost one
            trial.set_user_attr("error", f"tracking: {type(exc).__name__}: {exc}"[:1000])
            raise
        epochs = 0

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            nonlocal epochs
            epochs = epoch
            if run is not None:
                run.on_epoch(epoch, metrics)

        def on_report(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}: valid {self.metric} = {value:.5f}")

        spec = ModelSpec(type=self.spec.type, name=self.spec.label, params=params)
        try:
            outcome, model = fit_and_evaluate(
                spec, self.seed, self.prepared, self.config, on_epoch, on_report, evaluate_test=False
            )
            value = float(outcome.valid.summary[self.metric])
            if not np.isfinite(value):
                raise FloatingPointError(f"validation {self.metric} is {value}")
        except optuna.TrialPruned:
            trial.set_user_attr("epochs_run", epochs)
            if run is not None:
                run.end("PRUNED", {"epochs_run": epochs})
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("error", error[:1000])
            trial.set_user_attr("epochs_run", epochs)
            if run is not None:
                run.end("FAIL", {"epochs_run": epochs}, error=error)
            raise
        except BaseException:  # Ctrl-C: the trial is retried when the study resumes
            if run is not None:
                run.end("INTERRUPTED", {"epochs_run": epochs})
            raise
        trial.set_user_attr("selected_params", outcome.selected_params)
        trial.set_user_attr("best_epoch", outcome.best_epoch)
        trial.set_user_attr("epochs_run", int(model.epochs_run_))
        trial.set_user_attr("fit_seconds", round(outcome.fit_seconds, 4))
        if self.keep_per_user:
            per_user = outcome.valid.per_user
            self.per_user[trial.number] = per_user.loc[per_user["evaluated"], self.metric]
        if run is not None:
            final = result_metrics("valid", outcome.valid.summary)
            if outcome.history:  # on the learning curve, at the best epoch
                run.on_epoch(outcome.best_epoch, final)
                final = {}
            run.end(
                "COMPLETE",
                {
                    **final,
                    "objective": value,
                    "best_epoch": outcome.best_epoch or 0,
                    "epochs_run": int(model.epochs_run_),
                    "fit_seconds": outcome.fit_seconds,
                },
            )
        return value
