"""Shared PyTorch training utilities: seeding, thread pinning, negative sampling, and the epoch
loop every neural model runs (per-epoch report to the :class:`EpochMonitor`, best epoch kept,
early stopping, progress bar).

Conventions (the same for every torch model here):

- Determinism on CPU: fitting runs inside :func:`seeded` (``torch.random.fork_rng`` plus
  ``torch.manual_seed(seed)``), so weight initialisation and dropout draw from a stream fixed by
  the model's seed and the caller's global RNG state is left untouched; batch order and negative
  samples come from ``numpy.random.default_rng([seed, epoch])``. With the same thread count the
  same seed gives the same weights.
- Threads: ``num_threads`` in the config (default 1) is applied for the duration of the fit and
  restored afterwards.
- The reported training loss of an epoch is the mean of the per-batch losses.
- Optimiser: Adam over every parameter (:func:`adam`). With ``sparse_embeddings`` (a model
  option for large ID tables) the embedding tables produce sparse gradients and are updated by
  lazy Adam (``torch.optim.SparseAdam``: a row's moments and weights change only in steps whose
  batch uses the row), the other parameters by Adam as before. A dense Adam step touches every
  row of every table (about 4 million parameters at 100k users), which dominates a step at
  scale; the lazy step touches only the rows in the batch. Not the same optimiser: results
  differ from the dense default.
- Device: ``device`` in the config (``cpu`` by default, ``cuda``, or ``auto`` = cuda when
  available; :func:`resolve_device`, resolved at fit time, so that asking for ``cuda`` without a
  GPU is a :class:`~personalize.core.errors.ConfigError` naming the model and what torch found).
  The network is built and initialised on the CPU (same weights as before), then moved to the
  device; every batch is assembled in NumPy on the CPU and moved there; random draws inside the
  network (dropout masks, the VAE's noise: :func:`dropout`, :func:`standard_normal`) come from
  the seeded CPU generator, so a seed draws the same numbers on either device. After the fit the
  network is moved back to the CPU (``device_`` is then cpu; ``fit_device_`` records where it
  trained): scorers and saved states are NumPy / CPU tensors and serving never needs a GPU.
  ``cpu`` gives exactly the results it gave before the option existed; on CUDA the results match
  the CPU's within floating-point tolerance (different kernels and summation order), not bit for
  bit, and DP-SGD's noise (Opacus) is drawn on the device by its seeded CUDA generator.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from personalize.config.device import DEVICE_HELP, Device, resolve_device_name
from personalize.config.model import ModelConfig
from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, Recommender


class TorchConfig(ModelConfig):
    """Settings shared by the torch models (each model adds its own)."""

    epochs: int = Field(default=30, ge=1, description="Maximum epochs; the best is kept under validation.")
    batch_size: int = Field(default=1024, ge=1, description="Training examples per step.")
    learning_rate: float = Field(default=0.002, gt=0, description="Adam step size.")
    num_threads: int = Field(
        default=1, ge=1, description="torch CPU threads while fitting (results depend on the count)."
    )
    progress: bool = Field(
        default=True, description="Show a tqdm bar over epochs (only on a terminal; never in logs)."
    )
    device: Device = Field(default="cpu", description=DEVICE_HELP)


class SparseEmbeddingsConfig(TorchConfig):
    """Torch models with large ID tables: the ``sparse_embeddings`` option (see :func:`adam`)."""

    sparse_embeddings: bool = Field(
        default=False,
        description="Sparse gradients for the embedding tables, updated by lazy Adam (only the "
        "rows in the batch; much faster with many users); needs weight_decay 0.",
    )

    @model_validator(mode="after")
    def _sparse_without_decay(self) -> SparseEmbeddingsConfig:
        if self.sparse_embeddings and getattr(self, "weight_decay", 0.0) > 0:
            raise ValueError("sparse_embeddings needs weight_decay 0 (lazy Adam has no weight decay)")
        return self


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(name: str, what: str = "model") -> torch.device:
    """The torch device of the option value ``name``: ``cpu``; ``cuda`` (the current CUDA device;
    a ConfigError naming ``what`` and what torch found when there is none); ``auto`` (cuda when
    ``torch.cuda.is_available()``, else cpu)."""
    if resolve_device_name(name, what) == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed torch's global generators inside a forked RNG state (restored on exit): the CPU's,
    and that of ``device`` when it is a CUDA device."""
    devices = [device.index] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout (zero with probability ``p``, survivors scaled by 1 / (1 - p)) whose mask
    is drawn from the CPU generator on any device: on the CPU exactly ``F.dropout``; elsewhere
    the same mask, drawn on the CPU and moved to ``x``'s device."""
    if not training or p == 0.0 or x.device.type == "cpu":
        return torch.nn.functional.dropout(x, p, training=training)
    if p == 1.0:
        return x * 0.0
    mask = torch.empty(x.shape, dtype=x.dtype).bernoulli_(1.0 - p).div_(1.0 - p)
    return x * mask.to(x.device)


def standard_normal(like: torch.Tensor) -> torch.Tensor:
    """N(0, 1) noise shaped like ``like`` on its device, drawn from the CPU generator (on the CPU
    exactly ``torch.randn_like``)."""
    if like.device.type == "cpu":
        return torch.randn_like(like)
    return torch.randn(like.shape, dtype=like.dtype).to(like.device)


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The NumPy generator of one epoch (batch order, negatives, ID dropout)."""
    return np.random.default_rng([int(seed), int(epoch)])


def state_to_numpy(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """A module's ``state_dict`` as NumPy arrays (copies)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def state_from_numpy(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


