"""Loading an experiment: the config package reads it, this step checks the names that live in
the layers above configs (model types and their params, metric names) against their registries.

:func:`load_experiment` is the one loader the CLI, notebooks, tuning and tests use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from personalize.config import ExperimentConfig, describe_keys, read_experiment
from personalize.evaluation.metrics import metric_names
from personalize.models.registry import available_models, get_model_class


def catalog() -> dict[str, Any]:
    """The validation context of an experiment: model type -> params class, and metric names."""
    return {"model_params": lambda name: get_model_class(name).Config, "metrics": metric_names()}


def load_experiment(
    path: str | Path | None = None, overrides: list[str] | None = None, data: dict | None = None
) -> ExperimentConfig:
    """Load an experiment file (or a dict) with ``KEY=VALUE`` overrides applied, every name and
    param checked (a :class:`~personalize.core.errors.ConfigError` names the key at fault)."""
    return read_experiment(path, overrides, data, context=catalog())


def reload(config: ExperimentConfig, overrides: list[str] | None = None) -> ExperimentConfig:
    """``config`` with ``overrides`` applied, checked again."""
    return load_experiment(data=config.model_dump(mode="json"), overrides=overrides)


def describe_defaults() -> str:
    """Every experiment key with its default and description, as commented YAML, then every
    model type with its params."""
    lines = [
        "# Experiment file keys (defaults shown; an experiment file holds only what differs).",
        "",
    ]
    lines += describe_keys(ExperimentConfig, 0)
    lines += ["", "# Model types and their params (models: [{type: ..., params: {...}}])"]
    for name in available_models():
        cls = get_model_class(name)
        lines.append(f"# {name}: {(cls.__doc__ or '').strip().splitlines()[0] if cls.__doc__ else ''}")
        lines += ["#   " + line for line in describe_keys(cls.Config, 0)] or ["#   (no params)"]
    return "\n".join(lines)
