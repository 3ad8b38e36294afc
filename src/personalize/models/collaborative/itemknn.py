"""ItemKNN: item-item cosine similarity with shrinkage, top-k neighbours per item."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from personalize import scoring
from personalize.config.model import ModelConfig
from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, ErasureNeeds, Recommender


class ItemKNNConfig(ModelConfig):
    neighbours: int = Field(default=100, ge=1, description="Neighbours kept per item (k).")
    shrink: float = Field(default=0.0, ge=0, description="Shrinkage added to the cosine denominator.")
    block_items: int = Field(default=512, ge=1, description="Items per similarity block (memory bound).")


class ItemItemWeights:
    """A model answered by the ``item_item`` scorer from a sparse item x item ``weights_``
    matrix (ItemKNN and private ItemKNN): the scorer and the saved state."""

    def _scorer(self) -> scoring.ItemItem:
        return scoring.ItemItem(weights=self.weights_)  # type: ignore[attr-defined]

    def _state(self):
        return {"weights": self.weights_}  # type: ignore[attr-defined]

    def _set_state(self, state) -> None:
        self.weights_ = state["weights"].tocsr()


class ItemKNN(ItemItemWeights, Recommender):
    """sim(i, j) = x_i . x_j / (||x_i|| ||x_j|| + shrink) over the binary user-item columns,
    sim(i, i) = 0; for every target item j only its ``neighbours`` most similar items i keep
    a weight (as RecBole's ItemKNN). score(u, j) = sum over the user's items i of sim(i, j).
    Computed in blocks of items, so memory is O(items x block). Cold users: popularity."""

    name = "itemknn"
    erasure = ErasureNeeds(item_side_from_all_users=True)
    Config = ItemKNNConfig

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        x = data.matrix.tocsc()
        n = data.n_items
        k = min(self.config.neighbours, max(1, n - 1))
        norms = np.sqrt(np.asarray(x.power(2).sum(axis=0)).ravel())
        xt = x.T.tocsr()
        rows, cols, vals = [], [], []
        for start in range(0, n, self.config.block_items):
            stop = min(n, start + self.config.block_items)
            block = np.asarray((xt @ x[:, start:stop]).todense(), dtype=np.float64)  # (n, b)
            denom = norms[:, None] * norms[None, start:stop] + self.config.shrink
            sim = np.divide(block, denom, out=np.zeros_like(block), where=denom > 0)
            sim[np.arange(start, stop), np.arange(stop - start)] = 0.0
            top = np.argpartition(-sim, k - 1, axis=0)[:k]  # (k, b) source items per target
            top_vals = np.take_along_axis(sim, top, axis=0)
            keep = top_vals != 0
            rows.append(top[keep])
            cols.append(np.broadcast_to(np.arange(start, stop), top.shape)[keep])
            vals.append(top_vals[keep])
        self.weights_ = sp.csr_matrix(
            (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n, n),
        )
