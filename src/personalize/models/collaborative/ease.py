"""EASE: a closed-form item-item linear autoencoder (Steck, WWW 2019)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from personalize import scoring
from personalize.config.model import ModelConfig
from personalize.core.errors import ConfigError
from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, ErasureNeeds, Recommender

#: float64 items x items arrays alive at once at the peak of the solve: the Gram matrix, the
#: inverse's working copy of it and of the identity (LAPACK solves in place), and the inverse
#: (measured: 4.1 copies of RSS at 4,000 items)
DENSE_COPIES = 4
GIB = 2**30


class EASEConfig(ModelConfig):
    l2: float = Field(default=250.0, gt=0, description="L2 regularisation lambda added to the Gram diagonal.")
    memory_limit_mb: int | None = Field(
        default=None,
        ge=1,
        description="Memory (MiB) the closed-form solve may use; a larger catalogue is refused before "
        "anything is allocated (null: the memory available when fitting starts).",
    )


def solve_bytes(n_items: int) -> int:
    """Peak memory of EASE's solve in bytes: ``DENSE_COPIES x items^2 x 8`` (float64)."""
    return DENSE_COPIES * n_items * n_items * 8


def available_bytes() -> int:
    """Memory available to a new allocation now (psutil's ``available``: free plus reclaimable)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(n_items: int, limit_mb: int | None = None) -> None:
    """ConfigError when EASE's solve (:func:`solve_bytes`) would not fit ``limit_mb`` MiB (None:
    the available memory), naming the catalogue size, the estimate and the limit."""
    need = solve_bytes(n_items)
    if limit_mb is None:
        limit, source = available_bytes(), "memory available now"
    else:
        limit, source = limit_mb * 2**20, "params.memory_limit_mb"
    if need > limit:
        largest = int(np.sqrt(limit / (DENSE_COPIES * 8)))
        raise ConfigError(
            f"ease: a catalogue of {n_items:,} items needs about {_size(need)} for the closed-form "
            f"solve ({DENSE_COPIES} dense items x items float64 arrays: {DENSE_COPIES} x {n_items:,}^2 x 8 "
            f"bytes), more than the limit of {_size(limit)} ({source}); at that limit EASE fits at "
            f"most {largest:,} items. Use itemknn or als for this catalogue, or raise "
            "params.memory_limit_mb where the memory exists."
        )


def _size(n_bytes: int) -> str:
    return f"{n_bytes / GIB:.1f} GiB" if n_bytes >= GIB else f"{n_bytes / 2**20:.1f} MiB"


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE's closed form from a dense float64 Gram matrix (overwritten): P = (G + l2 I)^-1,
    B = -P / diag(P) column-wise, diag(B) = 0; float32."""
    gram[np.diag_indices_from(gram)] += l2
    p = np.linalg.inv(gram)
    b = p / -np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


class EASE(Recommender):
    """B = argmin ||X - XB||^2 + lambda ||B||^2 s.t. diag(B) = 0, solved in closed form:
    P = (X^T X + lambda I)^-1, B = -P / diag(P) (column-wise), diag(B) = 0.
    score(u) = x_u B. Memory O(items^2) (:func:`solve_bytes`: 4 x items^2 x 8 bytes at the
    peak, checked against the available memory or ``memory_limit_mb`` before the solve), time
    O(items^3). Cold users: popularity."""

    name = "ease"
    erasure = ErasureNeeds(item_side_from_all_users=True)
    Config = EASEConfig

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        check_memory(data.n_items, self.config.memory_limit_mb)
        x = data.matrix
        self.weights_ = ease_weights((x.T @ x).toarray().astype(np.float64), self.config.l2)

    def _scorer(self) -> scoring.ItemItem:
        return scoring.ItemItem(weights=self.weights_)

    def _state(self):
        return {"weights": self.weights_}

    def _set_state(self, state) -> None:
        self.weights_ = state["weights"]
