"""Typed search spaces (``search:`` beside each model) and the ``tuning:`` block of an experiment.

A search space maps a model param to one dimension::

    search:
      l2: {low: 10, high: 5000, log: true}        # float, sampled on a log scale
      neighbours: {low: 10, high: 400, step: 10}  # int (both bounds are integers)
      shrink: {choices: [0, 10, 100]}             # categorical

Unknown keys are rejected (by :class:`StrictModel`), and every bound and choice is checked
against the model's own config when the experiment is loaded, so a typo fails before any trial.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from personalize.config.base import StrictModel

Number = int | float


class SearchDimension(StrictModel):
    """One hyperparameter's range: ``{low, high[, log][, step]}`` or ``{choices: [...]}``.

    ``type`` is inferred when absent: ``categorical`` with ``choices``, ``int`` when both bounds
    (and the step) are integers, else ``float``.
    """

    low: Number | None = Field(default=None, description="Lower bound (inclusive).")
    high: Number | None = Field(default=None, description="Upper bound (inclusive).")
    log: bool = Field(default=False, description="Sample on a log scale (needs low > 0, no step).")
    step: Number | None = Field(default=None, gt=0, description="Grid step within [low, high].")
    choices: list[Any] | None = Field(default=None, description="Categorical values (instead of a range).")
    type: Literal["int", "float", "categorical"] | None = Field(
        default=None, description="int, float or categorical (inferred when absent)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SearchDimension:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None:
            if ranged or self.log or self.step is not None:
                raise ValueError("give either choices or low/high (with log/step), not both")
            if not self.choices:
                raise ValueError("choices must be a non-empty list")
            if self.type not in (None, "categorical"):
                raise ValueError(f"type {self.type!r} does not go with choices")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices: [...])")
        if self.type == "categorical":
            raise ValueError("type categorical needs choices: [...]")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is greater than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("log scale and step cannot be combined")
        if self.type == "int" and not all(_is_int(v) for v in (self.low, self.high, self.step)):
            raise ValueError("type int needs integer low, high and step")
        return self

    @property
    def kind(self) -> Literal["int", "float", "categorical"]:
        if self.choices is not None:
            return "categorical"
        if self.type is not None:
            return self.type
        bounds = (self.low, self.high, self.step)
        return "int" if all(_is_int(v) for v in bounds) else "float"

    def edge_values(self) -> list[Any]:
        """Values that must all be valid for the model: the bounds, or every choice."""
        if self.choices is not None:
            return list(self.choices)
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]

    def nearest(self, value: Any) -> Any | None:
        """``value`` moved into this dimension (clipped to the range, onto the step grid);
        None for a categorical value that is not a choice."""
        if self.kind == "categorical":
            return value if value in self.choices else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        low, high = float(self.low), float(self.high)
        x = min(max(float(value), low), high)
        if self.step is not None:
            x = min(low + round((x - low) / float(self.step)) * float(self.step), high)
        return round(x) if self.kind == "int" else x

    def suggest(self, trial, name: str) -> Any:
        """Draw this dimension from an Optuna trial."""
        if self.kind == "categorical":
            return trial.suggest_categorical(name, self.choices)
        if self.kind == "int":
            return trial.suggest_int(
                name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(
            name,
            float(self.low),
            float(self.high),
            step=None if self.step is None else float(self.step),
            log=self.log,
        )


def _is_int(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


class TuningConfig(StrictModel):
    """How ``personalize tune`` searches (the ``tuning:`` block of an experiment file).

    Every model with a ``search:`` space gets its own Optuna study with the same budget; models
    without one are evaluated once, untuned. Trials use the experiment's first seed (split and
    model); the final comparison refits each model's best params on train + validation and tests
    it with every seed.
    """

    trials: int = Field(
        default=20, ge=1, description="Trials per model (the equal budget; complete + pruned + failed)."
    )
    timeout_minutes: float | None = Field(
        default=None,
        gt=0,
        description="Optional wall-time budget per model study; makes the search not reproducible.",
    )
    metric: str | None = Field(
        default=None,
        description="Validation metric to maximise, e.g. ndcg@10 (default: evaluation.primary_metric).",
    )
    seed: int | None = Field(default=None, description="Seed of the TPE sampler (default: the first seed).")
    startup_trials: int = Field(
        default=5, ge=0, description="Random trials before TPE models the space; trials before pruning."
    )
    pruner: Literal["median", "hyperband", "none"] = Field(
        default="median",
        description="Pruner of iterative models (validation metric reported every training.eval_every).",
    )
    warmup_epochs: int = Field(
        default=3, ge=0, description="First epoch at which a trial may be pruned (Hyperband: min resource)."
    )
    storage: str | None = Field(
        default=None,
        description=(
            "Optuna storage: sqlite:///path.db (one process), journal:path.log (several processes on "
            "one machine), postgres:embedded (a private PostgreSQL the lab starts, data in "
            "data/postgres/; several processes), postgresql://user@host/db (a real server: many "
            "machines), memory (not persisted). "
            "Default: optuna.db beside the MLflow SQLite store."
        ),
    )
    study_prefix: str | None = Field(
        default=None, description="Study names are '<prefix>/<model>' (default prefix: the experiment name)."
    )
    heartbeat_seconds: int = Field(
        default=10,
        ge=1,
        description="Trial heartbeat interval: a dead worker's trial is detected and retried.",
    )
    grace_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Silence before a running trial counts as dead (default 3 x heartbeat).",
    )
    max_retry: int = Field(default=2, ge=0, description="Retries of a trial whose worker died.")
    final: bool = Field(
        default=True,
        description="Refit every model with its best params on train + validation and test it (all seeds).",
    )
    compare_defaults: bool = Field(
        default=True, description="Also test each tuned model with its untuned params, paired against it."
    )
    start_from_defaults: bool = Field(
        default=True,
        description=(
            "The first trial of each study is the model's untuned params (moved into the space), so "
            "the tuned model is never worse than its default on validation."
        ),
    )

    @property
    def grace(self) -> int:
        return self.grace_seconds or 3 * self.heartbeat_seconds
