"""Segment popularity: the most popular items among the user's segment.

score(u, i) = the training popularity of item i among the users of u's segment (the sum of
their interactions' training weights; ties: lower item index). The segment is a user attribute
(``segment`` in the users table), assigned by the segmentation stage from the data the model is
fitted on -- from the user's profile when they have training interactions, from their
demographics when they have none -- so a cold user with demographics gets their segment's items
instead of everyone's. A user without a segment (or unknown) gets overall popularity.

A segment with no training interaction falls back to overall popularity (its row is the
overall scores).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from personalize import scoring
from personalize.config.model import ModelConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError
from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, ErasureNeeds, Recommender

SEGMENT = C.SEGMENT


class SegmentPopularityConfig(ModelConfig):
    """No hyperparameters."""


def user_segments(data: InteractionData) -> np.ndarray:
    """Each indexed user's segment (-1: none) from the users table's ``segment`` column."""
    if SEGMENT not in data.users.columns:
        raise ConfigError(
            "segment_popularity needs user segments: set segments.enabled: true in the experiment "
            "(the recipe then labels every user before fitting)"
        )
    values = pd.to_numeric(data.users[SEGMENT], errors="coerce").to_numpy(dtype=np.float64)
    return np.where(np.isnan(values), -1, values).astype(np.int64)


class SegmentPopularity(Recommender):
    """score(u, i) = popularity of item i among u's segment (module doc); overall popularity for
    users without a segment."""

    name = "segment_popularity"
    erasure = ErasureNeeds(item_side_from_all_users=True, per_user_state="segment labels")
    family = "baseline"
    Config = SegmentPopularityConfig
    handles_cold_users = True

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        segment = user_segments(data)
        n_segments = int(segment.max()) + 1 if (segment >= 0).any() else 0
        frame = data.frame
        weights = frame[C.WEIGHT].to_numpy() if C.WEIGHT in frame.columns else np.ones(len(frame))
        row_segment = segment[frame[C.USER_IDX].to_numpy()]
        scores = np.tile(data.item_popularity.astype(np.float64), (max(n_segments, 1), 1))
        for s in range(n_segments):
            rows = row_segment == s
            if rows.any():
                scores[s] = np.bincount(
                    frame[C.ITEM_IDX].to_numpy()[rows], weights=weights[rows], minlength=data.n_items
                )
        self.scores_ = scores.astype(np.float32)
        self.segment_ = segment

    def _scorer(self) -> scoring.Segmented:
        return scoring.Segmented(scores=self.scores_, segment=self.segment_)

    def _state(self):
        return {"scores": self.scores_, "segment": self.segment_}

    def _set_state(self, state) -> None:
        self.scores_ = state["scores"]
        self.segment_ = state["segment"]
