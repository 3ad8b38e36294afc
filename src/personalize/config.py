"""Experiment files: YAML holding only overrides of documented defaults, loaded into typed
objects that reject unknown keys with a clear message.

``personalize defaults`` prints every key with its default and description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from personalize.data.config import DataConfig, StrictModel, check_grid, grid_points
from personalize.errors import ConfigError
from personalize.evaluation.evaluator import EvaluationConfig
from personalize.evaluation.splits import SplitConfig
from personalize.serving.config import ExportConfig
from personalize.tuning.config import SearchDimension, TuningConfig


class ModelSpec(StrictModel):
    """One model in an experiment."""

    type: str = Field(description="Registered model type (see `personalize models`).")
    name: str | None = Field(default=None, description="Label in leaderboards and MLflow (default: type).")
    params: dict[str, Any] = Field(default_factory=dict, description="Overrides of the model's config.")
    seeds: list[int] | None = Field(
        default=None, description="Seeds for this model (default: the experiment's)."
    )
    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description=(
            "A small grid of params, chosen on validation (primary metric) and then refit on "
            "train + validation: {param: [values]}; every combination is tried."
        ),
    )
    search: dict[str, SearchDimension] = Field(
        default_factory=dict,
        description=(
            "Search space for `personalize tune`: {param: {low, high, log, step} or {choices}}; "
            "`personalize run` uses params only."
        ),
    )

    @model_validator(mode="after")
    def _check_params(self) -> ModelSpec:
        from personalize.models.registry import get_model_class

        cls = get_model_class(self.type)
        accepted = ", ".join(cls.Config.model_fields) or "none"
        check_grid(self.grid, f"model {self.label!r}")
        for params in self.combinations():
            try:
                cls.Config.model_validate(params)
            except ValidationError as exc:
                raise ValueError(
                    f"model {self.label!r} ({self.type}): {_format_errors(exc)}; accepted params: {accepted}"
                ) from None
        self._check_search(cls, accepted)
        return self

    def _check_search(self, cls, accepted: str) -> None:
        if self.search and self.grid:
            raise ValueError(f"model {self.label!r}: give either grid or search, not both")
        for key, dim in self.search.items():
            if key not in cls.Config.model_fields:
                raise ValueError(
                    f"model {self.label!r} ({self.type}): search.{key} is not a param; "
                    f"accepted params: {accepted}"
                )
            if dim.type is None:
                try:
                    dim.type = _search_kind(cls.Config.model_fields[key].annotation, dim)
                except ValidationError as exc:
                    raise ValueError(
                        f"model {self.label!r} ({self.type}): search.{key}: "
                        f"{_format_errors(exc).removeprefix('Value error, ')}"
                    ) from None
            for value in dim.edge_values():
                try:
                    cls.Config.model_validate({**self.params, key: value})
                except ValidationError as exc:
                    raise ValueError(
                        f"model {self.label!r} ({self.type}): search.{key} value {value!r} is invalid: "
                        f"{_format_errors(exc)}"
                    ) from None

    @property
    def label(self) -> str:
        return self.name or self.type

    def combinations(self) -> list[dict[str, Any]]:
        """``params`` merged with every point of ``grid`` (just ``params`` without a grid)."""
        return grid_points(self.params, self.grid)


class TrainingConfig(StrictModel):
    """How models are fitted around evaluation."""

    refit: bool = Field(
        default=True,
        description=(
            "Test with a model refit on train + validation, using the validation-selected "
            "settings (iterative models: the best epoch count). False: test the model fitted on "
            "train (RecBole's protocol)."
        ),
    )
    early_stopping_patience: int | None = Field(
        default=10,
        ge=1,
        description="Validation evaluations without improvement before stopping (null: never).",
    )
    early_stopping_min_epochs: int = Field(
        default=0,
        ge=0,
        description="Never stop early before this epoch (a warm-up for slow starters such as BPR).",
    )
    eval_every: int = Field(default=1, ge=1, description="Epochs between validation evaluations.")
    monitor_metric: str = Field(default="ndcg@10", description="Validation metric for early stopping.")


class TrackingConfig(StrictModel):
    """Where and what to log."""

    experiment: str | None = Field(
        default=None, description="MLflow experiment name (default: the experiment's name)."
    )
    uri: str | None = Field(
        default=None,
        description="Tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db).",
    )
    log_split: bool = Field(default=True, description="Log train/valid/test as Parquet on the parent run.")
    log_recommendations: bool = Field(
        default=True, description="Log every test user's top-K on each model run."
    )


class ExperimentConfig(StrictModel):
    """A whole experiment: data, split, models, evaluation, tracking."""

    name: str = Field(description="Experiment name (MLflow experiment and parent run).")
    description: str = Field(default="", description="Free text, logged with the run.")
    seeds: list[int] = Field(
        default=[0],
        min_length=1,
        description=(
            "Seeds. A stochastic split is made once per seed; a stochastic model is fitted once "
            "per seed; a deterministic model on a deterministic split runs once, with the first."
        ),
    )
    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    models: list[ModelSpec] = Field(min_length=1, description="Models to fit and compare.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    @model_validator(mode="after")
    def _metrics_are_evaluated(self) -> ExperimentConfig:
        """tuning.metric and export.metric must be metrics the evaluation computes."""
        for block, metric in (("tuning", self.tuning.metric), ("export", self.export.metric)):
            if metric is None or metric == self.evaluation.primary_metric:
                continue
            try:
                EvaluationConfig(**{**self.evaluation.model_dump(), "primary_metric": metric})
            except ValidationError as exc:
                reason = _format_errors(exc).removeprefix("Value error, ")
                raise ValueError(f"{block}.{reason.replace('evaluation.primary_metric', 'metric')}") from None
        return self

    @field_validator("models")
    @classmethod
    def _unique_labels(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        labels = [m.label for m in models]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(
                f"model names must be unique; repeated: {dupes} (set 'name:' to tell them apart)"
            )
        return models

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _search_kind(annotation, dim: SearchDimension) -> str:
    """A search dimension's type from the model param it searches (int, float, else categorical)."""
    if dim.choices is not None:
        return "categorical"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    return dim.kind


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown key")
        else:
            parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """['split.name=global_temporal', 'seeds=[1,2]'] -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. split.name=global_temporal)")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_experiment(
    path: str | Path | None = None, overrides: list[str] | None = None, data: dict | None = None
) -> ExperimentConfig:
    """Load an experiment file (or a dict) with ``KEY=VALUE`` overrides applied."""
    raw: dict[str, Any] = {}
    source = "experiment"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.exists():
            raise ConfigError(f"experiment file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
        raw.setdefault("name", path.stem)
    if data:
        raw = _merge(raw, data)
    if overrides:
        raw = _merge(raw, parse_overrides(overrides))
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_format_errors(exc)}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def describe_defaults() -> str:
    """Every experiment key with its default and description, as commented YAML."""
    from personalize.models.registry import available_models, get_model_class

    lines = [
        "# Experiment file keys (defaults shown; an experiment file holds only what differs).",
        "",
    ]
    lines += _describe(ExperimentConfig, 0)
    lines += ["", "# Model types and their params (models: [{type: ..., params: {...}}])"]
    for name in available_models():
        cls = get_model_class(name)
        lines.append(f"# {name}: {(cls.__doc__ or '').strip().splitlines()[0] if cls.__doc__ else ''}")
        lines += ["#   " + line for line in _describe(cls.Config, 0)] or ["#   (no params)"]
    return "\n".join(lines)


def _describe(model: type[StrictModel], indent: int) -> list[str]:
    out = []
    pad = "  " * indent
    for name, field in model.model_fields.items():
        annotation = field.annotation
        sub = _config_class(annotation)
        if field.description:
            out.append(f"{pad}# {field.description}")
        if sub is not None:
            out.append(f"{pad}{name}:")
            out += _describe(sub, indent + 1)
        else:
            default = "required" if field.is_required() else field.get_default(call_default_factory=True)
            text = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
            out.append(f"{pad}{name}: {text if default != 'required' else '<required>'}")
    return out


def _config_class(annotation) -> type[StrictModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, StrictModel):
        return annotation
    return None
