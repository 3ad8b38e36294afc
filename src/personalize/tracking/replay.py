"""Prequential replays in MLflow: one run of kind ``replay`` per study, with the replay config,
the data and the cuts, the choice made on validation, metrics per (model, strategy) with their
intervals and Holm-adjusted p-values against online popularity, the per-event results, the
tables a person reads and the figures."""

from __future__ import annotations

from typing import Any

import pandas as pd

from personalize.evaluation.replay import ReplayStudy, over_time, plot_over_time, plot_strategies
from personalize.tracking import artifacts
from personalize.tracking.artifacts import free, per_user
from personalize.tracking.store import RunHandle, Tracker, git_state, package_versions

artifacts.declare(
    __name__,
    free("replay/table.md", "metrics per update strategy"),
    free("replay/summary.csv", "metrics per update strategy"),
    free("replay/selection.csv", "the strategy chosen per window"),
    free("replay/over_time.csv", "metrics per strategy and time window"),
    per_user("replay/events.parquet", "each replayed event with its user ID and outcome"),
    free("plots/over_time.png", "metrics per strategy and time window"),
    free("plots/strategies.png", "metrics per update strategy"),
)


def replay_metrics(summary: pd.DataFrame, k: int) -> dict[str, float]:
    """``<model>/<strategy>/<metric>@K_<per>[_<slice>]`` and its ``_low`` / ``_high`` /
    ``_p_holm`` companions, from :func:`personalize.evaluation.replay.summarise`'s table."""
    out: dict[str, float] = {}
    for r in summary.itertuples(index=False):
        sl = "" if r.slice == "all" else f"_{r.slice}"
        key = f"{r.model}/{r.strategy}/{r.metric}@{k}_{r.per}{sl}"
        out[key], out[f"{key}_low"], out[f"{key}_high"] = float(r.mean), float(r.low), float(r.high)
        if r.per == "user" and not pd.isna(getattr(r, "p_holm", float("nan"))):
            out[f"{key}_p_holm"] = float(r.p_holm)
    return out


def log_replay(
    study: ReplayStudy,
    experiment: str,
    uri: str | None,
    data: dict[str, Any],
    parent: RunHandle | None = None,
) -> RunHandle:
    """Log ``study`` as a finished run of kind ``replay``; ``data``: the dataset's name,
    fingerprint and row counts. Returns the run."""
    config = study.config
    tracker = Tracker(experiment, uri)
    run = tracker.start(f"replay k={config.k}", "replay", parent=parent)
    try:
        chosen = study.selection[study.selection["chosen"]]
        run.log_params(
            {
                "replay": config.model_dump(mode="json"),
                "data": data,
                "cuts": {"valid_start_row": study.valid_start, "test_start_row": study.test_start},
                "chosen": {
                    f"{m}/{s}": setting for m, s, setting in chosen[["model", "strategy", "setting"]].values
                },
                **git_state(),
                "version": package_versions(),
            }
        )
        run.log_metrics(replay_metrics(study.summary, config.k))
        run.log_metrics({f"seconds_{phase}": s for phase, s in study.seconds.items()})
        run.log_metrics({f"{model}/retrain/refits": n for model, n in study.refits.items()})
        run.log_table(study.table(), "replay/table.md")
        run.log_table(study.summary, "replay/summary.csv")
        run.log_table(study.selection, "replay/selection.csv")
        run.log_table(over_time(study.results, config.window_days), "replay/over_time.csv")
        run.log_table(study.results, "replay/events.parquet")
        run.log_figure(plot_over_time(study.results, config.window_days, config.k), "plots/over_time.png")
        run.log_figure(plot_strategies(study.summary, config.k), "plots/strategies.png")
    except BaseException:
        tracker.end(run, "FAILED")
        raise
    tracker.end(run)
    return run
