"""User-level differentially private ItemKNN from the noisy clipped Gram matrix of DP-EASE.

Cosine similarity needs only the item-item Gram matrix G = X^T X: its off-diagonal entries are
the co-occurrence dot products x_i . x_j and its diagonal the squared column norms ||x_i||^2.
DP-ItemKNN releases exactly the statistic DP-EASE releases (:func:`~.dp_ease.noisy_clipped_gram`:
rows clipped to L2 norm ``clip``, so one user moves G by at most clip^2 in Frobenius norm; one
symmetric Gaussian draw of the analytic sigma at (epsilon, delta)) and computes everything else
from it, which is post-processing: the (epsilon, delta) guarantee, in the unit of one user's whole
training history, covers the similarity weights and the popularity fallback (the noisy diagonal).
The histories a scorer reads at answer time are the users' own input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, ErasureNeeds, Recommender
from personalize.models.collaborative.itemknn import ItemItemWeights
from personalize.models.privacy.dp_ease import noisy_clipped_gram
from personalize.models.privacy.mechanisms import DPConfig, PrivateModel


class DPItemKNNConfig(DPConfig):
    neighbours: int = Field(default=100, ge=1, description="Neighbours kept per item (k).")
    shrink: float = Field(default=10.0, ge=0, description="Shrinkage added to the cosine denominator.")
    diag_floor: float = Field(
        default=1.0,
        ge=0,
        description=(
            "Floor of the noisy Gram diagonal, in units of the noise std sigma: "
            "||x_i||^2 is taken as max(G~_ii, diag_floor * sigma) (0 without noise)."
        ),
    )
    block_items: int = Field(default=512, ge=1, description="Items per top-k block (memory bound).")


def cosine_top_k(gram: np.ndarray, sq_norms: np.ndarray, shrink: float, k: int, block: int) -> sp.csr_matrix:
    """Item-item weights from a Gram matrix: sim(i, j) = G_ij / (sqrt(n_i) sqrt(n_j) + shrink)
    with n = ``sq_norms`` (squared column norms), sim(i, i) = 0, a zero denominator giving 0;
    for each target item j only its ``k`` largest sim(i, j) over source items i are kept (CSR,
    float32, rows = source items), as :class:`~personalize.models.collaborative.itemknn.ItemKNN`.
    Blocks of ``block`` target items bound the memory to O(items x block)."""
    n = gram.shape[0]
    k = min(k, max(1, n - 1))
    norms = np.sqrt(np.maximum(sq_norms, 0.0))
    rows, cols, vals = [], [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        sub = gram[:, start:stop]
        denom = norms[:, None] * norms[None, start:stop] + shrink
        sim = np.divide(sub, denom, out=np.zeros_like(sub, dtype=np.float64), where=denom > 0)
        sim[np.arange(start, stop), np.arange(stop - start)] = 0.0
        top = np.argpartition(-sim, k - 1, axis=0)[:k]
        top_vals = np.take_along_axis(sim, top, axis=0)
        keep = top_vals != 0
        rows.append(top[keep])
        cols.append(np.broadcast_to(np.arange(start, stop), top.shape)[keep])
        vals.append(top_vals[keep])
    return sp.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n, n),
    )


class DPItemKNN(PrivateModel, ItemItemWeights, Recommender):
    """ItemKNN on the released Gram matrix G~ = X_c^T X_c + N (module doc):
    sim(i, j) = G~_ij / (sqrt(d_i) sqrt(d_j) + shrink), d_i = max(G~_ii, diag_floor * sigma),
    sim(i, i) = 0, the ``neighbours`` most similar source items kept per target item;
    score(u, j) = sum over the user's items i of sim(i, j) (the ``item_item`` scorer).

    The floor: noise can make G~_ii tiny or negative (an item few users chose); its square root
    would then divide noise by almost nothing and rank a rare item first. Below diag_floor *
    sigma the diagonal is replaced by that floor (post-processing; 0 without noise, where the
    clipped diagonal is never negative and a zero denominator gives similarity 0 as in ItemKNN).
    Private: the popularity fallback is the noisy diagonal G~_ii (unfloored), as DP-EASE."""

    name = "dp_itemknn"
    erasure = ErasureNeeds(item_side_from_all_users=True)
    dp_unit = "user"
    Config = DPItemKNNConfig

    @classmethod
    def is_stochastic(cls, params: dict[str, Any]) -> bool:
        return params.get("epsilon") is not None

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        c = self.config
        gram, self.dp_ = noisy_clipped_gram(data.matrix, c)
        diag = np.diag(gram).copy()
        if c.epsilon is not None:
            self.popularity_ = diag.astype(np.float32)
        sq_norms = np.maximum(diag, c.diag_floor * self.dp_.sigma)
        self.weights_ = cosine_top_k(gram, sq_norms, c.shrink, c.neighbours, c.block_items)
