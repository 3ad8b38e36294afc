"""Views of a tuning session for notebook 03: the search spaces, the studies, and the final
comparison, narrow enough to read."""

from __future__ import annotations

import json
import time

import pandas as pd

from personalize.config import ExperimentConfig
from personalize.core.paths import experiments_dir
from personalize.recipe import load_experiment, reload
from personalize.reports import views
from personalize.tuning import plots
from personalize.tuning.results import TuningResult
from personalize.tuning.session import cap_epochs


def search_spaces(config: ExperimentConfig, models: list[str] | None = None) -> pd.DataFrame:
    """Per model: its fixed params and its search space ("not tuned" without one)."""
    return pd.DataFrame(
        [
            {
                "model": m.label,
                "fixed params": json.dumps(m.params) if m.params else "-",
                "search": ", ".join(
                    f"{k}: {v.model_dump(exclude_none=True, exclude={'type'})}" for k, v in m.search.items()
                )
                or "not tuned",
            }
            for m in config.models
            if not models or m.label in models
        ]
    )


def studies(result: TuningResult) -> pd.DataFrame:
    """Per tuned model: trials complete / pruned / failed, how many this session ran, the best
    validation value and trial (``0 (untuned)`` when the defaults won), and the best params."""
    rows = []
    for s in result.studies:
        if not s.tuned:
            continue
        best = (
            "-" if s.best_trial is None else f"{s.best_trial}" + (" (untuned)" if s.best_is_default else "")
        )
        rows.append(
            {
                "model": s.label,
                "complete / pruned / failed": " / ".join(
                    str(s.counts[k]) for k in ("complete", "pruned", "failed")
                ),
                "new this session": s.new_trials,
                f"best valid {result.metric}": "-" if s.best_value is None else f"{s.best_value:.4f}",
                "best trial": best,
                "best params": json.dumps(s.best_params, sort_keys=True),
            }
        )
    return pd.DataFrame(rows)


def final_leaderboard(result: TuningResult) -> pd.DataFrame:
    """The final comparison on test (tuned and default models), as :func:`views.leaderboard`."""
    return views.leaderboard(result.final.leaderboard, result.config.evaluation.primary_metric)


def tuned_vs_default(result: TuningResult) -> pd.DataFrame:
    """Each tuned model against its untuned self on test (Holm across the tuned models)."""
    return views.comparison(result.comparison, "the tuned models of the session")


def notebook_config(
    experiment_file: str,
    trials: int,
    *,
    sample_users: int | None = None,
    seeds: list[int] | None = None,
    storage: str | None = None,
    fresh: bool = False,
    max_epochs: int | None = None,
) -> ExperimentConfig:
    """Notebook 03's experiment: the tuning file under ``experiments/`` with the notebook's
    parameters applied. ``fresh`` starts new studies (a study prefix stamped with the time)
    instead of resuming the ones already in the storage."""
    overrides = [f"tuning.trials={trials}"]
    if sample_users:
        overrides += [f"data.sample_users={sample_users}", "data.write_processed=false"]
    if seeds:
        overrides.append(f"seeds={json.dumps(seeds)}")
    if storage:
        overrides.append(f"tuning.storage={storage}")
    config = load_experiment(experiments_dir() / experiment_file, overrides)
    if fresh:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        config = reload(config, [f"tuning.study_prefix={config.tuning.study_prefix or config.name}-{stamp}"])
    return cap_epochs(config, max_epochs) if max_epochs else config


def figures(result: TuningResult, kind: str) -> list:
    """One figure per tuned model: ``history`` (every trial), ``importances`` (where defined) or
    ``epochs`` (the per-epoch curves of iterative models)."""
    draw = {
        "history": lambda s: plots.optimization_history(
            s.study, f"{s.label}: validation {result.metric.upper()} by trial", result.metric
        ),
        "importances": lambda s: plots.param_importances(
            s.study, f"{s.label}: parameter importances", result.metric
        ),
        "epochs": lambda s: plots.intermediate_values(
            s.study, f"{s.label}: validation {result.metric.upper()} per epoch", result.metric
        ),
    }[kind]
    out = [draw(s) for s in result.studies if s.tuned and s.study is not None]
    return [f for f in out if f is not None]
