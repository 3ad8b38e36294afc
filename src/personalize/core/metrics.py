"""Metric names as typed values: ``"ndcg@10"`` parsed once into a :class:`MetricName`.

Every place that reads or writes a metric name goes through this type: experiment files
(``evaluation.primary_metric``, ``tuning.metric``, ``export.metric``), the evaluator's result
columns (``ndcg@10``), MLflow keys (``test_ndcg_at_10``) and leaderboard columns. Which metrics
exist is the evaluator's registry (:mod:`personalize.evaluation.metrics`); this module only
knows their spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERN = re.compile(r"^([a-z][a-z0-9_]*)@([1-9][0-9]*)$")


@dataclass(frozen=True, order=True)
class MetricName:
    """A metric at a cut-off: ``MetricName("ndcg", 10)`` is ``ndcg@10``."""

    metric: str
    k: int

    @classmethod
    def parse(cls, text: str | MetricName) -> MetricName:
        """``"ndcg@10"`` -> ``MetricName("ndcg", 10)``; a ValueError names what was expected."""
        if isinstance(text, MetricName):
            return text
        match = _PATTERN.match(str(text).strip())
        if not match:
            raise ValueError(f"{text!r} is not a metric name like 'ndcg@10' (metric '@' cut-off K)")
        return cls(match.group(1), int(match.group(2)))

    @classmethod
    def from_key(cls, key: str, part: str | None = None) -> MetricName:
        """The inverse of :attr:`key` / :meth:`prefixed`: ``"valid_ndcg_at_10"`` with
        ``part="valid"`` -> ``ndcg@10``."""
        body = key
        if part is not None:
            if not key.startswith(part + "_"):
                raise ValueError(f"{key!r} does not start with {part + '_'!r}")
            body = key[len(part) + 1 :]
        metric, sep, k = body.rpartition("_at_")
        if not sep or not k.isdigit():
            raise ValueError(f"{key!r} is not a metric key like 'ndcg_at_10'")
        return cls(metric, int(k))

    def __str__(self) -> str:
        return f"{self.metric}@{self.k}"

    @property
    def key(self) -> str:
        """The spelling MLflow accepts: ``ndcg_at_10``."""
        return f"{self.metric}_at_{self.k}"

    def prefixed(self, part: str) -> str:
        """MLflow key of this metric on a part of the split: ``prefixed("test")`` is
        ``test_ndcg_at_10``."""
        return f"{part}_{self.key}"

    def at(self, k: int) -> MetricName:
        """The same metric at another cut-off."""
        return MetricName(self.metric, int(k))


def is_metric_name(text: str) -> bool:
    """Whether ``text`` is spelled like a metric at K (``ndcg@10``), e.g. a result column."""
    return bool(_PATTERN.match(str(text)))


def metric_key(name: str | MetricName) -> str:
    """``"ndcg@10"`` -> ``"ndcg_at_10"`` (names that are not metrics at K pass unchanged)."""
    try:
        return MetricName.parse(name).key
    except ValueError:
        return str(name).replace("@", "_at_")
