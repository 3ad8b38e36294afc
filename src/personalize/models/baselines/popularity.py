"""Popularity: every user gets the most-interacted items of the training data."""

from __future__ import annotations

import numpy as np

from personalize import scoring
from personalize.config.model import ModelConfig
from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, ErasureNeeds, Recommender


class PopularityConfig(ModelConfig):
    """No hyperparameters."""


class StaticScores(Recommender):
    """Base of models that give every user the same item scores ``scores_`` (fitted by the
    subclass): scoring (kind ``static``) and persistence are shared."""

    family = "baseline"
    handles_cold_users = True

    def _scorer(self) -> scoring.Static:
        return scoring.Static(scores=self.scores_)

    def _state(self):
        return {"scores": self.scores_}

    def _set_state(self, state) -> None:
        self.scores_ = state["scores"]


class Popularity(StaticScores):
    """score(u, i) = number of training interactions with item i (ties: lower item index).
    Identical for known, cold and unknown users."""

    name = "popularity"
    erasure = ErasureNeeds(item_side_from_all_users=True)
    Config = PopularityConfig

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        self.scores_ = data.item_popularity.astype(np.float32)
