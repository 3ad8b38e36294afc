"""Recommenders behind one contract (:class:`personalize.models.base.Recommender`)."""

from personalize.models.base import EpochMonitor, EpochReport, ModelConfig, Recommender, ScorerSpec
from personalize.models.registry import available_models, create_model, get_model_class

__all__ = [
    "EpochMonitor",
    "EpochReport",
    "ModelConfig",
    "Recommender",
    "ScorerSpec",
    "available_models",
    "create_model",
    "get_model_class",
]
