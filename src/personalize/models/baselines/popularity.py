"""Popularity: every user gets the most-interacted items of the training data."""

from __future__ import annotations

import numpy as np

from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, ModelConfig, Recommender, ScorerSpec


class PopularityConfig(ModelConfig):
    """No hyperparameters."""


class StaticScores(Recommender):
    """Base of models that give every user the same item scores ``scores_`` (fitted by the
    subclass): scoring, persistence and export are shared."""

    family = "baseline"
    handles_cold_users = True

    def _score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.scores_, (len(users), self.n_items)).copy()

    def export_spec(self) -> ScorerSpec:
        return ScorerSpec("static", {"scores": self.scores_})

    def _state(self):
        return {"scores": self.scores_}

    def _set_state(self, state) -> None:
        self.scores_ = state["scores"]


class Popularity(StaticScores):
    """score(u, i) = number of training interactions with item i (ties: lower item index).
    Identical for known, cold and unknown users."""

    name = "popularity"
    Config = PopularityConfig

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        self.scores_ = data.item_counts.astype(np.float32)
