"""The ``replay:`` block of an experiment file: prequential replay (``personalize replay``).

The protocol is PROTOCOL.md, "Prequential replay": one global cut in the total order, the
events after it replayed in order, recommend-then-learn per (user, second) batch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from personalize.config.base import StrictModel

Strategy = Literal["static", "online_popularity", "foldin", "retrain", "foldin_popularity"]
STRATEGIES: tuple[str, ...] = ("static", "online_popularity", "foldin", "retrain")


class ReplayConfig(StrictModel):
    """Prequential replay: the cut, K, the update strategies and their hyperparameter grids."""

    test_fraction: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Share of rows (in the total order) replayed as the test period, the last ones.",
    )
    valid_fraction: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="Share of rows replayed as the validation period, just before the test period "
        "(hyperparameters are chosen on it, never on test).",
    )
    k: int = Field(default=10, ge=1, description="Length of each recommended list (HR@K, NDCG@K).")
    strategies: list[Strategy] = Field(
        default_factory=lambda: list(STRATEGIES),
        min_length=1,
        description="Update strategies: static, online_popularity, foldin, retrain, and "
        "foldin_popularity (fold-in blended with online popularity; not in the default list).",
    )
    models: list[str] | None = Field(
        default=None,
        description="Names (labels) of the experiment's models to replay (null: every model).",
    )
    retrain_days: list[float] = Field(
        default_factory=lambda: [7.0, 14.0],
        min_length=1,
        description="Retrain periods (days of replay time) tried on validation for 'retrain'.",
    )
    popularity_half_life_days: list[float | None] = Field(
        default_factory=lambda: [None, 7.0],
        min_length=1,
        description="Decay half-lives (days) of the online popularity counts tried on validation "
        "(null: no decay).",
    )
    blend_weights: list[float] = Field(
        default_factory=lambda: [0.3, 0.6],
        min_length=1,
        description="Weights of the fold-in scores tried on validation for 'foldin_popularity' "
        "(the rest goes to online popularity; both min-max scaled per user).",
    )
    window_days: float = Field(default=7.0, gt=0, description="Width of the time windows of the plots.")

    @field_validator("retrain_days", "popularity_half_life_days")
    @classmethod
    def _positive(cls, values: list[float | None]) -> list[float | None]:
        if any(v is not None and v <= 0 for v in values):
            raise ValueError(f"periods and half-lives must be positive days, got {values}")
        return values

    @field_validator("blend_weights")
    @classmethod
    def _weights(cls, values: list[float]) -> list[float]:
        if any(not 0 < v < 1 for v in values):
            raise ValueError(f"blend weights must lie strictly between 0 and 1, got {values}")
        return values

    @field_validator("strategies")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError(f"strategies must not repeat, got {values}")
        return values

    @model_validator(mode="after")
    def _fractions(self) -> ReplayConfig:
        if self.test_fraction + self.valid_fraction >= 1:
            raise ValueError(
                f"test_fraction + valid_fraction must leave rows to fit on, got "
                f"{self.test_fraction} + {self.valid_fraction}"
            )
        return self
