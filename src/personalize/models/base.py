"""The one model contract.

Every model is a small class with a typed config (``Config``), ``fit(data) -> self``, a
scoring call over the catalogue, and save/load. Conventions, the same for every model:

- Learned state ends in ``_``; the config is never mutated by fitting.
- ``score(users)`` returns float32 scores (users x catalogue items) for user *indices*; higher
  is better; ``-inf`` marks an item the model cannot recommend. Seen items are *not* removed
  by ``score`` (the evaluator and ``recommend`` exclude them), so scores stay reusable.
- A user with no training interactions (a cold user) gets the popularity of the training data
  as scores, unless the model declares ``handles_cold_users`` (it uses side information).
- ``recommend(user_ids, k)`` works on raw IDs: seen items excluded, an unknown user (not in the
  index) gets the popularity fallback, and ``personalised`` says which users were answered by
  the model itself.
- Stochastic models take ``seed`` (a plain int) and are deterministic given it.
- Models that select settings on validation (``uses_validation``, e.g. a fusion weight) also
  receive the monitor and call ``monitor.evaluate(model)`` to score a candidate.
- Iterative models report to an :class:`EpochMonitor` after every epoch (training loss, then
  validation NDCG@10 via the evaluator), keep the state of their best epoch, and expose it as
  ``best_epoch_``; ``selected_config()`` returns the config to refit with (epochs = best epoch).
- ``export_spec()`` describes the fitted scoring as plain arrays (:class:`ScorerSpec`), so that
  an exported artifact can serve it without this package's training code.
- ``save(path)`` writes ``model.json`` (type, config, seed) and arrays as ``.npy`` plus ID maps
  as Parquet; ``Recommender.load(path)`` restores any model without refitting.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from personalize import columns as C
from personalize.data.config import StrictModel
from personalize.data.matrix import IdIndex, InteractionData
from personalize.evaluation.ranking import block_size, mask_seen, topk


class ModelConfig(StrictModel):
    """Base of every model's config (unknown keys are rejected)."""


@dataclass
class ScorerSpec:
    """How a fitted model scores, as plain data, for serving without the training code.

    ``kind`` is one of (score of user u for all items, before seen items are excluded):

    - ``static``: ``arrays["scores"]`` (items,) -- the same for every user;
    - ``item_item``: ``arrays["weights"]`` (items x items, dense or CSR) -- ``seen[u] @ weights``;
    - ``factors``: ``arrays["users"]`` (users x d), ``arrays["items"]`` (items x d) --
      ``users[u] @ items.T``;
    - ``neumf``: ``arrays`` = a PyTorch ``state_dict`` as NumPy arrays, ``params`` = architecture;
    - ``blend``: ``parts`` (specs) combined with ``params["weights"]`` by ``params["method"]``
      ('minmax': per-user min-max normalised weighted sum; 'rrf': weighted reciprocal-rank fusion
      with constant ``params["rrf_k"]``).

    The user index, item index, seen items and popularity fallback are stored beside the spec
    (they are common to every model).
    """

    kind: str
    arrays: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    parts: list[ScorerSpec] = field(default_factory=list)


@dataclass
class EpochReport:
    """What a monitor answers after an epoch."""

    value: float | None = None  # validation metric at this epoch, when evaluated
    improved: bool = False  # best so far: the model should keep a copy of its state
    stop: bool = False  # stop training (early stopping or pruning)


class EpochMonitor(Protocol):
    """Called by iterative models after each epoch (1-based)."""

    def __call__(self, model: Recommender, epoch: int, loss: float | None) -> EpochReport: ...


