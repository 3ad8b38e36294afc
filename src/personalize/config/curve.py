"""The privacy-utility curve (``privacy_curve:`` in an experiment file).

Every differentially private model of the file (a model whose params have ``epsilon``) that
leaves ``epsilon`` unset is run once per point of the curve: at each ``epsilons`` value, and
optionally not private (no clipping, no noise) and with clipping but no noise. Each point is an
ordinary model of the experiment: the same validation grid, the same convergence rule (early
stopping on validation within the model's stated maximum of epochs), the same seeds. Models are
evaluated in the unit of their guarantee: user-level models on the experiment's split
(``user_holdout``: members are training users, non-members held-out users), event-level models
(one interaction is the unit; they cannot score held-out users) on ``event_split``.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from personalize.config.base import StrictModel
from personalize.config.split import SplitConfig


class PrivacyCurveConfig(StrictModel):
    """Points of the privacy-utility curve and where event-level models are evaluated."""

    epsilons: list[float] = Field(
        default=[0.5, 1.0, 2.0, 4.0, 8.0, 16.0],
        min_length=1,
        description="Privacy budgets epsilon of the curve (each model's delta: its own default or param).",
    )
    non_private: bool = Field(default=True, description="Also run each model without clipping or noise.")
    clipping_only: bool = Field(
        default=True, description="Also run each model with its clipping but no noise (epsilon unset)."
    )
    event_split: SplitConfig = Field(
        default_factory=lambda: SplitConfig(name="user_temporal"),
        description="Split for event-level models (they cannot score held-out users).",
    )
    max_units: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "Public upper bound N on the number of units per unit kind, e.g. {user: 1000, event: "
            "100000}: given to every private point whose model does not state its own max_units "
            "(delta and DP-SGD's sampling plan derive from it)."
        ),
    )

    @field_validator("max_units")
    @classmethod
    def _known_units(cls, values: dict[str, int]) -> dict[str, int]:
        unknown = set(values) - {"user", "event"}
        if unknown:
            raise ValueError(f"max_units: unknown units {sorted(unknown)}; expected user and/or event")
        if any(int(v) < 1 for v in values.values()):
            raise ValueError(f"max_units: every bound must be a positive integer, got {values}")
        return values

    @field_validator("epsilons")
    @classmethod
    def _positive_sorted(cls, values: list[float]) -> list[float]:
        if any(not v > 0 for v in values):
            raise ValueError(f"every epsilon must be positive, got {values}")
        if len(set(values)) != len(values):
            raise ValueError(f"epsilons must be distinct, got {values}")
        return sorted(values)
