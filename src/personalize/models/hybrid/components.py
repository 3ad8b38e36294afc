"""Components of a hybrid: fitted models held by another model (fusion, routing), never
subclassed. How they are specified, fitted (each grid point on validation), saved and restored."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from personalize.config.base import StrictModel, check_grid, grid_points
from personalize.core.errors import ConfigError
from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, ErasureNeeds, Recommender, Validator
from personalize.models.registry import create_model, get_model_class


class ComponentSpec(StrictModel):
    """One component of a hybrid: a registered model type, its params and an optional grid."""

    type: str = Field(description="Registered model type (see `personalize models`).")
    params: dict[str, Any] = Field(default_factory=dict, description="Overrides of the model's config.")
    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="{param: [values]}: every combination is fitted and the best on validation kept.",
    )

    @model_validator(mode="after")
    def _check(self) -> ComponentSpec:
        try:
            cls = get_model_class(self.type)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        check_grid(self.grid, f"component {self.type}")
        for params in self.combinations():
            cls.Config.model_validate(params)
        return self

    def combinations(self) -> list[dict[str, Any]]:
        """``params`` merged with every point of ``grid``."""
        return grid_points(self.params, self.grid)


class ComponentHybrid(Recommender):
    """Base of the hybrids built from fitted components (``Config.components``): stochastic when a
    component is, and folding in only when every component does."""

    @classmethod
    def is_stochastic(cls, params: dict[str, Any]) -> bool:
        config = cls.Config.model_validate(params)
        return any(get_model_class(spec.type).is_stochastic(spec.params) for spec in config.components)

    @classmethod
    def fold_in_refusal(cls, params: dict[str, Any]) -> str | None:
        """The first component's reason for not folding in (None when every one can)."""
        config = cls.Config.model_validate(params)
        for spec in config.components:
            reason = get_model_class(spec.type).fold_in_refusal(spec.params)
            if reason is not None:
                return f"component {spec.type!r}: {reason}"
        return None

    @classmethod
    def erasure_needs(cls, params: dict[str, Any]) -> ErasureNeeds:
        """The hybrid's own needs (``erasure``) merged with every component's."""
        config = cls.Config.model_validate(params)
        needs = cls.erasure
        for spec in config.components:
            needs = needs.merged(get_model_class(spec.type).erasure_needs(spec.params))
        return needs


def fit_component(
    model_type: str, params: dict[str, Any], seed: int, data: InteractionData, monitor: EpochMonitor | None
) -> tuple[Recommender, list[dict]]:
    """Fit one component; an iterative one gets its own copy of the validation monitor."""
    model = create_model(model_type, params, seed)
    sub_monitor = None
    if isinstance(monitor, Validator) and (model.iterative or model.uses_validation):
        sub_monitor = monitor.fresh()
    model.fit(data, sub_monitor)
    return model, list(sub_monitor.history) if sub_monitor else []


def fit_components(
    specs: list[ComponentSpec], data: InteractionData, monitor: EpochMonitor | None, seed: int
) -> tuple[list[Recommender], list[list[dict]], list[list[dict[str, Any]]]]:
    """Fit every component; a component with a grid keeps its best point on validation.
    Returns (models, their learning curves, each grid's validation values)."""
    models: list[Recommender] = []
    histories: list[list[dict]] = []
    searches: list[list[dict[str, Any]]] = []
    for spec in specs:
        rows: list[dict[str, Any]] = []
        best: tuple[float, Recommender, list[dict]] | None = None
        for params in spec.combinations():
            model, history = fit_component(spec.type, params, seed, data, monitor)
            value = monitor.evaluate(model) if spec.grid else 0.0
            if spec.grid:
                rows.append({**{k: params[k] for k in spec.grid}, f"valid_{monitor.metric}": value})
            if best is None or value > best[0]:
                best = (value, model, history)
        assert best is not None
        models.append(best[1])
        histories.append(best[2])
        searches.append(rows)
    return models, histories, searches


def components_state(specs: list[ComponentSpec], models: list[Recommender]) -> dict[str, Any]:
    """The components' learned arrays (prefixed ``c<i>__``) and what recreates them (their type,
    config, epochs and what :meth:`~personalize.models.base.Recommender._meta` adds, e.g. a private
    component's guarantee)."""
    meta = [
        {
            "type": spec.type,
            "config": m.config.model_dump(mode="json"),
            "best_epoch": m.best_epoch_,
            "epochs_run": m.epochs_run_,
            "meta": m._meta(),
        }
        for spec, m in zip(specs, models, strict=True)
    ]
    state: dict[str, Any] = {"components_meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    for i, model in enumerate(models):
        for key, value in model._state().items():
            state[f"c{i}__{key}"] = value
    return state


def restore_components(owner: Recommender, state: dict[str, Any]) -> list[Recommender]:
    """The components saved by :func:`components_state`, sharing ``owner``'s index and context."""
    meta = json.loads(bytes(np.asarray(state["components_meta"], dtype=np.uint8)).decode())
    models = []
    for i, part in enumerate(meta):
        model = create_model(part["type"], part["config"], owner.seed)
        model.index_, model.seen_, model.popularity_ = owner.index_, owner.seen_, owner.popularity_
        model.exclude_ = owner.exclude_
        model.user_history_ = owner.user_history_
        model.best_epoch_ = part["best_epoch"]
        model.epochs_run_ = part["epochs_run"]
        prefix = f"c{i}__"
        model._set_state({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        model._set_meta(part.get("meta", {}))
        models.append(model)
    return models
