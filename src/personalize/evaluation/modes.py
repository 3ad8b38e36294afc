"""Metric modes: the protocol's definitions, and peers' definitions reproduced exactly.

The evaluator computes every mode from the same top-K lists; only the formulas differ.

``protocol`` (default)
    As in :mod:`personalize.evaluation.metrics`: |R| = distinct relevant test items;
    MAP@K divided by min(|R|, K); users with |R| >= 1; plain mean over users.

``recbole``
    Mirrors ``recbole/evaluator/metrics.py`` (RecBole 1.2.1: ``Precision``, ``Recall``, ``Hit``,
    ``MRR``, ``NDCG``, ``MAP``): binary relevance; NDCG's IDCG and MAP's denominator over
    min(|R|, K); the users with test items; the summary rounded to 4 decimals
    (``metric_decimal_place: 4``) as RecBole prints it. Per-user values are not rounded.

``msr``
    Mirrors ``recommenders/evaluation/python_evaluation.py`` (Microsoft Recommenders >= 1.2):
    every test row is relevant and |R| counts test rows (``actual``); ``precision_at_k``,
    ``recall_at_k``, ``map_at_k`` (``map@K``: / min(|R|, K)) and ``map`` (``map_r@K``: / |R|,
    the column called MAP in their MovieLens benchmark) are averaged over users present in both
    the test set and the predictions; ``ndcg_at_k`` over all test users (binary gains; the log
    base cancels); ``catalog_coverage`` (``coverage@K``) divides by the distinct items in the
    training data, not the catalogue. MSR's merge counts a hit once per test row; with
    duplicate (user, item) test rows (which its functions assume away) a hit counts once here.

``ranx``
    Mirrors ``ranx/metrics`` (ranx 0.3): ``map@K`` divided by |R|; ``ndcg@K`` with linear gains
    (the relevance value: 1, or the rating with graded gains) and ``ndcg_burges@K`` with
    exponential gains 2^rel - 1; queries (users) with test rows but no relevant item score 0
    and count in the mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Mode:
    name: str
    relevance_count: Literal["distinct", "rows"] = "distinct"
    map_denominator: Literal["min", "relevant"] = "min"
    also_map_relevant: bool = False  # also report map_r@K (divided by |R|)
    users_without_relevant: Literal["exclude", "zero"] = "exclude"
    predicted_users_only: bool = False  # precision/recall/map over users with predictions
    coverage_base: Literal["catalogue", "train_items"] = "catalogue"
    decimals: int | None = None
    ndcg_burges: bool = False
    binary_only: bool = False


MODES: dict[str, Mode] = {
    "protocol": Mode("protocol"),
    "recbole": Mode("recbole", decimals=4, binary_only=True),
    "msr": Mode(
        "msr",
        relevance_count="rows",
        also_map_relevant=True,
        predicted_users_only=True,
        coverage_base="train_items",
        binary_only=True,
    ),
    "ranx": Mode("ranx", map_denominator="relevant", users_without_relevant="zero", ndcg_burges=True),
}


def get_mode(name: str) -> Mode:
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"unknown metric mode {name!r}; choose one of {sorted(MODES)}") from None
