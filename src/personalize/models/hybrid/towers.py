"""The towers of the two-tower model, on TorchRec or on plain PyTorch with the same weights.

Sparse features (bags of ids per feature) are pooled by an embedding-bag collection:

- ``backend="torchrec"``: TorchRec's ``EmbeddingBagCollection`` fed a ``KeyedJaggedTensor``;
- ``backend="torch"``: :class:`TorchEmbeddingBagCollection`, one ``torch.nn.EmbeddingBag``
  per table in a ``ModuleDict`` named ``embedding_bags`` -- the layout of TorchRec's unsharded
  collection, so both accept the same ``state_dict`` (keys ``embedding_bags.<table>.weight``)
  and give the same pooled vectors. Saving, loading and serving therefore never need TorchRec;
  ``"auto"`` uses TorchRec when it can be imported. With ``sparse=True`` (the plain-PyTorch
  collection only) the embedding bags produce sparse gradients, for lazy Adam over large ID
  tables.

Devices: the plain-PyTorch collection runs wherever its module is moved (CPU or CUDA: inputs on
the module's device). The TorchRec collection is built on the CPU and kept there (its unsharded
collection is used here for CPU training only): a model on CUDA uses the plain-PyTorch twin, whose
``state_dict`` is the same.

A tower: pooled embeddings of every feature, concatenated with a linear projection of the
dense input (the item text embedding) when there is one, then an MLP (Linear + ReLU per hidden
layer, a final Linear to ``out_dim``), optionally L2-normalised; with ``bias`` the final layer
has one more output, a scalar kept out of the normalisation (the item bias).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Backend = Literal["auto", "torchrec", "torch"]


@dataclass(frozen=True)
class TableSpec:
    """One embedding table: ``name`` (also the feature key), rows, width, pooling."""

    name: str
    num_embeddings: int
    embedding_dim: int
    pooling: Literal["mean", "sum"] = "mean"


@functools.cache
def torchrec_available() -> bool:
    """Whether TorchRec imports. TorchRec's jagged tensors call ``torch.fx``'s
    ``is_fx_tracing``, which logs a once-per-process deprecation notice meant for torch.fx
    users; it is emitted here, silenced, so that it does not reach our users."""
    fx_log = logging.getLogger("torch.fx._symbolic_trace")
    level = fx_log.level
    fx_log.setLevel(logging.ERROR)
    try:
        import torchrec  # noqa: F401

        with contextlib.suppress(Exception):
            from torch.fx._symbolic_trace import is_fx_tracing_warning

            is_fx_tracing_warning()  # lru-cached: later calls print nothing
    except Exception:  # ImportError, or a broken native extension
        return False
    finally:
        fx_log.setLevel(level)
    return True


def resolve_backend(backend: Backend) -> str:
    """The backend actually used: 'torchrec' or 'torch'."""
    if backend == "torch":
        return "torch"
    if torchrec_available():
        return "torchrec"
    if backend == "torchrec":
        raise ImportError("backend 'torchrec' was requested but torchrec cannot be imported")
    return "torch"


class TorchEmbeddingBagCollection(nn.Module):
    """Plain-PyTorch twin of TorchRec's unsharded ``EmbeddingBagCollection``.

    ``forward(keys, values, lengths)`` takes the KeyedJaggedTensor layout (feature-major
    ``lengths`` of shape features x batch, ``values`` concatenated in the same order) and
    returns the pooled embeddings (batch, sum of widths) in table order.
    """

    def __init__(self, tables: list[TableSpec], sparse: bool = False):
        super().__init__()
        self.tables = list(tables)
        self.embedding_bags = nn.ModuleDict(
            {
                t.name: nn.EmbeddingBag(
                    t.num_embeddings,
                    t.embedding_dim,
                    mode=t.pooling,
                    include_last_offset=True,
                    sparse=sparse,
                )
                for t in self.tables
            }
        )

    def forward(self, keys: list[str], values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        n_keys = len(keys)
        lengths = lengths.reshape(n_keys, -1)
        position = {k: j for j, k in enumerate(keys)}
        # slice bounds as Python ints (one transfer on a GPU rather than one per table)
        starts = [0, *torch.cumsum(lengths.sum(dim=1), 0).tolist()]
        zero = torch.zeros(1, dtype=torch.long, device=lengths.device)
        pooled = []
        for t in self.tables:
            j = position[t.name]
            vals = values[starts[j] : starts[j + 1]]
            offsets = torch.cat([zero, torch.cumsum(lengths[j], 0)])
            pooled.append(self.embedding_bags[t.name](vals, offsets))
        return torch.cat(pooled, dim=1)


def torchrec_collection(tables: list[TableSpec]) -> nn.Module:
    """TorchRec's unsharded ``EmbeddingBagCollection`` for ``tables`` (one feature per table)."""
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType

    pooling = {"mean": PoolingType.MEAN, "sum": PoolingType.SUM}
    return EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(
                name=t.name,
                embedding_dim=t.embedding_dim,
                num_embeddings=t.num_embeddings,
                feature_names=[t.name],
                pooling=pooling[t.pooling],
            )
            for t in tables
        ],
        device=torch.device("cpu"),
    )


