"""Hybrid by fusion: a weighted blend of two or more fitted models' scores.

The fusion model holds fitted component models (created through the registry); it does not
subclass them. For user u and item i, with component scores s_c(u, i) and weights w_c:

- ``minmax``: score = sum_c w_c * (s_c(u, i) - min_u,c) / (max_u,c - min_u,c), where the min and
  max are taken per user over the items u has not seen in training (the candidates; a constant
  row normalises to 0);
- ``rrf`` (reciprocal-rank fusion): score = sum_c w_c / (rrf_k + rank_c(u, i)), rank 1-based
  among the candidates (seen items contribute 0), ties by item index.

An item a component with positive weight cannot recommend (score ``-inf``) stays ``-inf``. When
one weight is 1 and the others 0, the fusion returns that component's scores unchanged, so the
blend can never do worse on validation than either component: the weights are chosen on the
validation part from a grid that includes 0 and 1 (for more than two components, every weight
vector on the simplex whose entries are grid values).

Cold users: a user is answered by the blend when at least one component answers them itself
(a component that handles cold users, e.g. ``recent_popularity``); the other components then
contribute their own fallback (training popularity). A user no component answers itself
(cold or unknown) gets the popularity fallback, as for any model.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field, field_validator, model_validator

from personalize import scoring
from personalize.config.model import ModelConfig
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

_DEFAULT_GRID = [round(0.1 * i, 1) for i in range(11)]
_CACHE_BYTES = 1 << 30  # component scores kept in memory during the weight search, at most


class FusionConfig(ModelConfig):
    components: list[ComponentSpec] = Field(
        min_length=2, description="Models to blend: [{type, params, grid}, ...] (two or more)."
    )
    method: Literal["minmax", "rrf"] = Field(
        default="minmax",
        description="minmax: per-user min-max normalised weighted sum; rrf: weighted reciprocal-rank fusion.",
    )
    weight_grid: list[float] = Field(
        default_factory=lambda: list(_DEFAULT_GRID),
        description="Candidate weights per component, searched on validation; must include 0 and 1.",
    )
    weights: list[float] | None = Field(
        default=None,
        description="Fixed weights, one per component (null: chosen on validation from weight_grid).",
    )
    rrf_k: float = Field(default=60.0, gt=0, description="rrf: the constant k in 1 / (k + rank).")

    @field_validator("weight_grid")
    @classmethod
    def _grid(cls, grid: list[float]) -> list[float]:
        if any(not 0 <= w <= 1 for w in grid):
            raise ValueError(f"weight_grid values must be in [0, 1], got {grid}")
        if 0 not in grid or 1 not in grid:
            raise ValueError(f"weight_grid must include 0 and 1 (each component alone), got {grid}")
        return sorted(set(grid))

    @model_validator(mode="after")
    def _weights(self) -> FusionConfig:
        if self.weights is not None:
            if len(self.weights) != len(self.components):
                raise ValueError(
                    f"weights has {len(self.weights)} values for {len(self.components)} components"
                )
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError(f"weights must be >= 0 with a positive sum, got {self.weights}")
        return self


def weight_candidates(grid: list[float], n: int) -> list[tuple[float, ...]]:
    """Every weight vector of ``n`` grid values summing to 1 (first component's weight ascending
    for two components), one-hot vectors included."""
    out = []
    values = sorted(set(grid))
    for head in itertools.product(values, repeat=n - 1):
        last = 1.0 - sum(head)
        match = [v for v in values if abs(v - last) < 1e-9]
        if match:
            out.append((*head, match[0]))
    return out


class Fusion(ComponentHybrid):
    """Hybrid by fusion: a weighted blend of fitted models, weights chosen on validation.

    Per-user min-max score fusion or reciprocal-rank fusion of ``components`` (see the module doc
    for the formulas and for cold users)."""

    name = "fusion"
    erasure = ErasureNeeds(item_side_from_all_users=False)
    family = "hybrid"
    Config = FusionConfig
    uses_validation = True

    # ------------------------------------------------------------------------ fitting

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        c = self.config
        searching = c.weights is None or any(spec.grid for spec in c.components)
        if searching and not isinstance(monitor, Validator):
            raise ConfigError(
                "fusion: weights (and component grids) are chosen on validation, so fit needs a "
                "ValidationMonitor (the recipe passes one); or set params.weights and drop the grids"
            )
        self.components_, self.component_histories_, self.component_search_ = fit_components(
            c.components, data, monitor, self.seed
        )
        self.search_: list[dict[str, Any]] = []
        if c.weights is not None:
            self.weights_ = np.asarray(c.weights, dtype=np.float64)
            return
        assert isinstance(monitor, Validator)
        self._cache = self._new_cache(monitor.n_users)
        best: tuple[float, np.ndarray] | None = None
        try:
            for candidate in weight_candidates(c.weight_grid, len(self.components_)):
                self.weights_ = np.asarray(candidate, dtype=np.float64)
                value = monitor.evaluate(self)
                self.search_.append({"weights": list(candidate), f"valid_{monitor.metric}": value})
                if best is None or value > best[0]:
                    best = (value, self.weights_)
        finally:
            self._cache = None
        assert best is not None
        self.weights_ = best[1]

    def _new_cache(self, n_users: int) -> dict | None:
        size = n_users * self.n_items * len(self.components_) * 4
        return {} if size <= _CACHE_BYTES else None

    def selected_config(self) -> FusionConfig:
        """Components' selected configs (e.g. best epochs) and the chosen weights: a refit on
        more data reproduces the choice without searching again."""
        return self.config.model_copy(
            update={
                "components": [
                    ComponentSpec(type=spec.type, params=model.selected_config().model_dump(mode="json"))
                    for spec, model in zip(self.config.components, self.components_)
                ],
                "weights": [float(w) for w in self.weights_],
            }
        )

    # ------------------------------------------------------------------------ scoring

    def _scorer(self) -> scoring.Blend:
        """Kind ``blend`` over the components' scorers; while weights are searched, the parts'
        transformed scores are cached per block of users (``_cache``)."""
        return scoring.Blend(
            members=[model.scorer() for model in self.components_],
            weights=self.weights_,
            method=self.config.method,
            rrf_k=self.config.rrf_k,
            cache=getattr(self, "_cache", None),
        )

    # -------------------------------------------------------------------- persistence

    def _state(self) -> dict[str, np.ndarray | sp.spmatrix]:
        return {"fusion_weights": self.weights_, **components_state(self.config.components, self.components_)}

    def _set_state(self, state) -> None:
        self.weights_ = np.asarray(state["fusion_weights"], dtype=np.float64)
        self.components_ = restore_components(self, state)
        self.component_histories_ = [[] for _ in self.components_]
        self.component_search_ = [[] for _ in self.components_]
        self.search_ = []
