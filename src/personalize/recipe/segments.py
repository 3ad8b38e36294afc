"""``personalize segment``: the segmentation study of an experiment, then its models broken down by
segment.

1. Load and validate the data, split it (the experiment's split, its first seed).
2. The study on the training part (:func:`personalize.segments.pipeline.segment_study`): profiles,
   k chosen over the configured range (a fixed ``segments.clustering.k`` is ignored here: the
   study is where k is chosen), stability, the subsets and the autoencoder route, descriptions,
   names and content strategies, the classifier from a user's first N interactions.
3. The versioned profile table to ``data/processed/<name>/profiles/`` and the study to MLflow.
4. With models in the experiment: :func:`run_experiment` with segments on (k: the fixed one if
   set, else the study's) and the per-segment leaderboard (``evaluation.by: segment``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from personalize.config import ExperimentConfig
from personalize.core.paths import processed_dir
from personalize.data.ingest import Dataset
from personalize.data.matrix import IdIndex, InteractionData
from personalize.data.splits import make_split
from personalize.recipe.loading import load_experiment, reload
from personalize.recipe.result import ExperimentResult
from personalize.recipe.run import run_experiment
from personalize.recipe.steps import load_data
from personalize.segments.describe import format_description
from personalize.segments.pipeline import SegmentStudy, segment_study
from personalize.tracking.segments import log_segment_study

Echo = Callable[[str], None]


@dataclass
class SegmentationResult:
    """What ``personalize segment`` gives back."""

    config: ExperimentConfig
    dataset: Dataset
    study: SegmentStudy
    profile_path: Path | None
    run_id: str | None
    experiment: ExperimentResult | None


def run_segmentation(
    config: ExperimentConfig | str | Path,
    overrides: list[str] | None = None,
    *,
    track: bool = True,
    progress: bool = True,
    echo: Echo | None = print,
) -> SegmentationResult:
    """The study, then (with models) the per-segment leaderboard (module doc)."""
    if not isinstance(config, ExperimentConfig):
        config = load_experiment(config, overrides)
    elif overrides:
        config = reload(config, overrides)
    say = echo or (lambda _msg: None)
    dataset = load_data(config)
    seed = config.seeds[0]
    split = make_split(dataset.interactions, config.split, seed, dataset.users, dataset.items)
    index = IdIndex.build(split.users, split.items, split.train, split.valid, split.test)
    train = InteractionData.build(split.train, index, split.users, split.items, dataset.events)
    study_config = config.segments.model_copy(
        update={"clustering": config.segments.clustering.model_copy(update={"k": None})}
    )
    where = f"{dataset.name} ({config.split.name}, seed {seed})"
    say(f"\nSegmenting the {len(split.train):,} training rows of {where}")
    study = segment_study(train, study_config, dataset.fingerprint, progress)
    _report(study, say)

    path = None
    if config.segments.profile.write and config.data.write_processed:
        folder = processed_dir() / dataset.name / "profiles"
        folder.mkdir(parents=True, exist_ok=True)
        profiles = study.segmentation.profiles
        path = folder / f"profiles-{config.split.name}-seed{seed}-{profiles.fingerprint[:12]}.parquet"
        profiles.to_parquet(path)
        say(f"\nProfile table: {path}")
    run_id = None
    if track:
        data = {
            "name": dataset.name,
            "fingerprint": dataset.fingerprint,
            "split": config.split.name,
            "seed": seed,
        }
        run = log_segment_study(study, config.tracking.experiment or config.name, config.tracking.uri, data)
        run_id = run.run_id
        say(f"Segmentation run: {run.url()}")

    experiment = None
    if config.models:
        k = config.segments.clustering.k or study.segmentation.k
        segments = config.segments.model_copy(
            update={"enabled": True, "clustering": config.segments.clustering.model_copy(update={"k": k})}
        )
        evaluation = config.evaluation.model_copy(update={"by": "segment"})
        run_config = config.model_copy(update={"segments": segments, "evaluation": evaluation})
        say(f"\nModels by segment (k = {k}):")
        experiment = run_experiment(run_config, track=track, progress=progress, echo=echo, dataset=dataset)
    return SegmentationResult(config, dataset, study, path, run_id, experiment)


def _report(study: SegmentStudy, say: Callable[[str], None]) -> None:
    seg = study.segmentation
    if len(seg.selection):
        shown = seg.selection[
            ["method", "k", "silhouette", "davies_bouldin", "calinski_harabasz", "seed_ari", "bootstrap_ari"]
        ]
        say("\nChoosing k (silhouette: higher is better; Davies-Bouldin: lower; stability: adjusted Rand")
        say("index between seeds and bootstrap resamples):")
        say(shown.round(3).to_markdown(index=False))
    say(f"\nChosen: {seg.model.method}, {seg.choice.reason}")
    say("\nSilhouette of the full profile beside single blocks (each in its own scaled space):")
    say(study.subsets.round(3).to_markdown(index=False))
    say("\nThe autoencoder route against K-Means on the profile (silhouette in the profile space):")
    say(
        study.routes[["route", "silhouette", "bootstrap_ari", "margin", "kept"]]
        .round(3)
        .to_markdown(index=False)
    )
    description = format_description(seg.description)
    description["name"] = pd.Series(seg.names).reindex(seg.description.index).to_numpy()
    shown = ["name", "users", "top genres (lift)", "activity", "over-represented", "typical items"]
    table = description[[c for c in shown if c in description.columns]]
    say("\nSegments:")
    say(table.to_markdown(index=False))
    say("\nContent strategy:")
    for line in study.strategy["strategy"]:
        say(f"- {line}")
    scores = study.classifier.scores("macro_f1").round(3)
    say("\nSegment from a user's first N interactions (macro-F1; temporal split of users):")
    say(scores.reset_index().to_markdown(index=False))
