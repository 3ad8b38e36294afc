"""Per-epoch validation for iterative models: learning curves, best epoch, early stopping."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from personalize.config import EvaluationConfig
from personalize.core.metrics import MetricName
from personalize.evaluation.evaluator import EvalTarget, Evaluator
from personalize.models.base import EpochReport, Recommender


@dataclass
class ValidationMonitor:
    """Evaluates a model on the validation target every ``every`` epochs.

    ``metric`` (e.g. 'ndcg@10') is computed by the one evaluator. The model keeps its state at
    the best epoch (``EpochReport.improved``); training stops after ``patience`` evaluations
    without improvement (None: never), but not before epoch ``min_epochs`` (a warm-up for
    models whose validation metric plateaus before it rises, such as SGD-trained BPR).
    ``on_epoch(epoch, metrics)`` receives ``{'train_loss': ..., 'valid_ndcg_at_10': ...}``
    (for MLflow step metrics);
    ``on_report(epoch, value)`` may raise to prune (e.g. ``optuna.TrialPruned``).
    """

    target: EvalTarget
    metric: str = "ndcg@10"
    every: int = 1
    patience: int | None = 10
    min_epochs: int = 0
    min_delta: float = 0.0
    mode: str = "protocol"
    on_epoch: Callable[[int, dict[str, float]], None] | None = None
    on_report: Callable[[int, float], None] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    best_value: float = float("-inf")
    best_epoch: int | None = None

    def __post_init__(self) -> None:
        k = MetricName.parse(self.metric).k
        self._evaluator = Evaluator(EvaluationConfig(ks=[k], mode=self.mode, primary_metric=self.metric))
        self._since_best = 0

    @property
    def metric_key(self) -> str:
        return MetricName.parse(self.metric).prefixed("valid")

    @property
    def n_users(self) -> int:
        """Users of the validation part."""
        return len(self.target.users)

    def fresh(self) -> ValidationMonitor:
        """An unused copy on the same target and rule, without callbacks (for a hybrid's
        component that trains on its own)."""
        return dataclasses.replace(
            self, history=[], best_value=float("-inf"), best_epoch=None, on_epoch=None, on_report=None
        )

    def evaluate(self, model: Recommender) -> float:
        """The monitored validation metric of ``model`` (nothing recorded)."""
        return self._evaluator.evaluate(model, self.target).summary[self.metric]

    def evaluate_users(self, model: Recommender) -> pd.Series:
        """The monitored metric per evaluated validation user (index: user index), nothing
        recorded; its mean is :meth:`evaluate` (in the protocol's mode)."""
        per_user = self._evaluator.evaluate(model, self.target).per_user
        evaluated = per_user["evaluated"].to_numpy(dtype=bool)
        return pd.Series(
            per_user[self.metric].to_numpy(dtype=float)[evaluated],
            index=pd.Index(self.target.users[evaluated], name="user_idx"),
            name=self.metric,
        )

    def __call__(self, model: Recommender, epoch: int, loss: float | None) -> EpochReport:
        row: dict[str, float] = {"epoch": epoch}
        if loss is not None:
            row["train_loss"] = float(loss)
        if epoch % self.every != 0:
            self.history.append(row)
            if self.on_epoch:
                self.on_epoch(epoch, {k: v for k, v in row.items() if k != "epoch"})
            return EpochReport()
        value = self.evaluate(model)
        row[self.metric_key] = value
        self.history.append(row)
        if self.on_epoch:
            self.on_epoch(epoch, {k: v for k, v in row.items() if k != "epoch"})
        improved = value > self.best_value + self.min_delta or self.best_epoch is None
        if improved:
            self.best_value, self.best_epoch, self._since_best = value, epoch, 0
        else:
            self._since_best += 1
        if self.on_report:
            self.on_report(epoch, value)
        stop = self.patience is not None and self._since_best >= self.patience and epoch >= self.min_epochs
        return EpochReport(value=value, improved=improved, stop=stop)
