"""What every config object shares: unknown keys are errors; grids of values."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base for every config object: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_grid(grid: dict[str, Any], owner: str) -> None:
    """A ``grid:`` block maps each param to a non-empty list of values."""
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{owner}: grid.{key} must be a non-empty list")


def grid_points(params: dict[str, Any], grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """``params`` merged with every point of ``grid`` (the cartesian product, in key order)."""
    points: list[dict[str, Any]] = [{}]
    for key, values in grid.items():
        points = [{**p, key: v} for p in points for v in values]
    return [{**params, **p} for p in points]
