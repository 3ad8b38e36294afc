"""Random: a uniformly random ranking per user, the floor every model must clear."""

from __future__ import annotations

import numpy as np

from personalize import scoring
from personalize.config.model import ModelConfig
from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, ErasureNeeds, Recommender


class RandomConfig(ModelConfig):
    """No hyperparameters."""


class RandomRecommender(Recommender):
    """Scores are i.i.d. uniform per (user, item), drawn from a generator seeded by
    (seed, user index): a user's ranking does not depend on which other users are scored.
    Cold and unknown users get random rankings too (not popularity)."""

    name = "random"
    erasure = ErasureNeeds(item_side_from_all_users=False)
    family = "baseline"
    Config = RandomConfig
    stochastic = True
    handles_cold_users = True
    exportable = False  # a floor for comparisons, not something to serve

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        pass

    def _scorer(self) -> scoring.Computed:
        return scoring.Computed(function=self._random_scores)

    def _random_scores(self, users: np.ndarray) -> np.ndarray:
        out = np.empty((len(users), self.n_items), dtype=np.float32)
        for row, user in enumerate(users):
            out[row] = np.random.default_rng([self.seed, int(user)]).random(self.n_items, dtype=np.float32)
        return out
