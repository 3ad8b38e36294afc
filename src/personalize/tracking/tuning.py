"""Logging a tuning session in the protocol's hierarchy: session run -> one run per model study
-> nested runs per trial.

- session run (kind ``session``): the resolved config, the tuning budget (``reproducible`` is
  false under a wall-time budget), storage, metric, data fingerprint, git commit, package
  versions; at the end the studies table, every model's best params as one pasteable YAML
  block, and the tuned-versus-default comparison. The final comparison on test is an
  ``experiment`` run nested under the session (its model and seed runs below it).
- model study run (kind ``model``): the search space, the study name, per-study counts
  (complete / pruned / failed trials, epochs trained), the best validation value and params,
  and artifacts: ``plots/optimization_history.png``, ``plots/param_importances.png``,
  ``plots/intermediate_values.png`` (iterative models), ``trials.csv`` and ``best_params.yaml``.
- trial run (kind ``trial``): the trial's params, the validation metric per reported epoch
  (step = epoch) and the training loss, the final validation metrics, ``best_epoch`` and
  ``epochs_run``; tag ``trial_state`` = COMPLETE / PRUNED / FAIL with MLflow status FINISHED /
  KILLED / FAILED (a failing trial also gets an ``error`` tag).

Several processes (workers, or a run resumed after a kill) log into the same runs: the run IDs
are kept as user attributes of the Optuna studies, and the process that creates a study (an
atomic operation of the storage) creates its run; the others wait for the ID and reuse it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import optuna
import pandas as pd

from personalize.evaluation.protocol import protocol_text
from personalize.tracking import artifacts
from personalize.tracking.artifacts import free
from personalize.tracking.store import RunHandle, Tracker, git_state, metric_key, package_versions

RUN_ATTR = "mlflow_run_id"

artifacts.declare(
    __name__,
    free("config.yaml", "the resolved experiment config"),
    free("protocol.md", "the evaluation protocol's text"),
    free("trials.csv", "each trial's params and validation metric"),
    free("best_params.yaml", "the best params found"),
    free("studies.csv", "each model's study: trials, best value"),
    free("tuned_vs_default.csv", "metrics of tuned and default params"),
    free("tuned_vs_default.md", "metrics of tuned and default params"),
    free("leaderboard.csv", "metrics per model"),
    free("leaderboard.md", "metrics per model"),
    free("plots/optimization_history.png", "validation metric per trial"),
    free("plots/param_importances.png", "importance of each param"),
    free("plots/intermediate_values.png", "validation metric per trial and epoch"),
)
STATE_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED", "INTERRUPTED": "KILLED"}


@dataclass
class TrialRun:
    """One trial's run: the learning curve is buffered and written, with the final metrics and
    the state, in one batch when the trial ends (one write per trial, not per epoch)."""

    handle: RunHandle
    tracker: Tracker
    epochs: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append((epoch, dict(metrics)))

    def end(self, state: str, metrics: dict[str, float] | None = None, error: str | None = None) -> None:
        """Write the curve, the final metrics and the ``trial_state`` tag; end with its status."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        points = [(step, values) for step, values in self.epochs] + [(0, metrics or {})]
        batch = [
            Metric(metric_key(k), float(v), now, step)
            for step, values in points
            for k, v in values.items()
            if v is not None and pd.notna(v)
        ]
        tags = [RunTag("trial_state", state)] + ([RunTag("error", error[:5000])] if error else [])
        for start in range(0, max(1, len(batch)), 1000):
            self.handle.client.log_batch(
                self.handle.run_id, metrics=batch[start : start + 1000], tags=tags if start == 0 else []
            )
        self.epochs.clear()
        self.tracker.end(self.handle, STATE_STATUS[state])


