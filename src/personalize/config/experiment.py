"""Experiment files: YAML holding only overrides of documented defaults, read into typed objects
that reject unknown keys with a clear message.

:func:`read_experiment` checks the structure and every value this package can check by itself.
Names that live in the layers above (model types and their params, metric names) are checked when
the caller passes their registries in ``context`` -- :func:`personalize.recipe.load_experiment`
does, and is what users call. ``personalize defaults`` prints every key with its default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from personalize.config.audit import AuditConfig
from personalize.config.base import StrictModel
from personalize.config.curve import PrivacyCurveConfig
from personalize.config.data import DataConfig
from personalize.config.evaluation import EvaluationConfig, check_metric
from personalize.config.model import ModelSpec, format_errors
from personalize.config.online import OnlineConfig
from personalize.config.replay import ReplayConfig
from personalize.config.segments import SegmentsConfig
from personalize.config.serving import ExportConfig
from personalize.config.split import SplitConfig
from personalize.config.tuning import TuningConfig
from personalize.core.errors import ConfigError


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
        description="Tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db); "
        "http://HOST:PORT for a tracking server (personalize server).",
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
    audit: AuditConfig = Field(default_factory=AuditConfig)
    segments: SegmentsConfig = Field(default_factory=SegmentsConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    models: list[ModelSpec] = Field(min_length=1, description="Models to fit and compare.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    online: OnlineConfig = Field(default_factory=OnlineConfig)
    replay: ReplayConfig = Field(
        default_factory=ReplayConfig, description="Prequential replay (personalize replay)."
    )
    privacy_curve: PrivacyCurveConfig | None = Field(
        default=None,
        description=(
            "Run every differentially private model at each point of a privacy-utility curve "
            "(config/curve.py); null: models run as written."
        ),
    )

    @model_validator(mode="after")
    def _metrics_are_evaluated(self, info: ValidationInfo) -> ExperimentConfig:
        """training.monitor_metric, tuning.metric and export.metric are metrics the evaluation
        computes (at one of its K)."""
        metrics = (info.context or {}).get("metrics")
        ks = self.evaluation.ks
        for where, metric in (
            ("tuning.metric", self.tuning.metric),
            ("export.metric", self.export.metric),
        ):
            if metric is not None and metric != self.evaluation.primary_metric:
                check_metric(metric, ks, metrics, where)
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


def read_experiment(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    data: dict | None = None,
    context: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """Read an experiment file (or a dict) with ``KEY=VALUE`` overrides applied.

    ``context`` carries the registries of the layers above (``model_params``: model type ->
    params class; ``metrics``: metric names), so that those names are checked too.
    """
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
        return ExperimentConfig.model_validate(raw, context=context)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_errors(exc)}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def describe_keys(model: type[StrictModel], indent: int = 0) -> list[str]:
    """Every field of a config class with its description and default, as commented YAML lines."""
    out = []
    pad = "  " * indent
    for name, field in model.model_fields.items():
        annotation = field.annotation
        sub = _config_class(annotation)
        if field.description:
            out.append(f"{pad}# {field.description}")
        if sub is not None:
            out.append(f"{pad}{name}:")
            out += describe_keys(sub, indent + 1)
        else:
            default = "required" if field.is_required() else field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json")
            elif default != "required":
                default = TypeAdapter(Any).dump_python(default, mode="json")  # paths as strings
            text = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
            out.append(f"{pad}{name}: {text if default != 'required' else '<required>'}")
    return out


def _config_class(annotation) -> type[StrictModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, StrictModel):
        return annotation
    return None
