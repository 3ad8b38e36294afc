"""Segmentation of one split's training data, and the labels every user gets from it.

:func:`fit_segmentation` builds the profile table of the training users (training rows only),
scales it, chooses k (or takes a fixed one) and fits the segments; it also fits the
demographics-only classifier that labels users without history, and names the segments.
:meth:`Segmentation.labels` labels every user of a dataset's index from the data a model is
fitted on: a user with interactions there by the nearest segment of their profile (built from
that data), a user without any by their demographics, and a user with neither ``-1``.

:func:`segment_study` adds what a person reads before trusting the segments: the selection table
with the chosen k, silhouettes of the behaviour-only and taste-only subsets, the autoencoder route,
the segment descriptions and content strategies, the 2-D map, and the classifier's temporal
evaluation from a user's first N interactions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from personalize.config.segments import SegmentsConfig
from personalize.core import columns as C
from personalize.core.errors import DataError
from personalize.data.matrix import InteractionData
from personalize.features.profile_table import ProfileTable, build_profile_table, demographic_rows
from personalize.segments.classifier import ClassifierEvaluation, SegmentClassifier, evaluate_classifier
from personalize.segments.clustering import (
    Choice,
    SegmentModel,
    clustering_input,
    fit_segment_model,
    one_thread,
    subset_silhouettes,
)
from personalize.segments.describe import content_strategy, describe_segments, name_segments


@dataclass
class Segmentation:
    """Segments fitted on one split's training users, and how any user gets a label."""

    config: SegmentsConfig
    profiles: ProfileTable
    model: SegmentModel
    selection: pd.DataFrame
    choice: Choice
    embeddings: np.ndarray | None
    labeller: SegmentClassifier | None  # demographics-only: users without history
    description: pd.DataFrame
    names: dict[int, str]

    @property
    def k(self) -> int:
        return self.model.k

    def profile_table(self, data: InteractionData) -> ProfileTable:
        """The profile table of the users with interactions in ``data``."""
        return build_profile_table(data, self.embeddings, self.profiles.data_fingerprint)

    def labels(self, data: InteractionData) -> pd.Series:
        """user_id -> segment for every user of ``data``'s index: by profile (users with
        interactions in ``data``), else by demographics, else -1."""
        out = pd.Series(-1, index=pd.Index(data.index.users, name=C.USER), name=C.SEGMENT, dtype=np.int64)
        profiles = clustering_input(self.profile_table(data), self.config.profile)
        if len(profiles.table):
            with one_thread():
                assigned = self.model.assign(profiles)
            out.loc[assigned.index] = assigned.to_numpy()
        rest = out.index[out.to_numpy() < 0]
        if self.labeller is not None and len(rest):
            users = data.users.set_index(C.USER).loc[rest].reset_index()
            rows = demographic_rows(users)
            known = (rows != "unknown").any(axis=1)
            if known.any():
                out.loc[rows.index[known]] = self.labeller.assign_segment(rows.loc[known]).to_numpy()
        return out

    def users_table(self, users: pd.DataFrame, data: InteractionData) -> pd.DataFrame:
        """``users`` with the ``segment`` column the models read (labels from ``data``)."""
        labels = self.labels(data)
        return users.assign(**{C.SEGMENT: users[C.USER].map(labels).fillna(-1).astype(np.int64).to_numpy()})


def fit_segmentation(
    train: InteractionData,
    config: SegmentsConfig,
    data_fingerprint: str = "",
    progress: bool = False,
) -> Segmentation:
    """Profiles of the training users, the segments (k chosen or fixed), the demographics-only
    labeller and the segments' names (module doc)."""
    embeddings = _embeddings(train, config)
    profiles = build_profile_table(train, embeddings, data_fingerprint)
    model, selection, choice = fit_segment_model(
        profiles, config.profile, config.clustering, config.seed, progress
    )
    labels = model.labels
    labeller = None
    if labels.nunique() > 1 and (profiles.table[["gender", "occupation"]] != "unknown").any().any():
        rows = profiles.table.loc[labels.index]
        try:
            labeller = SegmentClassifier(config.classifier, demographics_only=True, seed=config.seed)
            labeller.fit(rows, labels)
        except DataError:  # too few users per segment to hold some out for early stopping
            fixed = config.classifier.model_copy(update={"early_stopping": False})
            labeller = SegmentClassifier(fixed, demographics_only=True, seed=config.seed).fit(rows, labels)
    description = describe_segments(labels, profiles, train, config.describe)
    names = name_segments(description, config.describe)
    return Segmentation(
        config=config,
        profiles=profiles,
        model=model,
        selection=selection,
        choice=choice,
        embeddings=embeddings,
        labeller=labeller,
        description=description,
        names={int(k): str(v) for k, v in names.items()},
    )


def _embeddings(train: InteractionData, config: SegmentsConfig) -> np.ndarray | None:
    if not config.profile.embedding or "taste" not in config.profile.blocks:
        return None
    from personalize.features.text import dense_item_embeddings

    return dense_item_embeddings(train.items, device=config.profile.device)


@dataclass
class SegmentStudy:
    """Everything a person reads before trusting the segments (module doc)."""

    segmentation: Segmentation
    subsets: pd.DataFrame
    routes: pd.DataFrame
    strategy: pd.DataFrame
    classifier: ClassifierEvaluation
    x: np.ndarray  # the training users' scaled profiles (rows: segmentation.model.labels.index)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The numbers a run logs and a notebook quotes."""
        seg = self.segmentation
        out: dict[str, Any] = {
            "k": seg.k,
            "method": seg.model.method,
            "silhouette": seg.model.silhouette,
            "bootstrap_ari": seg.choice.bootstrap_ari,
            "stability_met": seg.choice.stability_met,
        }
        for row in self.subsets.itertuples():
            out[f"silhouette_{row.profile}"] = row.silhouette
        for row in self.routes.itertuples():
            out[f"route_{row.route.replace(' ', '_').replace('-', '')}_silhouette"] = row.silhouette
        for row in self.classifier.summary.itertuples():
            out[f"{row.model}_n{row.first_n}_macro_f1"] = row.macro_f1
            out[f"{row.model}_n{row.first_n}_accuracy"] = row.accuracy
        return out


def segment_study(
    train: InteractionData,
    config: SegmentsConfig,
    data_fingerprint: str = "",
    progress: bool = False,
) -> SegmentStudy:
    """:func:`fit_segmentation` and what a person reads before trusting it (module doc)."""
    import time

    from personalize.segments.autoencoder import compare_routes

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    seg = fit_segmentation(train, config, data_fingerprint, progress)
    seconds["segments"] = time.perf_counter() - t0
    profiles = clustering_input(seg.profiles, config.profile)
    with one_thread():
        x = seg.model.transform(profiles)
    t0 = time.perf_counter()
    subsets = subset_silhouettes(seg.profiles, config.profile, config.clustering, seg.k, config.seed)
    routes = compare_routes(
        train, profiles, seg.model, config.clustering, config.autoencoder, seg.selection, progress=progress
    )
    seconds["comparisons"] = time.perf_counter() - t0
    strategy = content_strategy(seg.model.labels, train, config.describe, seg.description)
    t0 = time.perf_counter()
    classifier = evaluate_classifier(
        train, seg.model.labels, seg.embeddings, config.classifier, config.seed, data_fingerprint
    )
    seconds["classifier"] = time.perf_counter() - t0
    return SegmentStudy(seg, subsets, routes, strategy, classifier, x, seconds)
