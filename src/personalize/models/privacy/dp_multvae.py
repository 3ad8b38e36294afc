"""User-level differentially private Mult-VAE, trained by DP-SGD (:mod:`.dpsgd`).

The unit is one user: a training sample of Mult-VAE is one user's whole row x_u of the training
matrix, so Poisson-sampling users and clipping each user's gradient to L2 norm ``clip`` bounds
what one user's whole history can change in a step; the noise is calibrated so that the planned
``epochs`` x steps per epoch spend the target (epsilon, delta) by the accountant (see
:mod:`.dpsgd` for the step, the sampling and the calibration; n = users with training rows,
q = batch_size / n, round(1 / q) steps per epoch).

The network, the per-user loss (multinomial NLL + beta KL, beta annealed linearly over
``total_anneal_steps`` optimiser steps) and the scorer are Mult-VAE's
(:mod:`personalize.models.neural.multvae`): the ``autoencoder`` scorer kind, which folds in any
history at answer time. The weights are private; the history a scorer reads is the user's own
input. Private models answer users without history from the network itself (the mean decoder
output for an empty row, post-processing of the private weights) instead of the training
data's item counts, which are not private.

Early stopping chooses the epoch on validation data, outside the private training set (not
covered by the guarantee; stopping early spends less than the target, ``epsilon_history_``).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from personalize.data.matrix import InteractionData
from personalize.models.base import ErasureNeeds
from personalize.models.neural.multvae import MultVAE, MultVAEConfig
from personalize.models.privacy.dpsgd import DPSGDConfig, DPSGDModel


class DPMultVAEConfig(DPSGDConfig, MultVAEConfig):
    total_anneal_steps: int = Field(
        default=200,
        ge=1,
        description="Optimiser steps over which beta rises linearly from 0 to anneal_cap (DP-SGD takes "
        "about n / batch_size steps per epoch, a few on small data: keep this small).",
    )


class DPMultVAE(DPSGDModel, MultVAE):
    """Mult-VAE trained by user-level DP-SGD (see the module doc). ``dp_``: the guarantee
    (DPSpec, unit ``user``); ``epsilon_history_``: epsilon spent after each epoch (private only)."""

    name = "dp_multvae"
    erasure = ErasureNeeds(item_side_from_all_users=True)
    dp_unit = "user"
    Config = DPMultVAEConfig

    def _build(self, data: InteractionData) -> None:
        super()._build(data)
        self._start_private(self.optimizer_, len(self._users))

    def per_sample_losses(self, x: torch.Tensor) -> torch.Tensor:
        """Each row's loss: -sum_i log_softmax(logits)_i x_ui + beta KL (beta at the current step)."""
        logits, mu, logvar = self.net_(x)
        nll = -(torch.log_softmax(logits, dim=1) * x).sum(dim=1)
        kl = -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
        return nll + self.beta(self.steps_) * kl

    def _batch_loss(self, positions: np.ndarray):
        x = self._tensor(self._rows[self._users[positions]].toarray())
        return lambda: self.per_sample_losses(x)

    def _stepped(self) -> None:
        self.steps_ += 1

    def _train_epoch(self, data: InteractionData, epoch: int, rng: np.random.Generator) -> float | None:
        return self._private_epoch(rng)

    def _private_fallback(self) -> np.ndarray:
        """The scores of an empty history (the network's answer to a zero row)."""
        scorer = self._scorer()
        h = np.tanh(scorer.b1)  # the normalised zero row is zero
        z = h @ scorer.w_mu + scorer.b_mu
        return (np.tanh(z @ scorer.w2 + scorer.b2) @ scorer.w3 + scorer.b3).astype(np.float32)