class Tower(nn.Module):
    """Pooled sparse features (+ projected dense input) -> MLP -> vector of ``out_dim``."""

    def __init__(
        self,
        tables: list[TableSpec],
        hidden: list[int],
        out_dim: int,
        dense_dim: int = 0,
        dense_proj: int = 0,
        normalize: bool = False,
        backend: Backend = "auto",
        bias: bool = False,
        sparse: bool = False,
    ):
        super().__init__()
        self.keys = [t.name for t in tables]
        if sparse and backend == "torchrec":
            raise ValueError("sparse embedding gradients need the plain-PyTorch backend, not torchrec")
        self.backend = "torch" if sparse else resolve_backend(backend)
        if self.backend == "torchrec":
            self.bags = torchrec_collection(tables)
        else:
            self.bags = TorchEmbeddingBagCollection(tables, sparse=sparse)
        self.dense = nn.Linear(dense_dim, dense_proj) if dense_dim and dense_proj else None
        width = sum(t.embedding_dim for t in tables) + (dense_proj if self.dense is not None else 0)
        sizes = [width, *hidden, out_dim + int(bias)]
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.normalize = normalize
        self.out_dim = out_dim
        self.bias = bias

    def pooled(self, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings (batch, sum of widths) of jagged ids in KeyedJaggedTensor layout."""
        if self.backend == "torchrec":
            from torchrec import KeyedJaggedTensor

            kjt = KeyedJaggedTensor(keys=self.keys, values=values, lengths=lengths)
            return self.bags(kjt).values()
        return self.bags(self.keys, values, lengths)

    def forward(
        self, values: torch.Tensor, lengths: torch.Tensor, dense: torch.Tensor | None
    ) -> torch.Tensor:
        parts = [self.pooled(values, lengths)]
        if self.dense is not None:
            parts.append(self.dense(dense))
        h = torch.cat(parts, dim=1)
        for j, layer in enumerate(self.mlp):
            h = layer(h)
            if j < len(self.mlp) - 1:
                h = F.relu(h)
        if self.bias:  # the last output is a scalar bias, kept out of the normalisation
            vec, b = h[:, : self.out_dim], h[:, self.out_dim :]
            return torch.cat([F.normalize(vec, dim=1) if self.normalize else vec, b], dim=1)
        return F.normalize(h, dim=1) if self.normalize else h


class TwoTowerNet(nn.Module):
    """A user tower and an item tower: score(u, i) = <user(u), item(i)> / temperature, plus the
    item tower's bias output b(i) when it has one."""

    def __init__(self, user: Tower, item: Tower, temperature: float = 1.0):
        super().__init__()
        self.user = user
        self.item = item
        self.temperature = temperature

    def scores(self, user_vec: torch.Tensor, item_vec: torch.Tensor) -> torch.Tensor:
        """(users x items) scores from tower outputs."""
        d = self.item.out_dim
        out = (user_vec * (1.0 / self.temperature)) @ item_vec[:, :d].T
        if self.item.bias:
            out = out + item_vec[:, d][None, :]
        return out

    def pair_scores(self, user_vec: torch.Tensor, item_vec: torch.Tensor) -> torch.Tensor:
        """Scores of aligned (user, item) rows."""
        d = self.item.out_dim
        out = (user_vec * item_vec[:, :d]).sum(dim=1) * (1.0 / self.temperature)
        return out + item_vec[:, d] if self.item.bias else out
