"""Recent popularity: popularity with exponential time decay."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from personalize.config.model import ModelConfig
from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, ErasureNeeds
from personalize.models.baselines.popularity import StaticScores


class RecentPopularityConfig(ModelConfig):
    half_life_days: float = Field(
        default=30.0, gt=0, description="Days after which an interaction counts half as much."
    )


class RecentPopularity(StaticScores):
    """score(i) = sum over training interactions with i of 0.5 ** (age_days / half_life_days),
    where age is measured back from the latest training timestamp (the cut-off). The same for
    every user, cold and unknown users included."""

    name = "recent_popularity"
    erasure = ErasureNeeds(item_side_from_all_users=True)
    Config = RecentPopularityConfig

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        weights = np.exp2(-data.days_before_cutoff() / self.config.half_life_days)
        self.scores_ = np.bincount(
            data.frame["item_idx"].to_numpy(), weights=weights, minlength=data.n_items
        ).astype(np.float32)
