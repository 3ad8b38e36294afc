"""BPR-MF: matrix factorisation trained with the pairwise BPR loss (Rendle et al. 2009), via
``implicit``."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from personalize.config.model import ModelConfig
from personalize.data.matrix import InteractionData
from personalize.models.base import ErasureNeeds
from personalize.models.collaborative._implicit import ImplicitMF


class BPRConfig(ModelConfig):
    factors: int = Field(default=64, ge=1, description="Latent dimensions (implicit adds an item bias).")
    learning_rate: float = Field(default=0.01, gt=0, description="SGD step size.")
    regularization: float = Field(default=0.001, ge=0, description="L2 regularisation.")
    iterations: int = Field(default=200, ge=1, description="Epochs; the best is kept under validation.")
    num_threads: int = Field(
        default=1, ge=0, description="Threads; BPR's sampling is only reproducible with 1."
    )
    loss_sample: int = Field(
        default=20000, ge=100, description="Training triples in the per-epoch loss estimate."
    )


class BPR(ImplicitMF):
    """Reported training loss: mean -log sigmoid(x_ui - x_uj) over a fixed seeded sample of
    (user, positive, negative) triples. Cold users: popularity."""

    name = "bpr"
    erasure = ErasureNeeds(item_side_from_all_users=True, per_user_state="user factors")
    no_fold_in = "per-user factors learned by BPR: held-out users have none"
    Config = BPRConfig

    def _make(self):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        c = self.config
        return BayesianPersonalizedRanking(
            factors=c.factors,
            learning_rate=c.learning_rate,
            regularization=c.regularization,
            iterations=c.iterations,
            num_threads=c.num_threads,
            random_state=self.seed,
        )

    def _epoch_loss(self, callback_args: tuple, data: InteractionData) -> float | None:
        if not hasattr(self, "_loss_triples") or self._loss_triples[0] is not data:
            rng = np.random.default_rng(self.seed)
            x = data.matrix.tocoo()
            pick = rng.integers(0, x.nnz, size=min(self.config.loss_sample, x.nnz))
            users, pos = x.row[pick], x.col[pick]
            neg = rng.integers(0, data.n_items, size=len(pick))
            self._loss_triples = (data, users, pos, neg)
        _, users, pos, neg = self._loss_triples
        u = self.user_factors_[users]
        diff = np.einsum("ij,ij->i", u, self.item_factors_[pos] - self.item_factors_[neg])
        return float(np.mean(np.logaddexp(0.0, -diff)))
