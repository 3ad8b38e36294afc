"""Mult-VAE: a variational autoencoder over each user's interaction row (Liang et al.,
"Variational Autoencoders for Collaborative Filtering", WWW 2018).

One training sample is one user's whole row x_u of the training matrix (``data.matrix``: 1 for an
interaction, or the pair's training weight when the data carry weights; the row is used as it is,
not binarised). The network, for the default sizes::

    x_norm = x_u / ||x_u||_2                      (then dropout, training only)
    h      = tanh(x_norm W1 + b1)                 n_items -> hidden (600)
    [mu ; log var] = h We + be                    hidden -> 2 * latent (2 x 200)
    z      = mu + exp(log var / 2) * eps          (eps ~ N(0, I); z = mu when scoring)
    logits = tanh(z W2 + b2) W3 + b3              latent -> hidden -> n_items

Loss per batch of users (means over the batch's users):
``-sum_i log_softmax(logits)_i * x_ui + beta * KL(N(mu, var) || N(0, I))`` with
``KL = -1/2 sum_k (1 + log var_k - mu_k^2 - var_k)`` and the KL weight annealed linearly,
``beta = min(anneal_cap, step / total_anneal_steps)`` (step counts optimiser updates from 0).
Adam. Scoring uses the mean (no sampling, no dropout): the ``autoencoder`` scorer kind of
:mod:`personalize.scoring`, a NumPy forward pass over the user's current history, so the model
folds in new histories without refitting. Users without history get the popularity fallback.

``device`` (cpu, cuda or auto; :mod:`personalize.models.neural.training`): the network trains there;
the input dropout mask and eps are drawn from the seeded CPU generator on either device, so CUDA
results match the CPU's within floating-point tolerance (not bit for bit); the scorer is NumPy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from personalize import scoring
from personalize.data.matrix import InteractionData
from personalize.models.base import ErasureNeeds
from personalize.models.neural.training import (
    TorchConfig,
    TorchRecommender,
    dropout,
    standard_normal,
    state_from_numpy,
    state_to_numpy,
)


class MultVAEConfig(TorchConfig):
    hidden: int = Field(default=600, ge=1, description="Hidden layer size of the encoder and the decoder.")
    latent: int = Field(default=200, ge=1, description="Latent dimensions (size of mu and of log var).")
    dropout: float = Field(default=0.5, ge=0, lt=1, description="Dropout on the normalised input row.")
    anneal_cap: float = Field(default=0.2, ge=0, description="Largest KL weight beta.")
    total_anneal_steps: int = Field(
        default=200_000,
        ge=1,
        description="Optimiser steps over which beta rises linearly from 0 to anneal_cap (the paper's "
        "and RecBole's 200000).",
    )
    weight_decay: float = Field(default=0.0, ge=0, description="Adam weight decay (L2).")
    epochs: int = Field(default=200, ge=1, description="Maximum epochs; the best is kept under validation.")
    batch_size: int = Field(default=500, ge=1, description="Users per step.")
    learning_rate: float = Field(default=1e-3, gt=0, description="Adam step size.")


class MultVAENet(nn.Module):
    """Encoder and decoder (see the module doc); ``forward`` returns (logits, mu, log var)."""

    def __init__(self, n_items: int, hidden: int, latent: int, dropout: float = 0.5):
        super().__init__()
        self.latent = latent
        self.dropout = dropout
        self.encoder = nn.Linear(n_items, hidden)
        self.encoder_out = nn.Linear(hidden, 2 * latent)
        self.decoder = nn.Linear(latent, hidden)
        self.decoder_out = nn.Linear(hidden, n_items)

    def init_weights(self) -> None:
        """Xavier-uniform weights and N(0, 0.001^2) biases (the paper's initialisation)."""
        for layer in (self.encoder, self.encoder_out, self.decoder, self.decoder_out):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.normal_(layer.bias, mean=0.0, std=0.001)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = F.normalize(x, p=2.0, dim=1)
        h = dropout(h, self.dropout, training=self.training)
        h = torch.tanh(self.encoder(h))
        stats = self.encoder_out(h)
        mu, logvar = stats[:, : self.latent], stats[:, self.latent :]
        z = mu + torch.exp(0.5 * logvar) * standard_normal(mu) if self.training else mu
        logits = self.decoder_out(torch.tanh(self.decoder(z)))
        return logits, mu, logvar


def multvae_loss(
    logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> torch.Tensor:
    """Mean over the batch's users of the multinomial negative log-likelihood plus beta * KL."""
    nll = -(F.log_softmax(logits, dim=1) * x).sum(dim=1)
    kl = -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
    return (nll + beta * kl).mean()


class MultVAE(TorchRecommender):
    """Mult-VAE (see the module doc): scorer kind ``autoencoder``; folds in new histories."""

    name = "multvae"
    erasure = ErasureNeeds(item_side_from_all_users=True)
    Config = MultVAEConfig

    def _make_net(self, n_items: int) -> MultVAENet:
        c = self.config
        return MultVAENet(n_items, c.hidden, c.latent, c.dropout)

    def _build(self, data: InteractionData) -> None:
        c = self.config
        self.net_ = self._make_net(data.n_items)
        self.net_.init_weights()
        self._on_device(self.net_)
        self.optimizer_ = torch.optim.Adam(
            self.net_.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay, foreach=True
        )
        self._rows = data.matrix.tocsr().astype(np.float32)
        # users without interactions carry no signal (their normalised row is 0): not samples
        self._users = np.flatnonzero(np.diff(self._rows.indptr) > 0)
        self.steps_ = 0

    def beta(self, step: int) -> float:
        """The KL weight at optimiser step ``step`` (0-based)."""
        c = self.config
        return min(c.anneal_cap, step / c.total_anneal_steps)

    def _train_epoch(self, data: InteractionData, epoch: int, rng: np.random.Generator) -> float:
        c = self.config
        order = self._users[rng.permutation(len(self._users))]
        total, batches = 0.0, 0
        for start in range(0, len(order), c.batch_size):
            x = self._tensor(self._rows[order[start : start + c.batch_size]].toarray())
            logits, mu, logvar = self.net_(x)
            loss = multvae_loss(logits, x, mu, logvar, self.beta(self.steps_))
            self.optimizer_.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer_.step()
            self.steps_ += 1
            total += float(loss.detach())
            batches += 1
        return total / max(1, batches)

    def _invalidate(self) -> None:
        self.__dict__.pop("_arrays", None)

    def _scorer(self) -> scoring.Autoencoder:
        arrays = self.__dict__.get("_arrays")
        if arrays is None:
            w = {k: v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}
            latent = self.net_.latent
            arrays = {
                "w1": np.ascontiguousarray(w["encoder.weight"].T),
                "b1": w["encoder.bias"].copy(),
                "w_mu": np.ascontiguousarray(w["encoder_out.weight"][:latent].T),
                "b_mu": w["encoder_out.bias"][:latent].copy(),
                "w2": np.ascontiguousarray(w["decoder.weight"].T),
                "b2": w["decoder.bias"].copy(),
                "w3": np.ascontiguousarray(w["decoder_out.weight"].T),
                "b3": w["decoder_out.bias"].copy(),
            }
            self._arrays = arrays
        return scoring.Autoencoder(**arrays)

    def _finish(self, data: InteractionData) -> None:
        for attr in ("_rows", "_users", "optimizer_"):
            self.__dict__.pop(attr, None)

    def _state(self):
        return {f"net.{k}": v for k, v in state_to_numpy(self.net_).items()}

    def _set_state(self, state) -> None:
        weights = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
        self.net_ = self._make_net(weights["encoder.weight"].shape[1])
        self.net_.load_state_dict(state_from_numpy(weights))
        self.net_.eval()
        self._invalidate()
