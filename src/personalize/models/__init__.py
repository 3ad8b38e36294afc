"""Recommenders behind one contract (:class:`personalize.models.base.Recommender`)."""

from personalize.config.model import ModelConfig
from personalize.models.base import EpochMonitor, EpochReport, Recommender, Validator
from personalize.models.registry import available_models, create_model, exportable_models, get_model_class

__all__ = [
    "EpochMonitor",
    "EpochReport",
    "ModelConfig",
    "Recommender",
    "Validator",
    "available_models",
    "create_model",
    "exportable_models",
    "get_model_class",
]