def sparse_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weights of the embedding tables of ``module`` that produce sparse gradients."""
    return [
        m.weight
        for m in module.modules()
        if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag)) and m.sparse
    ]


class SparseDenseAdam:
    """Lazy Adam (``SparseAdam``) for parameters with sparse gradients, Adam for the others;
    ``zero_grad`` and ``step`` act on both (same learning rate and betas; weight decay only on
    the dense parameters, as SparseAdam has none)."""

    def __init__(self, module: torch.nn.Module, lr: float, weight_decay: float = 0.0):
        sparse = sparse_parameters(module)
        ids = {id(p) for p in sparse}
        dense = [p for p in module.parameters() if id(p) not in ids]
        self.optimizers: list[torch.optim.Optimizer] = []
        if sparse:
            self.optimizers.append(torch.optim.SparseAdam(sparse, lr=lr))
        if dense:
            self.optimizers.append(torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay, foreach=True))

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()


def adam(
    module: torch.nn.Module, lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer | SparseDenseAdam:
    """Adam (foreach) over every parameter, or :class:`SparseDenseAdam` when some embedding
    table of ``module`` has sparse gradients."""
    if sparse_parameters(module):
        return SparseDenseAdam(module, lr, weight_decay)
    return torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)


class NegativeSampler:
    """Uniform negatives: items the user has not interacted with in the training data.

    Draws uniformly from the catalogue and redraws the (user, item) pairs that are positives
    (membership by binary search on sorted ``user * n_items + item`` keys); after ``rounds``
    redraws the few remaining collisions are kept (users who have seen almost everything).
    """

    def __init__(self, matrix: sp.csr_matrix, rounds: int = 10):
        coo = matrix.tocoo()
        self.n_items = matrix.shape[1]
        self.keys = np.sort(coo.row.astype(np.int64) * self.n_items + coo.col.astype(np.int64))
        self.rounds = rounds

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if len(self.keys) == 0:
            return np.zeros(len(users), dtype=bool)
        query = users.astype(np.int64) * self.n_items + items
        pos = np.minimum(np.searchsorted(self.keys, query), len(self.keys) - 1)
        return self.keys[pos] == query

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One negative item per entry of ``users``."""
        items = rng.integers(0, self.n_items, size=len(users))
        bad = np.flatnonzero(self.is_positive(users, items))
        for _ in range(self.rounds):
            if len(bad) == 0:
                break
            items[bad] = rng.integers(0, self.n_items, size=len(bad))
            # only the redrawn entries can still be positives: recheck those alone
            bad = bad[self.is_positive(users[bad], items[bad])]
        return items


class TorchRecommender(Recommender):
    """Base of the torch models: the epoch loop around ``_train_epoch``.

    Subclasses implement ``_build(data)`` (create ``self.net_``, move it to ``self.device_``
    with :meth:`_on_device` before making its optimiser, and state used in training),
    ``_train_epoch(data, epoch, rng) -> mean loss`` and ``_scorer``; the loop reports every
    epoch to the monitor, keeps the best epoch's ``state_dict``, stops when told and restores
    the best weights. ``selected_config()`` returns the config with ``epochs`` = best epoch.
    ``device_``: the device the network is on (the config's device while fitting, the CPU
    otherwise); ``fit_device_``: the device the last fit trained on ('cpu' or 'cuda').
    """

    stochastic = True
    iterative = True
    epoch_param = "epochs"
    family: ClassVar[str] = "neural"

    device_: torch.device = torch.device("cpu")

    def _build(self, data: InteractionData) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _on_device(self, net: torch.nn.Module) -> torch.nn.Module:
        """``net`` moved to ``self.device_`` (in place; nothing moves on the CPU)."""
        return net.to(self.device_)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """A NumPy array as a tensor on ``self.device_`` (on the CPU it shares the array's memory)."""
        return torch.from_numpy(array).to(self.device_)

    def _train_epoch(self, data: InteractionData, epoch: int, rng: np.random.Generator) -> float | None:
        raise NotImplementedError  # pragma: no cover - abstract

    def _invalidate(self) -> None:
        """Drop anything cached from the weights (called after every epoch)."""

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        cfg: Any = self.config
        self.epoch_seconds_: list[float] = []
        self.device_ = resolve_device(cfg.device, self.name)
        self.fit_device_ = self.device_.type
        try:
            self._fit_on_device(data, monitor)
        finally:
            if "net_" in self.__dict__:
                self.net_.to("cpu")
            self.device_ = torch.device("cpu")

    def _fit_on_device(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        cfg: Any = self.config
        with torch_threads(cfg.num_threads), seeded(self.seed, self.device_):
            self._build(data)
            best_state: dict[str, torch.Tensor] | None = None
            bar = tqdm(
                range(1, cfg.epochs + 1),
                desc=self.name,
                unit="epoch",
                disable=None if cfg.progress else True,  # None: tqdm shows it on a terminal only
                leave=False,
            )
            t0 = time.perf_counter()
            for epoch in bar:
                self.net_.train()
                loss = self._train_epoch(data, epoch, epoch_rng(self.seed, epoch))
                self.net_.eval()
                self._invalidate()
                self.epoch_seconds_.append(time.perf_counter() - t0)
                if loss is not None:  # None: not released (a private model's loss)
                    bar.set_postfix(loss=f"{loss:.4f}")
                report = self._epoch_done(monitor, epoch, loss)
                if report.improved:
                    best_state = {k: v.detach().clone() for k, v in self.net_.state_dict().items()}
                if report.stop:
                    break
            bar.close()
            if best_state is not None:
                self.net_.load_state_dict(best_state)
            self._training_done(best_state is not None)
            self.net_.eval()
            self._invalidate()
            self._finish(data)

    def _finish(self, data: InteractionData) -> None:
        """Hook after training (e.g. precompute serving arrays)."""
