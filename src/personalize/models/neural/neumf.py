"""NeuMF: neural matrix factorisation (He et al., "Neural Collaborative Filtering", WWW 2017).

GMF and MLP branches with separate user / item embeddings, fused by one output layer and
trained pointwise with binary cross-entropy on every observed (user, item) pair plus
``negatives`` uniformly sampled unobserved items per pair, drawn afresh each epoch. No
pre-training of the two branches (the paper's optional step; RecBole's default too).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from personalize import scoring
from personalize.data.matrix import InteractionData
from personalize.models.neural.training import (
    NegativeSampler,
    TorchConfig,
    TorchRecommender,
    state_from_numpy,
    state_to_numpy,
)


class NeuMFConfig(TorchConfig):
    factors: int = Field(default=32, ge=1, description="GMF embedding size.")
    mlp_embedding: int = Field(default=32, ge=1, description="MLP embedding size (per user and per item).")
    mlp_layers: list[int] = Field(
        default=[64, 32, 16], min_length=1, description="MLP hidden sizes after the concatenated embeddings."
    )
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout after each MLP hidden layer.")
    negatives: int = Field(default=4, ge=1, description="Sampled negatives per observed pair and epoch.")
    weight_decay: float = Field(default=0.0, ge=0, description="Adam weight decay (L2).")
    init_std: float = Field(default=0.01, gt=0, description="Std of the normal embedding initialisation.")
    epochs: int = Field(default=30, ge=1, description="Maximum epochs; the best is kept under validation.")
    batch_size: int = Field(default=2048, ge=1, description="Training examples (pairs) per step.")
    learning_rate: float = Field(default=0.005, gt=0, description="Adam step size.")

    @field_validator("mlp_layers")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError(f"mlp_layers must be positive sizes, got {value}")
        return value


class NeuMFNet(nn.Module):
    """The network (training: :meth:`forward` on pairs; scoring every item at once is the
    ``neumf`` scorer of :mod:`personalize.scoring`, over this network's ``state_dict``)."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        factors: int,
        mlp_embedding: int,
        mlp_layers: list[int],
        dropout: float = 0.0,
    ):
        super().__init__()
        self.user_gmf = nn.Embedding(n_users, factors)
        self.item_gmf = nn.Embedding(n_items, factors)
        self.user_mlp = nn.Embedding(n_users, mlp_embedding)
        self.item_mlp = nn.Embedding(n_items, mlp_embedding)
        sizes = [2 * mlp_embedding, *mlp_layers]
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.out = nn.Linear(factors + sizes[-1], 1)
        self.dropout = dropout

    def init_weights(self, std: float) -> None:
        for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
            nn.init.normal_(emb.weight, mean=0.0, std=std)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits for aligned (user, item) pairs."""
        gmf = self.user_gmf(users) * self.item_gmf(items)
        h = torch.cat([self.user_mlp(users), self.item_mlp(items)], dim=-1)
        for layer in self.mlp:
            h = F.relu(layer(h))
            if self.dropout and self.training:
                h = F.dropout(h, self.dropout, training=True)
        return self.out(torch.cat([gmf, h], dim=-1)).squeeze(-1)


class NeuMF(TorchRecommender):
    """GMF + MLP with a fused output layer; pointwise BCE with sampled negatives.

    score(u, i) = w . [p_u * q_i ; MLP([p'_u ; q'_i])] + b (a logit; the sigmoid is left out as it
    does not change rankings). Training loss: mean binary cross-entropy over the epoch's
    positives and negatives. Cold users: popularity. Scorer kind ``neumf`` (the network's
    weights and sizes).
    """

    name = "neumf"
    no_fold_in = "per-user embeddings learned by NeuMF: held-out users have none"
    Config = NeuMFConfig

    def _make_net(self, n_users: int, n_items: int) -> NeuMFNet:
        c = self.config
        return NeuMFNet(n_users, n_items, c.factors, c.mlp_embedding, list(c.mlp_layers), c.dropout)

    def _build(self, data: InteractionData) -> None:
        c = self.config
        self.net_ = self._make_net(data.n_users, data.n_items)
        self.net_.init_weights(c.init_std)
        self.optimizer_ = torch.optim.Adam(
            self.net_.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay, foreach=True
        )
        # every epoch: each observed pair followed by `negatives` pairs of the same user whose
        # items are drawn afresh; only the negative items and the order change between epochs
        coo = data.matrix.tocoo()
        k = c.negatives
        self._users = np.repeat(coo.row.astype(np.int64), 1 + k)
        self._items = np.repeat(coo.col.astype(np.int64), 1 + k)
        self._labels = np.zeros(len(self._users), dtype=np.float32)
        self._labels[:: 1 + k] = 1.0
        self._neg = self._labels == 0
        self._neg_users = self._users[self._neg]
        self._sampler = NegativeSampler(data.matrix)

    def _train_epoch(self, data: InteractionData, epoch: int, rng: np.random.Generator) -> float:
        c = self.config
        items = self._items.copy()
        items[self._neg] = self._sampler.sample(self._neg_users, rng)
        order = rng.permutation(len(items))
        users_t = torch.from_numpy(self._users[order])
        items_t = torch.from_numpy(items[order])
        labels_t = torch.from_numpy(self._labels[order])
        total, batches = 0.0, 0
        for start in range(0, len(order), c.batch_size):
            sl = slice(start, start + c.batch_size)
            logits = self.net_(users_t[sl], items_t[sl])
            loss = F.binary_cross_entropy_with_logits(logits, labels_t[sl])
            self.optimizer_.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer_.step()
            total += float(loss.detach())
            batches += 1
        return total / max(1, batches)

    def _scorer(self) -> scoring.NeuMF:
        c = self.config
        return scoring.NeuMF(
            weights=self.net_.state_dict(),
            factors=c.factors,
            mlp_embedding=c.mlp_embedding,
            mlp_layers=list(c.mlp_layers),
        )

    def _finish(self, data: InteractionData) -> None:
        for attr in ("_users", "_items", "_labels", "_neg", "_neg_users", "_sampler", "optimizer_"):
            self.__dict__.pop(attr, None)

    def _state(self):
        return {f"net.{k}": v for k, v in state_to_numpy(self.net_).items()}

    def _set_state(self, state) -> None:
        weights = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
        n_users, n_items = weights["user_gmf.weight"].shape[0], weights["item_gmf.weight"].shape[0]
        self.net_ = self._make_net(n_users, n_items)
        self.net_.load_state_dict(state_from_numpy(weights))
        self.net_.eval()
