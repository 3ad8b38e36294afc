"""Segmentation runs in MLflow: one run of kind ``segmentation`` per study, with the config, the
chosen k and why, silhouette / stability / classifier metrics, the tables a person reads
(selection, segments with their names, content strategies, classifier scores), the profile table's
fingerprint (and the table itself), and every figure."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from personalize.segments.classifier import plot_confusion, plot_reliability, plot_scores
from personalize.segments.describe import format_description, plot_segment_profiles, segment_map
from personalize.segments.pipeline import SegmentStudy
from personalize.segments.plots import plot_routes, plot_selection, plot_stability
from personalize.tracking import artifacts
from personalize.tracking.artifacts import free, per_user
from personalize.tracking.store import RunHandle, Tracker, git_state, package_versions

artifacts.declare(
    __name__,
    free("segments/selection.csv", "quality of each number of segments"),
    free("segments/subsets.csv", "metrics per segment and feature subset"),
    free("segments/routes.csv", "the model each segment is routed to"),
    free("segments/segments.md", "each segment described by its members' averages"),
    free("segments/strategy.csv", "metrics per routing strategy"),
    free("segments/classifier.csv", "the demographics classifier's scores"),
    per_user("segments/labels.parquet", "each user's segment"),
    per_user("segments/profiles.parquet", "each user's profile (behaviour and demographics)"),
    free("plots/selection.png", "quality of each number of segments"),
    free("plots/stability.png", "stability of each number of segments"),
    free("plots/routes.png", "the model each segment is routed to"),
    free("plots/map.png", "users as unlabelled points of a 2-D map, coloured by segment"),
    free("plots/segment_profiles.png", "each segment's average profile"),
    free("plots/classifier_scores.png", "the demographics classifier's scores"),
    free("plots/classifier_reliability.png", "the demographics classifier's reliability"),
    free("plots/classifier_confusion_n*.png", "the demographics classifier's confusion matrix"),
)


def log_segment_study(
    study: SegmentStudy,
    experiment: str,
    uri: str | None,
    data: dict[str, Any],
    parent: RunHandle | None = None,
) -> RunHandle:
    """Log ``study`` as a finished run of kind ``segmentation``; ``data``: the dataset's name,
    fingerprint and the split it was fitted on. Returns the run."""
    seg = study.segmentation
    tracker = Tracker(experiment, uri)
    run = tracker.start(f"segments k={seg.k}", "segmentation", parent=parent)
    try:
        run.log_params(
            {
                "segments": seg.config.model_dump(mode="json"),
                "data": data,
                "chosen": {
                    "k": seg.k,
                    "method": seg.model.method,
                    "reason": seg.choice.reason,
                    "stability_met": seg.choice.stability_met,
                },
                "profile": {
                    "fingerprint": seg.profiles.fingerprint,
                    "feature_set": seg.profiles.feature_set,
                    "cutoff": str(seg.profiles.cutoff),
                    "users": len(seg.profiles.table),
                },
                **git_state(),
                "version": package_versions(),
            }
        )
        run.set_tags({"profile_fingerprint": seg.profiles.fingerprint, "segments_k": seg.k})
        run.log_metrics(
            {
                k: float(v)
                for k, v in study.summary().items()
                if isinstance(v, (int, float, np.integer, np.floating, bool)) and not pd.isna(v)
            }
        )
        names = pd.Series(seg.names, name="name")
        run.log_table(seg.selection, "segments/selection.csv")
        run.log_table(study.subsets, "segments/subsets.csv")
        run.log_table(study.routes, "segments/routes.csv")
        description = format_description(seg.description).assign(name=names.reindex(seg.description.index))
        run.log_table(description, "segments/segments.md")
        run.log_table(study.strategy, "segments/strategy.csv")
        run.log_table(study.classifier.summary, "segments/classifier.csv")
        run.log_table(seg.model.labels.reset_index(), "segments/labels.parquet")
        run.log_table(seg.profiles.table.reset_index(), "segments/profiles.parquet")
        figures = {
            "plots/selection.png": plot_selection(seg.selection, seg.choice) if len(seg.selection) else None,
            "plots/stability.png": plot_stability(seg.selection, seg.choice) if len(seg.selection) else None,
            "plots/routes.png": plot_routes(study.routes),
            "plots/map.png": segment_map(study.x, seg.model.labels, names=names),
            "plots/segment_profiles.png": plot_segment_profiles(seg.description, names),
            "plots/classifier_scores.png": plot_scores(study.classifier),
            "plots/classifier_reliability.png": plot_reliability(study.classifier),
        }
        for n in sorted({int(n) for n in study.classifier.summary["first_n"] if n > 0}):
            figures[f"plots/classifier_confusion_n{n}.png"] = plot_confusion(study.classifier, n)
        for path, fig in figures.items():
            if fig is not None:
                run.log_figure(fig, path)
    except BaseException:
        tracker.end(run, "FAILED")
        raise
    tracker.end(run)
    return run
