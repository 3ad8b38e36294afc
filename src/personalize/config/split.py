"""The ``split:`` block of an experiment file: which of the protocol's splits, and its parameters.

The rules themselves are :mod:`personalize.data.splits`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from personalize.config.base import StrictModel

SplitName = Literal[
    "user_temporal", "global_temporal", "leave_last_out", "user_stratified", "item_stratified", "user_holdout"
]
STOCHASTIC_SPLITS = {"user_stratified", "item_stratified", "user_holdout"}
#: splits whose validation and test users are unseen in training and give part of their history
#: to the model as input at evaluation time (fold-in)
FOLD_IN_SPLITS = {"user_holdout"}

DEFAULT_FRACTIONS: dict[str, tuple[float, float]] = {  # (valid, test)
    "user_temporal": (0.1, 0.1),
    "global_temporal": (0.1, 0.1),
    "user_stratified": (0.1, 0.1),
    "item_stratified": (0.25, 0.25),
    "user_holdout": (0.1, 0.1),
}


class SplitConfig(StrictModel):
    """Which split and its parameters (the ``split:`` block of an experiment file)."""

    name: SplitName = Field(default="user_temporal", description="One of the protocol's six splits.")
    test_fraction: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description=(
            "Share of rows to test: per user (user_temporal, user_stratified), overall "
            "(global_temporal), per item (item_stratified) or of users (user_holdout). Default 0.1 "
            "(0.25 for item_stratified)."
        ),
    )
    valid_fraction: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description=(
            "Share of rows to validation, same unit as test_fraction. item_stratified carves it "
            "from the train part by the same rule. user_temporal always uses as many validation "
            "rows as test rows. Default 0.1 (0.25 for item_stratified)."
        ),
    )
    n: int = Field(
        default=1,
        ge=1,
        description="leave_last_out: interactions per user to test (and to validation).",
    )
    input_fraction: float = Field(
        default=0.8,
        gt=0,
        lt=1,
        description=(
            "user_holdout: share of each held-out user's history, first in the total order, given to "
            "the model as input (fold-in); the rest is the target."
        ),
    )
    min_user_interactions: int = Field(
        default=3,
        ge=1,
        description="user_temporal: users with fewer interactions stay entirely in train.",
    )

    @model_validator(mode="after")
    def _fractions_leave_train(self) -> SplitConfig:
        valid, test = self.fractions()
        if valid + test >= 1 and self.name != "item_stratified":
            raise ValueError(
                f"split.valid_fraction + split.test_fraction = {valid + test:g} leaves no training data"
            )
        return self

    def fractions(self) -> tuple[float, float]:
        valid, test = DEFAULT_FRACTIONS.get(self.name, (0.0, 0.0))
        return (
            self.valid_fraction if self.valid_fraction is not None else valid,
            self.test_fraction if self.test_fraction is not None else test,
        )

    @property
    def stochastic(self) -> bool:
        return self.name in STOCHASTIC_SPLITS

    @property
    def folds_in(self) -> bool:
        """True when held-out users are scored through fold-in of their input part."""
        return self.name in FOLD_IN_SPLITS

    def params(self) -> dict[str, object]:
        """The resolved parameters, as logged with every run."""
        valid, test = self.fractions()
        out: dict[str, object] = {"name": self.name}
        if self.name == "leave_last_out":
            out["n"] = self.n
        else:
            out.update(valid_fraction=valid, test_fraction=test)
        if self.name == "user_temporal":
            out["min_user_interactions"] = self.min_user_interactions
        if self.name == "user_holdout":
            out["input_fraction"] = self.input_fraction
        return out
