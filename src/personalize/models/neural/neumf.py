"""NeuMF: neural matrix factorisation (He et al., "Neural Collaborative Filtering", WWW 2017).

GMF and MLP branches with separate user / item embeddings, fused by one output layer and
trained pointwise with binary cross-entropy on every observed (user, item) pair plus
``negatives`` uniformly sampled unobserved items per pair, drawn afresh each epoch. No
pre-training of the two branches (the paper's optional step; RecBole's default too).

Streaming epochs. An epoch has pairs x (1 + negatives) training examples. With at most
``chunk_pairs`` observed pairs they are built at once and shuffled together (one permutation of
all examples). With more, the epoch streams: one permutation of the observed pairs, cut into
consecutive chunks of ``chunk_pairs``; each chunk is expanded with its negatives (drawn by the
same :class:`~personalize.models.neural.training.NegativeSampler`) and shuffled within itself;
batches run across chunk boundaries, so every step but the epoch's last has ``batch_size``
examples. Memory: O(pairs) integer indices plus O(chunk_pairs x (1 + negatives)) for the chunk
in flight, instead of O(pairs x (1 + negatives)) arrays copied every epoch.

It is the same estimator: every epoch still visits each observed pair exactly once with
``negatives`` fresh negatives of its user, the loss is the same mean BCE per batch, and since
the pair order is a uniform permutation and each chunk is shuffled uniformly, an example's
position in the epoch is uniform as before; only the joint order differs (a positive and its
own negatives fall in the same chunk, i.e. within ``chunk_pairs x (1 + negatives)`` examples
of one another, rather than anywhere in the epoch), which leaves the expected gradient of
every step unchanged.

``sparse_embeddings``: the four embedding tables get sparse gradients and lazy Adam
(:class:`~personalize.models.neural.training.SparseDenseAdam`); off by default (dense Adam, whose
step over every table row dominates the time of a step with 100k users).

``device`` (cpu, cuda or auto; :mod:`personalize.models.neural.training`): the network trains there,
the examples are drawn in NumPy on the CPU as above and each batch is moved to the device; the
scorer gets the weights on the CPU. CUDA results match the CPU's within floating-point tolerance.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from personalize import scoring
from personalize.data.matrix import InteractionData
from personalize.models.base import ErasureNeeds
from personalize.models.neural.training import (
    NegativeSampler,
    SparseEmbeddingsConfig,
    TorchRecommender,
    adam,
    dropout,
    state_from_numpy,
    state_to_numpy,
)


class NeuMFConfig(SparseEmbeddingsConfig):
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
    chunk_pairs: int = Field(
        default=1_000_000,
        ge=1,
        description="Observed pairs expanded with their negatives at a time; with more pairs "
        "the epoch streams in chunks of this many (memory bounded by the chunk).",
    )

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
                h = dropout(h, self.dropout, training=True)
        return self.out(torch.cat([gmf, h], dim=-1)).squeeze(-1)


class NeuMF(TorchRecommender):
    """GMF + MLP with a fused output layer; pointwise BCE with sampled negatives.

    score(u, i) = w . [p_u * q_i ; MLP([p'_u ; q'_i])] + b (a logit; the sigmoid is left out as it
    does not change rankings). Training loss: mean binary cross-entropy over the epoch's
    positives and negatives. Cold users: popularity. Scorer kind ``neumf`` (the network's
    weights and sizes).
    """

    name = "neumf"
    erasure = ErasureNeeds(item_side_from_all_users=True, per_user_state="user embeddings")
    no_fold_in = "per-user embeddings learned by NeuMF: held-out users have none"
    Config = NeuMFConfig

    def _make_net(self, n_users: int, n_items: int) -> NeuMFNet:
        c = self.config
        return NeuMFNet(n_users, n_items, c.factors, c.mlp_embedding, list(c.mlp_layers), c.dropout)

    def _build(self, data: InteractionData) -> None:
        c = self.config
        self.net_ = self._make_net(data.n_users, data.n_items)
        self.net_.init_weights(c.init_std)
        if c.sparse_embeddings:
            for table in (self.net_.user_gmf, self.net_.item_gmf, self.net_.user_mlp, self.net_.item_mlp):
                table.sparse = True
        self._on_device(self.net_)
        self.optimizer_ = adam(self.net_, c.learning_rate, c.weight_decay)
        # every epoch: each observed pair followed by `negatives` pairs of the same user whose
        # items are drawn afresh; only the negative items and the order change between epochs
        coo = data.matrix.tocoo()
        self._pos_users = coo.row.astype(np.int64)
        self._pos_items = coo.col.astype(np.int64)
        self._sampler = NegativeSampler(data.matrix)
        self._whole_epoch = len(self._pos_users) <= c.chunk_pairs
        if self._whole_epoch:  # built once, shuffled together every epoch
            self._users, self._items, self._labels, self._neg = self._expand(self._pos_users, self._pos_items)
            self._neg_users = self._users[self._neg]

    def _expand(
        self, users: np.ndarray, items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each pair repeated 1 + negatives times (the positive first): users, items (the
        negatives' items still to be drawn), labels (1 positive, 0 negative), negative mask."""
        k = self.config.negatives
        users = np.repeat(users, 1 + k)
        items = np.repeat(items, 1 + k)
        labels = np.zeros(len(users), dtype=np.float32)
        labels[:: 1 + k] = 1.0
        return users, items, labels, labels == 0

    def epoch_examples(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The epoch's training examples as shuffled chunks of (users, items, labels): one chunk
        when pairs <= ``chunk_pairs``, else one per ``chunk_pairs`` observed pairs (module doc)."""
        if self._whole_epoch:
            items = self._items.copy()
            items[self._neg] = self._sampler.sample(self._neg_users, rng)
            order = rng.permutation(len(items))
            yield self._users[order], items[order], self._labels[order]
            return
        pairs = rng.permutation(len(self._pos_users))
        for start in range(0, len(pairs), self.config.chunk_pairs):
            chunk = pairs[start : start + self.config.chunk_pairs]
            users, items, labels, neg = self._expand(self._pos_users[chunk], self._pos_items[chunk])
            items[neg] = self._sampler.sample(users[neg], rng)
            order = rng.permutation(len(items))
            yield users[order], items[order], labels[order]

    def _batches(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, ...]]:
        """Consecutive batches of ``batch_size`` examples over the epoch's chunks (a batch may
        span two chunks; only the epoch's last batch is smaller)."""
        size = self.config.batch_size
        pending: list[tuple[np.ndarray, ...]] = []  # the start of a batch carried to the next chunk
        n_pending = 0
        for arrays in self.epoch_examples(rng):
            n, start = len(arrays[0]), 0
            if n_pending:
                start = min(size - n_pending, n)
                pending.append(tuple(a[:start].copy() for a in arrays))
                n_pending += start
                if n_pending < size:
                    continue
                yield tuple(np.concatenate(parts) for parts in zip(*pending))
                pending, n_pending = [], 0
            full = start + (n - start) // size * size
            for s in range(start, full, size):
                yield tuple(a[s : s + size] for a in arrays)
            if full < n:
                pending, n_pending = [tuple(a[full:].copy() for a in arrays)], n - full
        if n_pending:
            yield tuple(np.concatenate(parts) for parts in zip(*pending))

    def _train_epoch(self, data: InteractionData, epoch: int, rng: np.random.Generator) -> float:
        total, batches = 0.0, 0
        for users, items, labels in self._batches(rng):
            logits = self.net_(self._tensor(users), self._tensor(items))
            loss = F.binary_cross_entropy_with_logits(logits, self._tensor(labels))
            self.optimizer_.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer_.step()
            total += float(loss.detach())
            batches += 1
        return total / max(1, batches)

    def _scorer(self) -> scoring.NeuMF:
        c = self.config
        return scoring.NeuMF(
            weights={k: v.cpu() for k, v in self.net_.state_dict().items()},  # CPU: no copy
            factors=c.factors,
            mlp_embedding=c.mlp_embedding,
            mlp_layers=list(c.mlp_layers),
        )

    def _finish(self, data: InteractionData) -> None:
        for attr in (
            "_users",
            "_items",
            "_labels",
            "_neg",
            "_neg_users",
            "_pos_users",
            "_pos_items",
            "_whole_epoch",
            "_sampler",
            "optimizer_",
        ):
            self.__dict__.pop(attr, None)

    def _state(self):
        return {f"net.{k}": v for k, v in state_to_numpy(self.net_).items()}

    def _set_state(self, state) -> None:
        weights = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
        n_users, n_items = weights["user_gmf.weight"].shape[0], weights["item_gmf.weight"].shape[0]
        self.net_ = self._make_net(n_users, n_items)
        self.net_.load_state_dict(state_from_numpy(weights))
        self.net_.eval()
