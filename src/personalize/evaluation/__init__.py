"""The evaluation protocol: metrics, the evaluator, statistics, leaderboards (splits are data:
:mod:`personalize.data.splits`; the settings are :class:`personalize.config.EvaluationConfig`)."""

from personalize.evaluation.evaluator import (
    EvalTarget,
    EvaluationResult,
    Evaluator,
    genre_matrix,
    make_target,
)

__all__ = [
    "EvalTarget",
    "EvaluationResult",
    "Evaluator",
    "genre_matrix",
    "make_target",
]
