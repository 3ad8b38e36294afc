"""Models in an experiment file: ``{type, name, params, seeds, grid, search}``.

Each model type defines its params as a subclass of :class:`ModelConfig` beside its code
(``personalize.models``). This package does not know the types: the experiment loader passes
a lookup ``type -> params class`` in the validation context (key ``"model_params"``), and then
every param, grid point and search bound is checked against the model's own config when the
file is loaded, so that a typo fails before anything is fitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, model_validator

from personalize.config.base import StrictModel, check_grid, grid_points
from personalize.config.tuning import SearchDimension

ParamsLookup = Callable[[str], type[BaseModel]]


class ModelConfig(StrictModel):
    """Base of every model's typed params (unknown keys are rejected)."""


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
    def _check(self, info: ValidationInfo) -> ModelSpec:
        check_grid(self.grid, f"model {self.label!r}")
        if self.search and self.grid:
            raise ValueError(f"model {self.label!r}: give either grid or search, not both")
        lookup: ParamsLookup | None = (info.context or {}).get("model_params")
        if lookup is not None:
            try:
                schema = lookup(self.type)
            except Exception as exc:  # an unknown type: the lookup's message lists the known ones
                raise ValueError(str(exc)) from None
            check_params(self, schema)
        return self

    @property
    def label(self) -> str:
        return self.name or self.type

    def combinations(self) -> list[dict[str, Any]]:
        """``params`` merged with every point of ``grid`` (just ``params`` without a grid)."""
        return grid_points(self.params, self.grid)


#: the settings of a private model's budget (models/privacy/mechanisms.py DPConfig)
PRIVACY_BUDGET = ("epsilon", "delta", "max_units")


def check_params(spec: ModelSpec, schema: type[BaseModel]) -> None:
    """Every grid point and every search bound of ``spec`` is valid for the model's params class
    ``schema``; a search dimension without a type gets the type of the param it searches."""
    accepted = ", ".join(schema.model_fields) or "none"
    varied = sorted(
        (set(spec.grid) | set(spec.search)) & set(PRIVACY_BUDGET) if "epsilon" in schema.model_fields else []
    )
    if varied:
        raise ValueError(
            f"model {spec.label!r} ({spec.type}): {', '.join(varied)} cannot vary in a grid or search: the "
            "choice among fits would be charged at the chosen point's budget only; give one value (a "
            "privacy_curve: block runs several epsilons as separate models)"
        )
    for params in spec.combinations():
        try:
            schema.model_validate(params)
        except ValidationError as exc:
            raise ValueError(
                f"model {spec.label!r} ({spec.type}): {format_errors(exc)}; accepted params: {accepted}"
            ) from None
    for key, dim in spec.search.items():
        if key not in schema.model_fields:
            raise ValueError(
                f"model {spec.label!r} ({spec.type}): search.{key} is not a param; "
                f"accepted params: {accepted}"
            )
        if dim.type is None:
            try:
                dim.type = _search_kind(schema.model_fields[key].annotation, dim)
            except ValidationError as exc:
                raise ValueError(
                    f"model {spec.label!r} ({spec.type}): search.{key}: "
                    f"{format_errors(exc).removeprefix('Value error, ')}"
                ) from None
        for value in dim.edge_values():
            try:
                schema.model_validate({**spec.params, key: value})
            except ValidationError as exc:
                raise ValueError(
                    f"model {spec.label!r} ({spec.type}): search.{key} value {value!r} is invalid: "
                    f"{format_errors(exc)}"
                ) from None


def _search_kind(annotation, dim: SearchDimension) -> str:
    """A search dimension's type from the model param it searches (int, float, else categorical)."""
    if dim.choices is not None:
        return "categorical"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    return dim.kind


def format_errors(exc: ValidationError) -> str:
    """A pydantic error as one line: ``path: message; path: message``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown key")
        else:
            parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)
