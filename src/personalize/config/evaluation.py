"""The ``evaluation:`` block of an experiment file: cut-offs, metric definitions, statistics.

Which metric names exist is the evaluator's registry (:mod:`personalize.evaluation.metrics`):
the experiment loader passes it in the validation context (key ``"metrics"``), so that an
unknown metric fails when the file is loaded; without it only the spelling is checked here and
the evaluator checks the name when it is built.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from personalize.config.base import StrictModel
from personalize.core.metrics import MetricName

ModeName = Literal["protocol", "recbole", "msr", "ranx"]


def check_metric(name: str, ks: list[int], metrics, where: str) -> str:
    """``name`` is a metric at a configured K (and a known metric when ``metrics`` is given)."""
    try:
        parsed = MetricName.parse(name)
    except ValueError:
        raise ValueError(f"{where} {name!r} is not like 'ndcg@10'") from None
    if metrics is not None and parsed.metric not in metrics:
        raise ValueError(f"{where} {name!r} is not like 'ndcg@10' (metrics: {', '.join(metrics)})")
    if parsed.k not in ks:
        raise ValueError(f"{where} uses K={parsed.k}, which is not in evaluation.ks {ks}")
    return str(parsed)


class EvaluationConfig(StrictModel):
    """How models are evaluated (the ``evaluation:`` block of an experiment file)."""

    ks: list[int] = Field(default=[5, 10, 20], description="Cut-offs K for every @K metric.")
    mode: ModeName = Field(
        default="protocol",
        description="Metric definitions: protocol, or a peer's (recbole, msr, ranx) reproduced exactly.",
    )
    min_rating: float | None = Field(
        default=None,
        description="Relevance threshold: only test rows with rating >= this are relevant (null: all).",
    )
    gains: Literal["binary", "graded"] = Field(
        default="binary", description="NDCG gains: binary, or graded by the test rating."
    )
    primary_metric: str = Field(
        default="ndcg@10", description="Metric that ranks the leaderboard and picks the best model."
    )
    bootstrap_resamples: int = Field(default=1000, ge=100, description="Bootstrap resamples for intervals.")
    confidence: float = Field(default=0.95, gt=0, lt=1, description="Confidence level of the intervals.")
    paired_test: Literal["t", "wilcoxon", "permutation"] = Field(
        default="t", description="Paired test of each model against the best, on per-user values."
    )
    by: Literal["segment"] | None = Field(
        default=None,
        description="Break every leaderboard down by user segment (needs segments.enabled): per-segment "
        "metrics with intervals and paired tests, Holm-adjusted across segments.",
    )
    memory_budget_mb: int = Field(
        default=256, ge=8, description="Memory for one block of users' scores during ranking."
    )
    membership_attack: bool = Field(
        default=False,
        description=(
            "Run a loss-threshold membership-inference attack on every test model (AUC with an "
            "interval): on a fold-in split (user_holdout) members are training users and "
            "non-members test users (user-level); otherwise members are training interactions and "
            "non-members test interactions (event-level)."
        ),
    )

    @field_validator("ks")
    @classmethod
    def _ascending(cls, ks: list[int]) -> list[int]:
        if not ks or sorted(set(ks)) != ks or min(ks) < 1:
            raise ValueError(f"evaluation.ks must be ascending positive integers, got {ks}")
        return ks

    @model_validator(mode="after")
    def _primary(self, info: ValidationInfo) -> EvaluationConfig:
        metrics = (info.context or {}).get("metrics")
        check_metric(self.primary_metric, self.ks, metrics, "evaluation.primary_metric")
        return self

    @property
    def primary(self) -> MetricName:
        """The primary metric, parsed."""
        return MetricName.parse(self.primary_metric)
