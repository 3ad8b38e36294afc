"""EASE: a closed-form item-item linear autoencoder (Steck, WWW 2019)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from personalize import scoring
from personalize.config.model import ModelConfig
from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, Recommender


class EASEConfig(ModelConfig):
    l2: float = Field(default=250.0, gt=0, description="L2 regularisation lambda added to the Gram diagonal.")


class EASE(Recommender):
    """B = argmin ||X - XB||^2 + lambda ||B||^2 s.t. diag(B) = 0, solved in closed form:
    P = (X^T X + lambda I)^-1, B = -P / diag(P) (column-wise), diag(B) = 0.
    score(u) = x_u B. Memory and time O(items^2) / O(items^3). Cold users: popularity."""

    name = "ease"
    Config = EASEConfig

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        x = data.matrix
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.config.l2
        p = np.linalg.inv(gram)
        b = p / -np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        self.weights_ = b.astype(np.float32)

    def _scorer(self) -> scoring.ItemItem:
        return scoring.ItemItem(weights=self.weights_)

    def _state(self):
        return {"weights": self.weights_}

    def _set_state(self, state) -> None:
        self.weights_ = state["weights"]
