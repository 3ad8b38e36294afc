"""Two-tower retrieval model with side features; answers cold users and never-seen items.

(One module: its config, feature encoding, training loop and scorer share the encoded feature
tables; the towers and the feature encoders are modules of their own, :mod:`.towers` and
:mod:`.two_tower_features`.)

User tower: user ID, age bucket, gender, occupation, zip-code prefix, and the user's history
length (a context feature: see :mod:`.two_tower_features`). Item tower: item ID,
genres (a bag), release-year bucket, and a dense vector of the item's text, projected to
``text_dim``: its sentence embedding (``text_source="sentence"``,
:func:`personalize.features.text.dense_item_embeddings`, 384-d) or, much faster to build for a
large catalogue, its TF-IDF reduced by a truncated SVD seeded by the model's seed
(``"tfidf"``, :func:`personalize.features.items.tfidf_text_vectors`, ``tfidf_dim`` wide).
Sparse features are pooled by TorchRec's ``EmbeddingBagCollection`` from ``KeyedJaggedTensor``
inputs, or by the plain-PyTorch twin with the same ``state_dict`` (:mod:`.towers`).

Training: every training interaction once per epoch, in shuffled batches of
``batch_size`` (with ``recency_half_life_days``, as many examples drawn with replacement with
probability proportional to 0.5 ** (age in days before the training cut-off / half-life), so
that recent behaviour -- what new users do now -- weighs more; the logQ counts use the same
weights); loss either

- ``softmax`` (default): sampled softmax over the batch's positives (in-batch negatives) plus
  ``negatives`` items drawn uniformly per batch (mixed negative sampling) from the whole
  catalogue (``negatives_from="catalogue"``), or from the items with training interactions
  only (``"interacted"``: never-interacted items are then unknown rather than negative and
  reach top lists more readily, worth it where many new items arrive; on user_temporal it
  lowered validation NDCG@10 by about 0.01),
  logits ``<u, v> / temperature`` corrected by ``-log q`` (logQ: q = expected occurrences of the
  candidate in the candidate set: ``batch * count / pairs`` in-batch, ``negatives / items``
  uniform) so that popular items are not over-penalised; candidates equal to the row's
  positive (accidental hits) are masked;
- ``bpr``: -log sigmoid(s(u, i) - s(u, j)) with one unobserved item j per pair.

Optimiser: Adam; with ``sparse_embeddings`` the embedding tables (plain-PyTorch bags) get
sparse gradients and lazy Adam, the MLPs Adam
(:class:`~personalize.models.neural.training.SparseDenseAdam`): a step then costs O(batch) rather
than O(rows of every table), the fix at scale (at 100k users a dense Adam step over the ID tables
took about two thirds of a step of 512 pairs). Per-step work otherwise: feature gathering is
O(batch) NumPy indexing, the softmax O(batch x (batch + negatives)).

ID dropout: each ID in a batch is replaced by the "unknown" row 0 with probability
``id_dropout``, so the features-only path is trained. Users and items without training
interactions always use row 0: a cold user (known attributes, no history) is scored from
its attributes, and an item nobody interacted with from its genres, year and text.

score(u, i) = <user(u), item(i)> / temperature + b(i), where the item bias b(i) is a further
output of the item tower (``item_bias``), so that cold items get a popularity prior from their
features. Export: kind ``factors`` with the user tower's output of every indexed user (divided
by the temperature, plus a column of ones) and the item tower's output of every catalogue item
(plus its bias): the ``factors`` scorer, so serving needs no torch. While training, the user
vectors of every indexed user are computed once per set of weights (in chunks of 4096 users).

``device`` (cpu, cuda or auto; :mod:`personalize.models.neural.training`): the towers train on it
(features gathered in NumPy on the CPU, each batch moved there; the weights are initialised on
the CPU from the seed, and the model draws no torch random numbers, so CUDA results match the
CPU's within floating-point tolerance); the sentence embeddings of the item text are computed on
it too (their cache does not depend on the device). The TorchRec backend stays on the CPU: on
CUDA, ``backend: auto`` uses the plain-PyTorch bags (same weights) and ``torchrec`` is refused.
The exported factors are NumPy.

``processes`` (default 1): with N > 1 the towers train in N processes under TorchRec's
``DistributedModelParallel`` (:mod:`.distributed`, launched with torchrun): every process draws
each global batch as the single-process loop does (:meth:`TwoTower._batches`) and computes its
contiguous slice of the rows, the embedding tables are sharded across the processes
(``sharding``), and the trained weights equal the single-process fit's up to float32 summation
order. The epoch loop (validation monitor, best epoch, early stopping, progress bar) stays in the
fitting process, which loads the workers' weights after every epoch. ``device: cuda`` uses NCCL
and one GPU per process.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from personalize import scoring
from personalize.core import columns as C
from personalize.core.errors import ConfigError
from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, ErasureNeeds
from personalize.models.hybrid.distributed import DistBackend, DistributedFit, Sharding
from personalize.models.hybrid.towers import Backend, TableSpec, Tower, TwoTowerNet, resolve_backend
from personalize.models.hybrid.two_tower_features import (
    EntityFeatures,
    FeatureTable,
    encode_column,
    history_buckets,
    history_feature,
    id_feature,
)
from personalize.models.neural.training import (
    NegativeSampler,
    SparseEmbeddingsConfig,
    TorchRecommender,
    adam,
    state_from_numpy,
    state_to_numpy,
)


class TwoTowerConfig(SparseEmbeddingsConfig):
    user_features: list[str] = Field(
        default=["age", "gender", "occupation", "zip_code"],
        description="User table columns fed to the user tower (besides the user ID).",
    )
    item_features: list[str] = Field(
        default=["genres", "year"],
        description="Item table columns fed to the item tower (besides the item ID).",
    )
    text: bool = Field(default=True, description="Feed a dense vector of the item's text to the item tower.")
    text_source: Literal["sentence", "tfidf"] = Field(
        default="sentence",
        description="The item text vector: 'sentence' (all-MiniLM-L6-v2, 384-d, minutes for a large "
        "catalogue unless cached) or 'tfidf' (TF-IDF reduced by a seeded truncated SVD to tfidf_dim; "
        "seconds).",
    )
    tfidf_dim: int = Field(default=64, ge=1, description="Width of the 'tfidf' text vectors.")
    history: bool = Field(
        default=True,
        description="Feed the user's history length (bucketed) to the user tower: in training the "
        "example's position in its user's history, when scoring the user's interaction count.",
    )
    history_edges: list[int] = Field(
        default=[1, 2, 3, 5, 10, 20, 50, 100, 200], description="Bucket edges of the history length."
    )
    bucket_edges: dict[str, list[float]] = Field(
        default={"age": [18, 25, 35, 45, 50, 56]},
        description="Fixed bucket edges of numeric columns (others: equal-frequency buckets).",
    )
    numeric_buckets: int = Field(default=8, ge=1, description="Equal-frequency buckets of numeric columns.")
    prefix: dict[str, int] = Field(
        default={"zip_code": 2}, description="Keep only the first N characters of these string columns."
    )
    id_dim: int = Field(default=32, ge=1, description="Width of the user / item ID embeddings.")
    feature_dim: int = Field(default=16, ge=1, description="Width of each side-feature embedding.")
    text_dim: int = Field(default=32, ge=1, description="Width of the projected text embedding.")
    hidden: list[int] = Field(default=[64], description="Hidden layer sizes of each tower's MLP.")
    out_dim: int = Field(default=32, ge=1, description="Width of the tower outputs (the dot product).")
    normalize: bool = Field(default=True, description="L2-normalise tower outputs (cosine / temperature).")
    temperature: float = Field(default=0.1, gt=0, description="Softmax temperature: score = <u, v> / T.")
    item_bias: bool = Field(
        default=True, description="The item tower also outputs a scalar bias b(i), added to the score."
    )
    recency_half_life_days: float | None = Field(
        default=None,
        gt=0,
        description="Weight training examples by 0.5 ** (age in days / half-life) (examples drawn "
        "with replacement in proportion); null: every interaction once per epoch.",
    )
    id_dropout: float = Field(
        default=0.2, ge=0, le=1, description="Probability an ID is replaced by the unknown row in training."
    )
    loss: Literal["softmax", "bpr"] = Field(default="softmax", description="Sampled softmax or BPR.")
    negatives: int = Field(
        default=256, ge=0, description="softmax: uniform catalogue negatives per batch (besides in-batch)."
    )
    negatives_from: Literal["catalogue", "interacted"] = Field(
        default="catalogue",
        description="softmax: draw uniform negatives from the whole catalogue, or from items with "
        "training interactions only (never-interacted items are then unknown, not negative).",
    )
    logq: bool = Field(default=True, description="softmax: subtract log sampling probability (logQ).")
    init_std: float = Field(default=0.05, gt=0, description="Std of the normal embedding initialisation.")
    weight_decay: float = Field(default=0.0, ge=0, description="Adam weight decay (L2).")
    backend: Backend = Field(
        default="auto", description="Embedding bags: torchrec, torch (plain nn.EmbeddingBag) or auto."
    )
    epochs: int = Field(default=40, ge=1, description="Maximum epochs; the best is kept under validation.")
    batch_size: int = Field(default=512, ge=2, description="Observed pairs per step.")
    learning_rate: float = Field(default=0.005, gt=0, description="Adam step size.")
    processes: int = Field(
        default=1,
        ge=1,
        description="Train in this many processes under TorchRec's DistributedModelParallel (torchrun; "
        "each takes a slice of every global batch; same results as 1 within float tolerance).",
    )
    sharding: Sharding = Field(
        default="data_parallel",
        description="processes > 1: how the embedding tables are placed across the processes: "
        "data_parallel (a full copy in each; the fastest measured on 2 CPU cores), or sharded: "
        "table_wise, column_wise, row_wise, table_row_wise (for tables too large for one process).",
    )
    dist_backend: DistBackend = Field(
        default="auto", description="processes > 1: collective backend (auto: gloo on cpu, nccl on cuda)."
    )

    @model_validator(mode="after")
    def _sparse_bags(self) -> TwoTowerConfig:
        if self.sparse_embeddings and self.backend == "torchrec":
            raise ValueError("sparse_embeddings needs backend 'torch' or 'auto' (plain-PyTorch bags)")
        if self.device == "cuda" and self.backend == "torchrec":
            raise ValueError("backend 'torchrec' runs on the CPU only: use backend 'torch' or 'auto' on cuda")
        if self.processes > 1:
            if self.sparse_embeddings:
                raise ValueError(
                    "processes > 1 trains TorchRec's sharded tables with dense gradients: "
                    "sparse_embeddings (plain-PyTorch bags with lazy Adam) must be false"
                )
            if self.backend == "torch":
                raise ValueError(
                    "processes > 1 shards TorchRec's collections: use backend 'auto' or 'torchrec'"
                )
            if self.dist_backend == "nccl" and self.device == "cpu":
                raise ValueError("dist_backend 'nccl' needs device 'cuda' (or 'auto' on a GPU machine)")
        return self


@dataclass
class TrainingBatch:
    """One global training batch and all its random draws (see :meth:`TwoTower._batches`).

    ``users``, ``items``: the ``b`` observed pairs; ``context``: per-pair ids of context tables;
    ``user_drop``: ID-dropout mask of the pairs' users; ``candidates``: the items the item tower
    encodes (softmax: the ``b`` positives then the uniform negatives; BPR: the ``b`` positives then
    one negative per pair); ``candidate_drop``: their ID-dropout mask; ``log_q``: softmax with logQ,
    the float32 log expected occurrence of each candidate (else None)."""

    users: np.ndarray
    items: np.ndarray
    context: dict[str, np.ndarray]
    user_drop: np.ndarray
    candidates: np.ndarray
    candidate_drop: np.ndarray
    log_q: np.ndarray | None


def init_weights(net: torch.nn.Module, seed: int, std: float) -> None:
    """Initialise every parameter in name order from a generator seeded with ``seed``, so
    that both embedding-bag backends start from identical weights: embedding tables
    N(0, std); Linear weights Kaiming-uniform and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (PyTorch's default for Linear)."""
    g = torch.Generator().manual_seed(int(seed))
    modules = dict(net.named_modules())
    with torch.no_grad():
        for name, param in sorted(net.named_parameters()):
            owner = modules[name.rsplit(".", 1)[0]]
            if isinstance(owner, torch.nn.EmbeddingBag):
                param.normal_(0.0, std, generator=g)
            elif name.endswith("weight"):
                torch.nn.init.kaiming_uniform_(param, a=math.sqrt(5), generator=g)
            else:
                bound = 1.0 / math.sqrt(owner.weight.shape[1])
                param.uniform_(-bound, bound, generator=g)


class TwoTower(TorchRecommender):
    """Two towers over IDs and side features, sampled-softmax (or BPR) training with ID dropout.
    Cold users and never-interacted items are scored from their features (see module doc)."""

    name = "two_tower"
    erasure = ErasureNeeds(item_side_from_all_users=True, per_user_state="user ID embeddings, user vectors")
    no_fold_in = "user tower outputs fixed at fit time: held-out users have none"
    family = "hybrid"
    Config = TwoTowerConfig
    handles_cold_users = True
    _distributed: Any = None  # the running distributed fit (processes > 1), while fitting

    # ------------------------------------------------------------------ features and network

    def _encode(self, data: InteractionData) -> tuple[EntityFeatures, EntityFeatures]:
        c = self.config

        def column(frame, name, table):
            return encode_column(
                frame,
                name,
                table=table,
                bucket_edges=c.bucket_edges.get(name),
                prefix=c.prefix.get(name),
                numeric_buckets=c.numeric_buckets,
            )

        user_tables = [id_feature("user_id", data.user_counts > 0)]
        user_tables += [column(data.users, f, "user") for f in c.user_features]
        if c.history:
            user_tables.append(history_feature(data.user_counts, c.history_edges))
        users = EntityFeatures(user_tables)
        dense = None
        if c.text and c.text_source == "tfidf":
            from personalize.features.items import tfidf_text_vectors

            dense = tfidf_text_vectors(data.items, c.tfidf_dim, self.seed)
        elif c.text:
            from personalize.features.text import dense_item_embeddings

            dense = np.ascontiguousarray(
                dense_item_embeddings(data.items, device=self.device_.type), dtype=np.float32
            )
        items = EntityFeatures(
            [id_feature("item_id", data.item_counts > 0)]
            + [column(data.items, f, "item") for f in c.item_features],
            dense,
        )
        return users, items

    def _make_net(self, users: EntityFeatures, items: EntityFeatures, backend: Backend) -> TwoTowerNet:
        c = self.config

        def specs(features: EntityFeatures) -> list[TableSpec]:
            return [
                TableSpec(t.name, t.cardinality, c.id_dim if j == 0 else c.feature_dim)
                for j, t in enumerate(features.tables)
            ]

        dense_dim = 0 if items.dense is None else items.dense.shape[1]
        sparse = c.sparse_embeddings
        user = Tower(
            specs(users), list(c.hidden), c.out_dim, normalize=c.normalize, backend=backend, sparse=sparse
        )
        item = Tower(
            specs(items),
            list(c.hidden),
            c.out_dim,
            dense_dim=dense_dim,
            dense_proj=c.text_dim,
            normalize=c.normalize,
            backend=backend,
            bias=c.item_bias,
            sparse=sparse,
        )
        return TwoTowerNet(user, item, c.temperature)

    def _fit_backend(self) -> Backend:
        """The embedding-bag backend to fit with: the config's on the CPU; on CUDA the
        plain-PyTorch bags (``auto``), as the TorchRec collection is kept on the CPU."""
        backend = self.config.backend
        if self.device_.type == "cpu":
            return backend
        if backend == "torchrec":
            raise ConfigError(
                f"{self.name}: backend 'torchrec' runs on the CPU only, but device "
                f"{self.config.device!r} resolved to {self.device_.type}; use backend 'torch' or 'auto' "
                "(same weights and results) or device 'cpu'"
            )
        return "torch"

    @property
    def backend_(self) -> str:
        """The embedding-bag backend in use ('torchrec' or 'torch')."""
        return self.net_.user.backend

    # ------------------------------------------------------------------------------ training

    def _build(self, data: InteractionData) -> None:
        c = self.config
        self.user_features_, self.item_features_ = self._encode(data)
        self.net_ = self._make_net(self.user_features_, self.item_features_, self._fit_backend())
        init_weights(self.net_, self.seed, c.init_std)
        self._on_device(self.net_)
        self.optimizer_ = adam(self.net_, c.learning_rate, c.weight_decay)
        frame = data.frame  # every interaction, in the protocol's total order
        users = frame[C.USER_IDX].to_numpy(dtype=np.int64)
        self._pairs = (users, frame[C.ITEM_IDX].to_numpy(dtype=np.int64))
        position = frame.groupby(C.USER_IDX, sort=False).cumcount().to_numpy()
        self._context = {"history": history_buckets(position, c.history_edges)} if c.history else {}
        self._weights = None
        if c.recency_half_life_days is not None:
            w = 0.5 ** (data.days_before_cutoff() / c.recency_half_life_days)
            self._weights = w / w.sum()
        counts = np.bincount(
            self._pairs[1],
            weights=None if self._weights is None else self._weights * len(users),
            minlength=data.n_items,
        ).astype(np.float64)
        self._log_pop = np.log(np.maximum(counts, 1.0) / max(1, len(users)))
        self._pool = (
            np.flatnonzero(counts > 0) if c.negatives_from == "interacted" else np.arange(data.n_items)
        )
        self._sampler = NegativeSampler(data.matrix) if c.loss == "bpr" else None
        if c.processes > 1:
            self._distributed = DistributedFit.start(self)

    def _fit_on_device(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        try:
            super()._fit_on_device(data, monitor)
        finally:
            run = self.__dict__.pop("_distributed", None)
            if run is not None:
                run.close()

    def _tower(
        self, tower: Tower, features: EntityFeatures, entities: np.ndarray, drop=None, override=None
    ) -> torch.Tensor:
        values, lengths, dense = features.gather(entities, drop, override)
        return tower(
            self._tensor(values),
            self._tensor(lengths),
            None if dense is None else self._tensor(dense),
        )

    def _batches(self, rng: np.random.Generator) -> Iterator[TrainingBatch]:
        """The epoch's global batches with every random draw of the epoch, in draw order: the
        example order, then per batch the user ID-dropout mask, the negatives (BPR: one per pair;
        softmax: ``negatives`` uniform ones) and the candidates' ID-dropout mask. The single-process
        loop and every rank of a distributed fit draw exactly these."""
        c = self.config
        users_all, items_all = self._pairs
        if self._weights is None:
            order = rng.permutation(len(users_all))
        else:
            order = rng.choice(len(users_all), size=len(users_all), p=self._weights)
        for start in range(0, len(order), c.batch_size):
            idx = order[start : start + c.batch_size]
            u, i = users_all[idx], items_all[idx]
            b = len(idx)
            context = {k: v[idx] for k, v in self._context.items()}
            user_drop = rng.random(b) < c.id_dropout
            log_q = None
            if c.loss == "bpr":
                cand = np.concatenate([i, self._sampler.sample(u, rng)])
                cand_drop = rng.random(2 * b) < c.id_dropout
            else:
                neg = self._pool[rng.integers(0, len(self._pool), size=c.negatives)]
                cand = np.concatenate([i, neg])
                cand_drop = rng.random(len(cand)) < c.id_dropout
                if c.logq:
                    log_q = np.concatenate(
                        [
                            np.log(b) + self._log_pop[i],
                            np.full(len(neg), np.log(max(1, len(neg)) / len(self._pool))),
                        ]
                    ).astype(np.float32)
            yield TrainingBatch(u, i, context, user_drop, cand, cand_drop, log_q)

    def _batch_loss(self, batch: TrainingBatch) -> torch.Tensor:
        """The loss of one whole batch (see the module doc): the mean over its pairs."""
        u, i, b = batch.users, batch.items, len(batch.users)
        user_vec = self._tower(self.net_.user, self.user_features_, u, batch.user_drop, batch.context)
        item_vec = self._tower(self.net_.item, self.item_features_, batch.candidates, batch.candidate_drop)
        if self.config.loss == "bpr":
            pos = self.net_.pair_scores(user_vec, item_vec[:b])
            neg_s = self.net_.pair_scores(user_vec, item_vec[b:])
            return F.softplus(-(pos - neg_s)).mean()
        logits = self.net_.scores(user_vec, item_vec)
        if batch.log_q is not None:
            logits = logits - self._tensor(batch.log_q)[None, :]
        hit = self._tensor(batch.candidates[None, :] == i[:, None])
        diagonal = torch.arange(b, device=self.device_)
        hit[diagonal, diagonal] = False
        logits = logits.masked_fill(hit, float("-inf"))
        return F.cross_entropy(logits, diagonal)

    def _train_epoch(self, data: InteractionData, epoch: int, rng: np.random.Generator) -> float:
        if self._distributed is not None:  # the workers train; this copy takes their weights
            loss, state = self._distributed.epoch(epoch)
            self.net_.load_state_dict(state)
            return loss
        total, batches = 0.0, 0
        for batch in self._batches(rng):
            loss = self._batch_loss(batch)
            self.optimizer_.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer_.step()
            total += float(loss.detach())
            batches += 1
        return total / max(1, batches)

    # ------------------------------------------------------------------------------- scoring

    def _invalidate(self) -> None:
        self.__dict__.pop("user_vectors_", None)
        self.__dict__.pop("_scored_factors", None)
        self.__dict__.pop("item_vectors_", None)

    @torch.no_grad()
    def _vectors(
        self, tower: Tower, features: EntityFeatures, entities: np.ndarray, chunk: int = 4096
    ) -> np.ndarray:
        parts = [
            self._tower(tower, features, entities[s : s + chunk]).cpu().numpy()
            for s in range(0, len(entities), chunk)
        ]
        return (
            np.concatenate(parts).astype(np.float32)
            if parts
            else np.zeros((0, self.config.out_dim), np.float32)
        )

    def _item_matrix(self) -> np.ndarray:
        """The item tower's output for the whole catalogue (computed once per set of weights)."""
        if "item_vectors_" not in self.__dict__:
            self.net_.eval()
            self.item_vectors_ = self._vectors(self.net_.item, self.item_features_, np.arange(self.n_items))
        return self.item_vectors_

    def _user_matrix(self) -> np.ndarray:
        """The user tower's output for every indexed user (computed once per set of weights)."""
        if "user_vectors_" not in self.__dict__:
            self.net_.eval()
            self.user_vectors_ = self._vectors(
                self.net_.user, self.user_features_, np.arange(self.index_.n_users)
            )
        return self.user_vectors_

    def _factors(self, user_vectors: np.ndarray, item_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tower outputs as factors whose dot product is the score: users scaled by
        1 / temperature (and a column of ones), items (with their bias as the last column)."""
        users = user_vectors * np.float32(1.0 / self.config.temperature)
        if not self.config.item_bias:
            return users, item_vectors
        ones = np.ones((len(users), 1), dtype=np.float32)
        return np.hstack([users, ones]), item_vectors  # items: out_dim outputs and the bias

    def _scorer(self) -> scoring.Factors:
        if "_scored_factors" not in self.__dict__:
            self._scored_factors = self._factors(self._user_matrix(), self._item_matrix())
        users, items = self._scored_factors
        return scoring.Factors(users=users, items=items)

    def _finish(self, data: InteractionData) -> None:
        self._item_matrix()
        self._user_matrix()
        for attr in (
            "_pairs",
            "_context",
            "_weights",
            "_log_pop",
            "_pool",
            "_sampler",
            "optimizer_",
        ):
            self.__dict__.pop(attr, None)

    # ---------------------------------------------------------------------------- persistence

    def _state(self):
        state: dict = {f"net.{k}": v for k, v in state_to_numpy(self.net_).items()}
        for prefix, features in (("uf", self.user_features_), ("if", self.item_features_)):
            for t in features.tables:
                state[f"{prefix}__{t.name}"] = t.rows
        if self.item_features_.dense is not None:
            state["item_text"] = self.item_features_.dense
        state["user_vectors"] = self.user_vectors_
        state["item_vectors"] = self.item_vectors_
        return state

    def _set_state(self, state) -> None:
        c = self.config

        def side(prefix: str, names: list[str], dense=None) -> EntityFeatures:
            tables = [FeatureTable(n, sp.csr_matrix(state[f"{prefix}__{n}"]), []) for n in names]
            return EntityFeatures(tables, dense)

        self.user_features_ = side("uf", ["user_id", *c.user_features, *(["history"] if c.history else [])])
        self.item_features_ = side("if", ["item_id", *c.item_features], state.get("item_text"))
        backend = "torch" if resolve_backend("auto") == "torch" else c.backend
        self.net_ = self._make_net(self.user_features_, self.item_features_, backend)
        weights = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
        self.net_.load_state_dict(state_from_numpy(weights))
        self.net_.eval()
        self.user_vectors_ = np.asarray(state["user_vectors"], dtype=np.float32)
        self.item_vectors_ = np.asarray(state["item_vectors"], dtype=np.float32)
