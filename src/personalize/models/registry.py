"""Model names (as used in experiment files) -> classes, imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

from personalize.errors import ConfigError

_MODELS: dict[str, str] = {
    "random": "personalize.models.baselines.random:RandomRecommender",
    "popularity": "personalize.models.baselines.popularity:Popularity",
    "recent_popularity": "personalize.models.baselines.recent_popularity:RecentPopularity",
    "itemknn": "personalize.models.collaborative.itemknn:ItemKNN",
    "ease": "personalize.models.collaborative.ease:EASE",
    "als": "personalize.models.collaborative.als:ALS",
    "bpr": "personalize.models.collaborative.bpr:BPR",
    "neumf": "personalize.models.neural.neumf:NeuMF",
    "two_tower": "personalize.models.hybrid.two_tower:TwoTower",
    "recbole_pop": "personalize.models.peers.recbole_models:RecBolePop",
    "recbole_itemknn": "personalize.models.peers.recbole_models:RecBoleItemKNN",
    "recbole_ease": "personalize.models.peers.recbole_models:RecBoleEASE",
    "recbole_bpr": "personalize.models.peers.recbole_models:RecBoleBPR",
    "recbole_neumf": "personalize.models.peers.recbole_models:RecBoleNeuMF",
    "recbole_lightgcn": "personalize.models.peers.recbole_models:RecBoleLightGCN",
    "recbole_multivae": "personalize.models.peers.recbole_models:RecBoleMultiVAE",
    "content": "personalize.models.content.profile:ContentBased",
    "fusion": "personalize.models.hybrid.fusion:Fusion",
}


def available_models() -> list[str]:
    return sorted(_MODELS)


def get_model_class(name: str):
    """The class registered under ``name``."""
    try:
        target = _MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model type {name!r}; available: {', '.join(available_models())}"
        ) from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def create_model(name: str, params: dict[str, Any] | None = None, seed: int = 0):
    """Instantiate model ``name`` with ``params`` (validated by its typed config)."""
    cls = get_model_class(name)
    try:
        return cls(params or {}, seed=seed)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise ConfigError(f"model {name!r}: invalid parameters: {exc}") from None