class Recommender(ABC):
    """Base class: shared fitting bookkeeping, cold-start fallback, ranking, persistence."""

    name: ClassVar[str]
    family: ClassVar[str] = "collaborative"
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    stochastic: ClassVar[bool] = False
    iterative: ClassVar[bool] = False
    uses_validation: ClassVar[bool] = False  # gets the monitor to select settings (e.g. fusion weights)
    handles_cold_users: ClassVar[bool] = False
    exportable: ClassVar[bool] = True
    #: iterative models: the config field that counts epochs; ``selected_config`` sets it to the
    #: best epoch, so that a refit on more data trains as long as validation chose
    epoch_param: ClassVar[str | None] = None

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None, seed: int = 0):
        if isinstance(config, ModelConfig):
            config = config.model_dump()
        self.config = self.Config.model_validate(config or {})
        self.seed = int(seed)
        self.best_epoch_: int | None = None
        self.epochs_run_: int = 0

    @classmethod
    def is_stochastic(cls, params: dict[str, Any]) -> bool:
        """Whether a model of this class with ``params`` depends on its seed (a hybrid does when
        one of its components does); the recipe fits a stochastic model once per seed."""
        return cls.stochastic

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({params})"

    # ------------------------------------------------------------------------ fitting

    def fit(self, data: InteractionData, monitor: EpochMonitor | None = None) -> Self:
        """Fit on ``data``; iterative models report each epoch to ``monitor``."""
        self.index_ = data.index
        self.seen_ = data.matrix
        self.popularity_ = data.item_counts.astype(np.float32)
        self.user_history_ = np.diff(self.seen_.indptr).astype(np.int64)
        self._fit(data, monitor)
        return self

    @abstractmethod
    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None: ...

    def selected_config(self) -> ModelConfig:
        """The config to refit with on more data (iterative models: the best epoch count)."""
        if self.epoch_param is None or self.best_epoch_ is None:
            return self.config
        return self.config.model_copy(update={self.epoch_param: self.best_epoch_})

    def _epoch_done(self, monitor: EpochMonitor | None, epoch: int, loss: float | None) -> EpochReport:
        """Iterative models, after each epoch: count it and report it to ``monitor`` (the best
        epoch is recorded when it improves; the caller keeps a copy of its state then)."""
        self.epochs_run_ = epoch
        if monitor is None:
            return EpochReport()
        report = monitor(self, epoch, loss)
        if report.improved:
            self.best_epoch_ = epoch
        return report

    def _training_done(self, restored_best: bool) -> None:
        """Iterative models, after the last epoch: without a best epoch from a monitor, the
        last one counts as the best."""
        if not restored_best:
            self.best_epoch_ = self.epochs_run_

    # ------------------------------------------------------------------------ scoring

    @property
    def n_items(self) -> int:
        return self.index_.n_items

    @abstractmethod
    def _score(self, users: np.ndarray) -> np.ndarray:
        """Scores for known users (indices), shape (len(users), n_items)."""

    def score(self, users: np.ndarray) -> np.ndarray:
        """Scores (float32, users x items) for user indices; -1 marks an unknown user.

        Cold users (no training interactions) and unknown users get the popularity fallback
        unless the model ``handles_cold_users``; unknown users always do.
        """
        self._check_fitted()
        users = np.asarray(users, dtype=np.int64)
        out = np.empty((len(users), self.n_items), dtype=np.float32)
        personal = self.personalised(users)
        if personal.any():
            out[personal] = self._score(users[personal])
        if (~personal).any():
            out[~personal] = self.popularity_
        return out

    def personalised(self, users: np.ndarray) -> np.ndarray:
        """True for users the model answers itself (not the popularity fallback)."""
        users = np.asarray(users, dtype=np.int64)
        known = users >= 0
        if self.handles_cold_users:
            return known
        history = np.zeros(len(users), dtype=np.int64)
        history[known] = self.user_history_[users[known]]
        return known & (history > 0)

    def recommend(
        self,
        user_ids,
        k: int = 10,
        exclude_seen: bool = True,
        exclude_items: dict | None = None,
    ) -> pd.DataFrame:
        """Top-``k`` items for raw user IDs, as rows user_id, item_id, rank, score, personalised.

        ``exclude_items`` optionally maps a user ID to further item IDs to leave out.
        """
        self._check_fitted()
        user_ids = np.asarray(list(user_ids), dtype=object)
        idx = self.index_.user_index(user_ids)
        items = np.full((len(idx), k), -1, dtype=np.int64)
        values = np.full((len(idx), k), -np.inf, dtype=np.float32)
        step = block_size(self.n_items)
        for start in range(0, len(idx), step):
            block = idx[start : start + step]
            scores = self.score(block)
            if exclude_seen:
                known = (block >= 0).astype(np.float32)
                seen = sp.diags(known) @ self.seen_[np.where(block >= 0, block, 0)]
                mask_seen(scores, sp.csr_matrix(seen))
            if exclude_items:
                for row, uid in enumerate(user_ids[start : start + step]):
                    extra = self.index_.item_index(list(exclude_items.get(uid, [])))
                    scores[row, extra[extra >= 0]] = -np.inf
            items[start : start + step], values[start : start + step] = topk(scores, k)
        personal = self.personalised(idx)
        rows, ranks = np.nonzero(items >= 0)
        return pd.DataFrame(
            {
                C.USER: user_ids[rows],
                C.ITEM: self.index_.items[items[rows, ranks]].to_numpy(),
                C.RANK: (ranks + 1).astype(np.int32),
                C.SCORE: values[rows, ranks],
                C.PERSONALISED: personal[rows],
            }
        )

    def _check_fitted(self) -> None:
        if not hasattr(self, "index_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(data) first")

    # -------------------------------------------------------------------- persistence

    def export_spec(self) -> ScorerSpec:
        """The model's scoring as data (see :class:`ScorerSpec`); models that cannot be served
        without their training code raise ``NotImplementedError`` (and set ``exportable``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be exported")

    def _state(self) -> dict[str, np.ndarray | sp.spmatrix]:
        """Learned arrays to save (subclasses)."""
        return {}

    def _set_state(self, state: dict[str, np.ndarray | sp.spmatrix]) -> None:  # noqa: B027
        """Restore learned arrays (subclasses; models without learned arrays need nothing)."""

    def save(self, path: str | Path) -> Path:
        """Save to directory ``path``: model.json, arrays (.npy), ID maps (Parquet)."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "model": self.name,
            "config": self.config.model_dump(mode="json"),
            "seed": self.seed,
            "best_epoch": self.best_epoch_,
            "epochs_run": self.epochs_run_,
            "format": 1,
        }
        (path / "model.json").write_text(json.dumps(meta, indent=2))
        pd.DataFrame({C.USER: self.index_.users}).to_parquet(path / "users.parquet", index=False)
        pd.DataFrame({C.ITEM: self.index_.items}).to_parquet(path / "items.parquet", index=False)
        state = {"seen": self.seen_, "popularity": self.popularity_, **self._state()}
        arrays = path / "arrays"
        arrays.mkdir(exist_ok=True)
        for key, value in state.items():
            if sp.issparse(value):
                csr = sp.csr_matrix(value)
                np.save(arrays / f"{key}.indptr.npy", csr.indptr)
                np.save(arrays / f"{key}.indices.npy", csr.indices)
                np.save(arrays / f"{key}.data.npy", csr.data)
                np.save(arrays / f"{key}.shape.npy", np.asarray(csr.shape, dtype=np.int64))
            else:
                np.save(arrays / f"{key}.npy", np.asarray(value), allow_pickle=False)
        return path

    @staticmethod
    def load(path: str | Path) -> Recommender:
        """Load any saved model (its class is read from model.json)."""
        from personalize.models.registry import get_model_class

        path = Path(path)
        meta = json.loads((path / "model.json").read_text())
        cls = get_model_class(meta["model"])
        model = cls(meta["config"], seed=meta["seed"])
        model.best_epoch_ = meta.get("best_epoch")
        model.epochs_run_ = meta.get("epochs_run", 0)
        users = pd.read_parquet(path / "users.parquet")[C.USER]
        items = pd.read_parquet(path / "items.parquet")[C.ITEM]
        model.index_ = IdIndex(pd.Index(users), pd.Index(items))
        state = load_arrays(path / "arrays")
        model.seen_ = state.pop("seen").tocsr()
        model.popularity_ = state.pop("popularity")
        model.user_history_ = np.diff(model.seen_.indptr).astype(np.int64)
        model._set_state(state)
        return model


def load_arrays(folder: Path) -> dict[str, np.ndarray | sp.csr_matrix]:
    """Read arrays written by :meth:`Recommender.save` (CSR matrices from their parts)."""
    out: dict[str, Any] = {}
    sparse_keys = {p.name[: -len(".indptr.npy")] for p in folder.glob("*.indptr.npy")}
    for key in sparse_keys:
        shape = tuple(np.load(folder / f"{key}.shape.npy"))
        out[key] = sp.csr_matrix(
            (
                np.load(folder / f"{key}.data.npy"),
                np.load(folder / f"{key}.indices.npy"),
                np.load(folder / f"{key}.indptr.npy"),
            ),
            shape=shape,
        )
    for p in folder.glob("*.npy"):
        key = p.name[: -len(".npy")]
        if key.split(".")[0] in sparse_keys and "." in key:
            continue
        out[key] = np.load(p, allow_pickle=False)
    return out
