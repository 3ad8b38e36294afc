"""Typed configuration: plain data at the bottom of the layers.

One schema per block of an experiment file (``data``, ``split``, ``evaluation``, ``training``,
``models``, ``tracking``, ``tuning``, ``export``) and :class:`ExperimentConfig` holding them.
Users load experiments with :func:`personalize.recipe.load_experiment`, which also checks the
names that live in the layers above (model types and params, metric names).
"""

from personalize.config.base import StrictModel, check_grid, grid_points
from personalize.config.data import DataConfig, TableSource, TimestampConfig
from personalize.config.evaluation import EvaluationConfig, ModeName
from personalize.config.experiment import (
    ExperimentConfig,
    TrackingConfig,
    TrainingConfig,
    describe_keys,
    parse_overrides,
    read_experiment,
)
from personalize.config.model import ModelConfig, ModelSpec
from personalize.config.serving import ExportConfig
from personalize.config.split import SplitConfig, SplitName
from personalize.config.tuning import SearchDimension, TuningConfig

__all__ = [
    "DataConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "ExportConfig",
    "ModeName",
    "ModelConfig",
    "ModelSpec",
    "SearchDimension",
    "SplitConfig",
    "SplitName",
    "StrictModel",
    "TableSource",
    "TimestampConfig",
    "TrackingConfig",
    "TrainingConfig",
    "TuningConfig",
    "check_grid",
    "describe_keys",
    "grid_points",
    "parse_overrides",
    "read_experiment",
]
