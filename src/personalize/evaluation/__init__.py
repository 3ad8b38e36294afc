"""The evaluation protocol: splits, metrics, the evaluator, statistics, leaderboards."""

from personalize.evaluation.evaluator import (
    EvalTarget,
    EvaluationConfig,
    EvaluationResult,
    Evaluator,
    genre_matrix,
    make_target,
)
from personalize.evaluation.splits import Split, SplitConfig, check_split, make_split

__all__ = [
    "EvalTarget",
    "EvaluationConfig",
    "EvaluationResult",
    "Evaluator",
    "Split",
    "SplitConfig",
    "check_split",
    "genre_matrix",
    "make_split",
    "make_target",
]