class TuningLogger:
    """Creates (or rejoins) the runs of one tuning session."""

    def __init__(
        self,
        config,
        marker_study,
        marker_created: bool,
        params: dict[str, Any],
        texts: dict[str, str],
        wait_seconds: float = 60.0,
    ):
        self.tracker = Tracker(config.tracking.experiment or config.name, config.tracking.uri)
        self.wait_seconds = wait_seconds
        self.session, fresh = self._claim(
            marker_study,
            marker_created,
            lambda: self.tracker.start(
                f"{config.name} tuning", "session", tags={"description": config.description}
            ),
        )
        if fresh:
            self.session.log_params({**params, **git_state(), "version": package_versions()})
            for path, text in texts.items():
                self.session.log_text(text, path)

    # ------------------------------------------------------------------- shared run IDs

    def _claim(self, study, created: bool, create: Callable[[], RunHandle]) -> tuple[RunHandle, bool]:
        """The run whose ID ``study`` holds (waiting for its creator), or a new one we record."""
        if not created:
            # the creator records the ID right after creating the study (before any trial runs;
            # the trials it queues from the defaults wait); a study that already ran trials
            # without an ID was run untracked: no wait
            ran = [t for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING]
            deadline = time.monotonic() + (0 if ran else self.wait_seconds)
            while True:
                run_id = study.user_attrs.get(RUN_ATTR)
                if run_id is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            if run_id is not None and self._exists(run_id):
                self.tracker.client.update_run(run_id, status="RUNNING")
                run = self.tracker.client.get_run(run_id)
                return RunHandle(
                    self.tracker.client, run_id, run.info.experiment_id, run.info.run_name
                ), False
        handle = create()
        study.set_user_attr(RUN_ATTR, handle.run_id)
        return handle, True

    def _exists(self, run_id: str) -> bool:
        try:
            run = self.tracker.client.get_run(run_id)
        except Exception:  # not in this store (e.g. another tracking URI)
            return False
        return run.info.experiment_id == self.tracker.experiment_id and run.info.lifecycle_stage == "active"

    # ------------------------------------------------------------------------- studies

    def start_model(self, study, created: bool, label: str, tags: dict, params: dict) -> RunHandle:
        handle, fresh = self._claim(
            study,
            created,
            lambda: self.tracker.start(label, "model", parent=self.session, tags=tags),
        )
        if fresh:
            handle.log_params(params)
        return handle

    def start_trial(
        self, model_run: RunHandle, label: str, number: int, tags: dict, params: dict
    ) -> TrialRun:
        handle = self.tracker.start(f"{label} trial {number}", "trial", parent=model_run, tags=tags)
        handle.log_params(params)
        return TrialRun(handle, self.tracker)

    def close_dead_trials(self, run_ids: list[str]) -> int:
        """Mark FAILED the runs of trials whose worker died (still RUNNING in MLflow)."""
        closed = 0
        for run_id in run_ids:
            if self._exists(run_id) and self.tracker.client.get_run(run_id).info.status == "RUNNING":
                handle = RunHandle(self.tracker.client, run_id, self.tracker.experiment_id, "")
                handle.set_tags({"trial_state": "FAIL", "error": "the worker stopped (no heartbeat)"})
                self.tracker.end(handle, "FAILED")
                closed += 1
        return closed

    def finish_model(
        self,
        handle: RunHandle,
        metrics: dict[str, float],
        params: dict[str, Any],
        figures: dict[str, plt.Figure | None],
        tables: dict[str, pd.DataFrame],
        texts: dict[str, str],
    ) -> None:
        handle.log_metrics(metrics)
        handle.set_tags({f"best.{k}": v for k, v in params.items()})
        for path, fig in figures.items():
            if fig is not None:
                handle.log_figure(fig, path)
                plt.close(fig)
        for path, frame in tables.items():
            handle.log_table(frame, path)
        for path, text in texts.items():
            handle.log_text(text, path)
        self.tracker.end(handle)

    # ------------------------------------------------------------------------- session

    def finish(
        self,
        metrics: dict[str, float],
        params: dict[str, Any],
        tables: dict[str, pd.DataFrame],
        texts: dict[str, str],
        end: bool = True,
    ) -> None:
        s = self.session
        s.log_metrics(metrics)
        s.set_tags({k: v for k, v in params.items()})
        for path, frame in tables.items():
            s.log_table(frame, path)
        for path, text in texts.items():
            s.log_text(text, path)
        if end:
            self.tracker.end(s)

    def fail(self, interrupted: bool = False) -> None:
        self.tracker.end(self.session, "KILLED" if interrupted else "FAILED")

    @property
    def experiment_id(self) -> str:
        return self.tracker.experiment_id

    def ui_command(self) -> str:
        return self.tracker.ui_command()


# ---------------------------------------------------------------- what the runs hold


def session_logger(
    config,
    marker_study,
    created: bool,
    *,
    storage: str,
    metric: str,
    data_name: str,
    data_fingerprint: str,
    split_params: dict[str, Any],
) -> TuningLogger:
    """The session run (created, or rejoined through ``marker_study``) with its params, texts and
    tags: the budget, storage, metric, data, split, seeds and models, config and protocol."""
    tuning = config.tuning
    params = {
        "tuning": tuning.model_dump(mode="json"),
        "storage": storage,
        "metric": metric,
        "reproducible": tuning.timeout_minutes is None,
        "data": {"name": data_name, "fingerprint": data_fingerprint},
        "split": split_params,
        "seeds": config.seeds,
        "models": [m.label for m in config.models],
    }
    texts = {"config.yaml": config.to_yaml(), "protocol.md": protocol_text()}
    logger = TuningLogger(config, marker_study, created, params, texts)
    logger.session.set_tags(
        {
            "tuning.trials": tuning.trials,
            "tuning.budget": "wall time (not reproducible)" if tuning.timeout_minutes else "trials",
            "dataset_fingerprint": data_fingerprint,
            "split": config.split.name,
        }
    )
    return logger


def study_metrics(summary: dict[str, Any], metric: str) -> dict[str, float]:
    """A model study run's metrics from a study summary (``StudyOutcome.summary()``)."""
    metrics = {
        f"best_valid_{metric_key(metric)}": summary["best valid"],
        "best_trial": summary["best trial"],
        "best_epoch": summary["best epoch"],
        "trials_complete": summary["complete"],
        "trials_pruned": summary["pruned"],
        "trials_failed": summary["failed"],
        "trials_retried": summary["retried"],
        "epochs_trained": summary["epochs trained"],
        "epochs_in_pruned_trials": summary["epochs in pruned trials"],
        "epoch_budget_not_run": summary["epoch budget not run (pruned)"],
        "study_seconds": summary["seconds"],
    }
    return {k: v for k, v in metrics.items() if v is not None}


def trials_table(study) -> pd.DataFrame:
    """Every trial of an Optuna study: number, value, params, state, user attributes, seconds."""
    trials = study.trials_dataframe(attrs=("number", "value", "params", "state", "user_attrs", "duration"))
    trials = trials.drop(
        columns=[c for c in trials.columns if c.endswith("selected_params")], errors="ignore"
    )
    if "duration" in trials:
        trials["duration"] = trials["duration"].dt.total_seconds()
    return trials
