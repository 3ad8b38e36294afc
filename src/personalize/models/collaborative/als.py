"""ALS: implicit-feedback matrix factorisation (Hu, Koren & Volinsky 2008), via ``implicit``."""

from __future__ import annotations

from pydantic import Field

from personalize import scoring
from personalize.config.model import ModelConfig
from personalize.data.matrix import InteractionData
from personalize.models.base import ErasureNeeds
from personalize.models.collaborative._implicit import ImplicitMF


class ALSConfig(ModelConfig):
    factors: int = Field(default=64, ge=1, description="Latent dimensions.")
    regularization: float = Field(default=5.0, ge=0, description="L2 regularisation of the factors.")
    alpha: float = Field(
        default=1.0,
        gt=0,
        description="Confidence of an observed interaction: c = alpha x its weight (implicit's rule).",
    )
    iterations: int = Field(
        default=15, ge=1, description="ALS sweeps (epochs); the best is kept under validation."
    )
    num_threads: int = Field(
        default=0, ge=0, description="Threads (0: all cores); ALS is deterministic either way."
    )


class ALSScoring:
    """The ``factors`` scorer with implicit's ALS fold-in (a user's vector solved from their
    history with the model's ``regularization`` and ``alpha``): ALS and private ALS alike."""

    def _scorer(self) -> scoring.Factors:
        c = self.config  # type: ignore[attr-defined]
        return scoring.Factors(
            users=self.user_factors_,  # type: ignore[attr-defined]
            items=self.item_factors_,  # type: ignore[attr-defined]
            fold="als",
            regularization=c.regularization,
            alpha=c.alpha,
        )


class ALS(ALSScoring, ImplicitMF):
    """Weighted ALS on the binary matrix with confidence alpha; the training loss is implicit's
    weighted squared error. Cold users: popularity."""

    name = "als"
    erasure = ErasureNeeds(item_side_from_all_users=True, per_user_state="user factors")
    Config = ALSConfig

    def _make(self):
        from implicit.cpu.als import AlternatingLeastSquares

        c = self.config
        return AlternatingLeastSquares(
            factors=c.factors,
            regularization=c.regularization,
            alpha=c.alpha,
            iterations=c.iterations,
            calculate_training_loss=True,
            num_threads=c.num_threads,
            random_state=self.seed,
        )

    def _epoch_loss(self, callback_args: tuple, data: InteractionData) -> float | None:
        loss = callback_args[2] if len(callback_args) > 2 else None
        return None if loss is None else float(loss)
