"""Event-level differentially private NeuMF, trained by DP-SGD (:mod:`.dpsgd`).

The unit is one interaction, NOT a user: event-level privacy. A training sample is one observed
(user, item) pair of the training matrix (a nonzero entry: repeated events of the same pair are
one entry, so one unit) together with ``negatives`` items drawn afresh each epoch, uniformly from
the catalogue without the sample's own item. The negatives depend on the sample alone (unlike
NeuMF's, which avoid every item the user has seen), so removing one interaction removes exactly
one sample and changes no other: Poisson sampling over the n interactions, each sample's
gradient clipped to L2 norm ``clip``, and the noise calibrated to the planned steps give
(epsilon, delta) for any single interaction (delta default 1 / (10 n), n = training
interactions). A user with many interactions is protected only per interaction: the guarantee
for a whole history of k interactions degrades with k (group privacy). A negative that happens
to be another positive of the user is kept as a negative (label noise, about the matrix's density).

Sample loss: the mean binary cross-entropy over its 1 + ``negatives`` pairs (label 1 for the
observed pair, 0 for the negatives); the network and the ``neumf`` scorer are NeuMF's
(:mod:`personalize.models.neural.neumf`), with plain ``nn.Embedding`` tables (Opacus' ghost
clipping computes their per-sample gradient norms without per-sample gradients). Like NeuMF it
cannot score users it never saw. Private models answer users without history from the network
(the scores of the mean user embeddings, post-processing of the private weights) instead of the
training data's item counts, which are not private.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import model_validator

from personalize.data.matrix import InteractionData
from personalize.models.base import ErasureNeeds
from personalize.models.neural.neumf import NeuMF, NeuMFConfig
from personalize.models.privacy.dpsgd import DPSGDConfig, DPSGDModel


class DPNeuMFConfig(DPSGDConfig, NeuMFConfig):
    """NeuMF's settings under DP-SGD: Poisson-sampled batches replace NeuMF's streamed epochs
    (``chunk_pairs`` does not apply) and Opacus clips dense per-sample gradients, so the
    embedding tables cannot be sparse."""

    @model_validator(mode="after")
    def _dense_embeddings(self) -> DPNeuMFConfig:
        if self.sparse_embeddings:
            raise ValueError("dp_neumf trains dense embedding tables (DP-SGD); set sparse_embeddings: false")
        return self


def sample_negatives(items: np.ndarray, n_items: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """For each positive item i, ``k`` items drawn uniformly from the other n_items - 1 items
    (shape (len(items), k)): r uniform on 0..n_items - 2, shifted by one where r >= i."""
    if n_items < 2:
        raise ValueError("negative sampling needs at least two items")
    r = rng.integers(0, n_items - 1, size=(len(items), k))
    return r + (r >= items[:, None])


class DPNeuMF(DPSGDModel, NeuMF):
    """NeuMF trained by event-level DP-SGD (see the module doc). ``dp_``: the guarantee
    (DPSpec, unit ``event``); ``epsilon_history_``: epsilon spent after each epoch (private only)."""

    name = "dp_neumf"
    erasure = ErasureNeeds(item_side_from_all_users=True, per_user_state="user embeddings")
    dp_unit = "event"
    Config = DPNeuMFConfig

    def _build(self, data: InteractionData) -> None:
        c = self.config
        self.net_ = self._make_net(data.n_users, data.n_items)
        self.net_.init_weights(c.init_std)
        self._on_device(self.net_)
        optimizer = torch.optim.Adam(
            self.net_.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay, foreach=True
        )
        coo = data.matrix.tocoo()
        self._pos_users = coo.row.astype(np.int64)
        self._pos_items = coo.col.astype(np.int64)
        self._n_items = data.n_items
        labels = np.zeros(1 + c.negatives, dtype=np.float32)
        labels[0] = 1.0
        self._labels = self._tensor(labels)
        self._start_private(optimizer, len(self._pos_users))

    def per_sample_losses(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Each sample's mean BCE over its pairs (``users``, ``items``: (b, 1 + negatives), the
        observed pair first)."""
        logits = self.net_(users, items)
        bce = F.binary_cross_entropy_with_logits(logits, self._labels.expand_as(logits), reduction="none")
        return bce.mean(dim=1)

    def _batch_loss(self, positions: np.ndarray):
        users = self._tensor(np.repeat(self._pos_users[positions, None], 1 + self.config.negatives, axis=1))
        items = self._tensor(self._items_all[positions])
        return lambda: self.per_sample_losses(users, items)

    def _train_epoch(self, data: InteractionData, epoch: int, rng: np.random.Generator) -> float | None:
        negatives = sample_negatives(self._pos_items, self._n_items, self.config.negatives, rng)
        self._items_all = np.concatenate([self._pos_items[:, None], negatives], axis=1)
        return self._private_epoch(rng)

    def _finish(self, data: InteractionData) -> None:
        super()._finish(data)
        for attr in ("_pos_users", "_pos_items", "_n_items", "_labels", "_items_all"):
            self.__dict__.pop(attr, None)

    def _private_fallback(self) -> np.ndarray:
        """Scores of every item for the mean user (the mean of each user embedding table)."""
        net = self.net_
        with torch.no_grad():
            gmf = net.user_gmf.weight.mean(dim=0, keepdim=True) * net.item_gmf.weight
            user_mlp = net.user_mlp.weight.mean(dim=0, keepdim=True).expand(net.item_mlp.weight.shape[0], -1)
            h = torch.cat([user_mlp, net.item_mlp.weight], dim=-1)
            for layer in net.mlp:
                h = F.relu(layer(h))
            return net.out(torch.cat([gmf, h], dim=-1)).squeeze(-1).cpu().numpy().astype(np.float32)
