"""Hybrid by routing: each user answered by the component that is best for their segment.

The routed model holds fitted component models (created through the registry). Segments are data:
the ``segment`` column of the users table, assigned by the segmentation stage from the data the
model is fitted on. On validation, each component's per-user values of the monitored metric are
averaged over each segment's users; a segment is routed to the component with the highest mean
(ties: the earlier component), a segment with fewer than ``min_users`` validation users, and users
without a segment, to the component with the highest mean over all validation users (the
``default``). A refit on more data keeps the chosen routes and components (``selected_config``).

For user u in segment s the score is component ``route[s]``'s answer, fallback included: the
routed model never does worse on a segment's validation users than the component it routes them
to, and it equals the best single component when every segment picks it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field, field_validator, model_validator

from personalize import scoring
from personalize.config.model import ModelConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError
from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, ErasureNeeds, Validator
from personalize.models.hybrid.components import (
    ComponentHybrid,
    ComponentSpec,
    components_state,
    fit_components,
    restore_components,
)


class RoutedConfig(ModelConfig):
    components: list[ComponentSpec] = Field(
        min_length=2, description="Models to route between: [{type, params, grid}, ...] (two or more)."
    )
    min_users: int = Field(
        default=20,
        ge=1,
        description="A segment with fewer validation users than this is routed to the default component.",
    )
    routes: dict[int, int] | None = Field(
        default=None,
        description="Fixed routes {segment: component index} (null: chosen on validation).",
    )
    default: int | None = Field(
        default=None,
        ge=0,
        description="Component for users without a routed segment (null: the best on all validation users).",
    )

    @field_validator("routes")
    @classmethod
    def _keys(cls, routes: dict[int, int] | None) -> dict[int, int] | None:
        return None if routes is None else {int(k): int(v) for k, v in routes.items()}

    @model_validator(mode="after")
    def _indices(self) -> RoutedConfig:
        n = len(self.components)
        used = list((self.routes or {}).values()) + ([self.default] if self.default is not None else [])
        if any(not 0 <= i < n for i in used):
            raise ValueError(f"routes and default must name components 0..{n - 1}, got {used}")
        if (self.routes is None) != (self.default is None):
            raise ValueError("routes and default are fixed together (both set, or both null)")
        return self


class Routed(ComponentHybrid):
    """Hybrid by routing: per segment, the component best on that segment's validation users
    (see the module doc)."""

    name = "routed"
    erasure = ErasureNeeds(item_side_from_all_users=False, per_user_state="segment labels")
    family = "hybrid"
    Config = RoutedConfig
    uses_validation = True

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        c = self.config
        segment = _segments(data)
        searching = c.routes is None or any(spec.grid for spec in c.components)
        if searching and not isinstance(monitor, Validator):
            raise ConfigError(
                "routed: routes are chosen on validation, so fit needs a ValidationMonitor (the recipe "
                "passes one); or set params.routes and params.default and drop the grids"
            )
        self.components_, self.component_histories_, self.component_search_ = fit_components(
            c.components, data, monitor, self.seed
        )
        if c.routes is not None:
            self.routes_, self.default_ = dict(c.routes), int(c.default)
            self.choice_ = pd.DataFrame()
        else:
            assert isinstance(monitor, Validator)
            values = pd.concat(
                [monitor.evaluate_users(m).rename(i) for i, m in enumerate(self.components_)], axis=1
            )
            self.routes_, self.default_, self.choice_ = choose_routes(values, segment, c.min_users)
        self.segment_ = segment

    def selected_config(self) -> RoutedConfig:
        """The components' selected configs and the chosen routes: a refit on more data keeps
        them without searching again."""
        return self.config.model_copy(
            update={
                "components": [
                    ComponentSpec(type=spec.type, params=model.selected_config().model_dump(mode="json"))
                    for spec, model in zip(self.config.components, self.components_, strict=True)
                ],
                "routes": dict(self.routes_),
                "default": int(self.default_),
            }
        )

    def _scorer(self) -> scoring.Routed:
        route = np.full(len(self.segment_), self.default_, dtype=np.int64)
        for s, component in self.routes_.items():
            route[self.segment_ == s] = component
        return scoring.Routed(
            members=[m.scorer() for m in self.components_], route=route, default=int(self.default_)
        )

    def _state(self) -> dict[str, np.ndarray | sp.spmatrix]:
        keys = sorted(self.routes_)
        return {
            "route_segments": np.asarray(keys, dtype=np.int64),
            "route_components": np.asarray([self.routes_[k] for k in keys], dtype=np.int64),
            "route_default": np.asarray([self.default_], dtype=np.int64),
            "segment": self.segment_,
            **components_state(self.config.components, self.components_),
        }

    def _set_state(self, state) -> None:
        self.routes_ = dict(
            zip(state["route_segments"].tolist(), state["route_components"].tolist(), strict=True)
        )
        self.default_ = int(state["route_default"][0])
        self.segment_ = np.asarray(state["segment"], dtype=np.int64)
        self.components_ = restore_components(self, state)
        self.component_histories_ = [[] for _ in self.components_]
        self.component_search_ = [[] for _ in self.components_]
        self.choice_ = pd.DataFrame()


def _segments(data: InteractionData) -> np.ndarray:
    if C.SEGMENT not in data.users.columns:
        raise ConfigError(
            "routed needs user segments: set segments.enabled: true in the experiment (the recipe "
            "then labels every user before fitting)"
        )
    values = pd.to_numeric(data.users[C.SEGMENT], errors="coerce").to_numpy(dtype=np.float64)
    return np.where(np.isnan(values), -1, values).astype(np.int64)


def choose_routes(
    values: pd.DataFrame, segment: np.ndarray, min_users: int
) -> tuple[dict[int, int], int, pd.DataFrame]:
    """Routes from per-user validation values (rows: user indices; columns: components).

    Returns ({segment: component}, default component, the table of per-segment means with the
    users counted and the route chosen)."""
    values = values.dropna(how="all")
    default = int(np.argmax(values.mean(axis=0).to_numpy()))  # first of the best on ties
    seg = pd.Series(segment[values.index.to_numpy()], index=values.index, name="segment")
    rows, routes = [], {}
    for s, group in values.groupby(seg):
        if s < 0:
            continue
        means = group.mean(axis=0).to_numpy()
        chosen = int(np.argmax(means)) if len(group) >= min_users else default
        routes[int(s)] = chosen
        rows.append({"segment": int(s), "users": len(group), **dict(enumerate(means)), "route": chosen})
    return routes, default, pd.DataFrame(rows)
