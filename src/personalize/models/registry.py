"""Model types by name (as experiment files write them).

A model class registers itself under its ``name`` when its module is imported
(:meth:`personalize.models.base.Recommender.__init_subclass__`); the first lookup imports every
module under ``personalize/models/``, so a new model is one new file, found without a list.
"""

from __future__ import annotations

from typing import Any

from personalize.core.errors import ConfigError
from personalize.core.registry import Registry

MODELS: Registry = Registry("model type", discover="personalize.models")


def available_models() -> list[str]:
    return MODELS.names()


def get_model_class(name: str):
    """The class registered under ``name``."""
    return MODELS.get(name)


def exportable_models() -> list[str]:
    """Types whose fitted models can be exported (served without the training code)."""
    return [name for name in available_models() if get_model_class(name).exportable]


def create_model(name: str, params: dict[str, Any] | None = None, seed: int = 0):
    """Instantiate model ``name`` with ``params`` (validated by its typed config)."""
    cls = get_model_class(name)
    try:
        return cls(params or {}, seed=seed)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise ConfigError(f"model {name!r}: invalid parameters: {exc}") from None
