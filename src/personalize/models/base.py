"""The one model contract.

Every model is a small class with a typed config (``Config``), ``fit(data) -> self``, a
scoring call over the catalogue, and save/load. Conventions, the same for every model:

- Learned state ends in ``_``; the config is never mutated by fitting.
- A fitted model answers through its scorer (:meth:`Recommender.scorer`): one of the kinds of
  :mod:`personalize.scoring` built from the learned state. The exported model ships the same
  scoring code and data, so what is evaluated is what serves.
- ``score(users)`` returns float32 scores (users x catalogue items) for user *indices*; higher
  is better; ``-inf`` marks an item the model cannot recommend. Seen items are *not* removed
  by ``score`` (the evaluator and ``recommend`` exclude them), so scores stay reusable.
- A user with no training interactions (a cold user) gets the popularity of the training data
  as scores, unless the model declares ``handles_cold_users`` (it uses side information); the
  rule is :meth:`personalize.scoring.Scorer.personalised`.
- ``recommend(user_ids, k)`` works on raw IDs: seen items excluded, an unknown user (not in the
  index) gets the popularity fallback, and ``personalised`` says which users were answered by
  the model itself.
- Stochastic models take ``seed`` (a plain int) and are deterministic given it.
- Models that select settings on validation (``uses_validation``, e.g. a fusion weight) also
  receive the monitor (a :class:`Validator`) and call ``monitor.evaluate(model)`` to score a
  candidate.
- Iterative models report to an :class:`EpochMonitor` after every epoch (training loss, then
  validation NDCG@10 via the evaluator), keep the state of their best epoch, and expose it as
  ``best_epoch_``; ``selected_config()`` returns the config to refit with (epochs = best epoch).
- ``save(path)`` writes ``model.json`` (type, config, seed) and arrays as ``.npy`` plus ID maps
  as Parquet; ``Recommender.load(path)`` restores any model without refitting.
- A class with a ``name`` registers itself under it (:mod:`personalize.models.registry`): a new
  model is one module anywhere under ``personalize/models/``.
- Every registered class declares what erasing one user from it takes (``erasure``, an
  :class:`ErasureNeeds`; a hybrid adds its components' through :meth:`Recommender.erasure_needs`);
  the erasure log reads it, and a test fits every registered type with and without one user to
  check the declaration.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from personalize import scoring
from personalize.config.model import ModelConfig
from personalize.core import columns as C
from personalize.data.matrix import IdIndex, InteractionData
from personalize.models.registry import MODELS


@dataclass
class EpochReport:
    """What a monitor answers after an epoch."""

    value: float | None = None  # validation metric at this epoch, when evaluated
    improved: bool = False  # best so far: the model should keep a copy of its state
    stop: bool = False  # stop training (early stopping or pruning)


class EpochMonitor(Protocol):
    """Called by iterative models after each epoch (1-based)."""

    def __call__(self, model: Recommender, epoch: int, loss: float | None) -> EpochReport: ...


@runtime_checkable
class Validator(Protocol):
    """A monitor that can also score a candidate on validation (models that choose settings on
    validation, e.g. fusion weights, need one). ``fresh()`` is an unused copy for a component."""

    metric: str

    def evaluate(self, model: Recommender) -> float: ...

    def evaluate_users(self, model: Recommender) -> pd.Series:
        """The monitored metric per evaluated validation user (index: user index)."""
        ...

    def fresh(self) -> Validator: ...

    @property
    def n_users(self) -> int: ...

    @property
    def history(self) -> list[dict]: ...


@dataclass(frozen=True)
class ErasureNeeds:
    """What erasing one user from a fitted model of a class takes (``Recommender.erasure``).

    ``item_side_from_all_users``: state that every user's answer reads (item factors, item-item
    weights, item counts, network weights) is fitted on every training user's interactions, so
    only a refit without the user removes their contribution. ``per_user_state``: what the model
    fits per user besides the seen items and history lengths every model keeps (user factors or
    embeddings, content profiles, segment labels); None: nothing. Settings chosen on validation
    (tuned params, best epochs, fusion weights, routes) are not fitted state: a refit keeps them.
    """

    item_side_from_all_users: bool
    per_user_state: str | None = None

    def why(self) -> str:
        """The erasure log's sentence: why a refit is needed, or why dropping the user's rows
        would have sufficed."""
        kept = f"{self.per_user_state} and seen items" if self.per_user_state else "seen items"
        if self.item_side_from_all_users:
            return f"its item side depends on every user's interactions (and it keeps {kept} per user): refit"
        return f"it keeps only {kept} per user: dropping the user's rows would have sufficed; refit anyway"

    def merged(self, other: ErasureNeeds) -> ErasureNeeds:
        """Both needs at once (a hybrid and its components)."""
        kept = [s for s in (self.per_user_state, other.per_user_state) if s]
        return ErasureNeeds(
            self.item_side_from_all_users or other.item_side_from_all_users,
            ", ".join(dict.fromkeys(kept)) or None,
        )


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
    #: why a model of this class cannot score a user it never saw from a history given at
    #: scoring time (fold-in; the ``user_holdout`` split needs it); None: it can
    no_fold_in: ClassVar[str | None] = None
    #: differentially private models: the unit their guarantee protects (``user``: one user's
    #: whole history; ``event``: one interaction); None: not private
    dp_unit: ClassVar[str | None] = None
    #: what erasing one user takes (:class:`ErasureNeeds`): every registered class declares it
    #: (no default, so a class that does not is caught by the declaration test)
    erasure: ClassVar[ErasureNeeds]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            MODELS.register(cls.name, cls)

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

    @classmethod
    def fold_in_refusal(cls, params: dict[str, Any]) -> str | None:
        """Why a model of this class with ``params`` cannot score held-out users through fold-in
        (None: it can); known before fitting (a hybrid asks its components)."""
        return cls.no_fold_in

    @classmethod
    def erasure_needs(cls, params: dict[str, Any]) -> ErasureNeeds:
        """What erasing one user from a model of this class with ``params`` takes (a hybrid adds
        its components'); AttributeError when the class declares nothing."""
        return cls.erasure

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({params})"

    # ------------------------------------------------------------------------ fitting

    def fit(self, data: InteractionData, monitor: EpochMonitor | None = None) -> Self:
        """Fit on ``data``; iterative models report each epoch to ``monitor``."""
        self.index_ = data.index
        self.seen_ = data.matrix
        self.exclude_ = data.exclusion
        self.popularity_ = data.item_popularity.astype(np.float32)
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
    def _scorer(self) -> scoring.Scorer:
        """The fitted model's scorer (a kind of :mod:`personalize.scoring`, built from the
        learned state; cheap: it wraps arrays, it does not copy them)."""

    def scorer(self) -> scoring.Scorer:
        """The scorer every answer of this model goes through (``handles_cold_users`` set)."""
        self._check_fitted()
        scorer = self._scorer()
        scorer.handles_cold_users = type(self).handles_cold_users
        return scorer

    @property
    def context(self) -> scoring.Context:
        """What the scorer reads besides its own data: the users' histories, popularity, history
        lengths, the items left out of each ranking."""
        return scoring.Context(self.seen_, self.popularity_, self.user_history_, self.exclude_)

    @property
    def excluded_(self) -> sp.csr_matrix:
        """Items left out of each user's ranking (nonzero = left out)."""
        return self.context.excluded

    def score(self, users: np.ndarray) -> np.ndarray:
        """Scores (float32, users x items) for user indices; -1 marks an unknown user.

        Cold users (no training interactions) and unknown users get the popularity fallback
        unless the model ``handles_cold_users``; unknown users always do.
        """
        return self.scorer().answer(np.asarray(users, dtype=np.int64), self.context)

    def personalised(self, users: np.ndarray) -> np.ndarray:
        """True for users the model answers itself (not the popularity fallback)."""
        return self.scorer().personalised(np.asarray(users, dtype=np.int64), self.user_history_)

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
        exclude = None
        if exclude_items:
            exclude = [
                self.index_.item_index(list(exclude_items[uid])) if uid in exclude_items else None
                for uid in user_ids
            ]
        rows, items, ranks, values, personal = scoring.rank_rows(
            self.scorer(),
            self.context,
            self.index_.user_index(user_ids),
            np.full(len(user_ids), k, dtype=np.int64),
            exclude,
            exclude_seen,
        )
        return scoring.frame(user_ids[rows], self.index_.items[items].to_numpy(), ranks, values, personal)

    def _check_fitted(self) -> None:
        if not hasattr(self, "index_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(data) first")

    # -------------------------------------------------------------------- persistence

    def _state(self) -> dict[str, np.ndarray | sp.spmatrix]:
        """Learned arrays to save (subclasses)."""
        return {}

    def _set_state(self, state: dict[str, np.ndarray | sp.spmatrix]) -> None:  # noqa: B027
        """Restore learned arrays (subclasses; models without learned arrays need nothing)."""

    def _meta(self) -> dict[str, Any]:
        """Facts beside the arrays that ``model.json`` keeps (subclasses add theirs)."""
        return {}

    def _set_meta(self, meta: dict[str, Any]) -> None:  # noqa: B027
        """Restore what :meth:`_meta` saved (subclasses)."""

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
            **self._meta(),
        }
        (path / "model.json").write_text(json.dumps(meta, indent=2))
        pd.DataFrame({C.USER: self.index_.users}).to_parquet(path / "users.parquet", index=False)
        pd.DataFrame({C.ITEM: self.index_.items}).to_parquet(path / "items.parquet", index=False)
        state = {"seen": self.seen_, "popularity": self.popularity_, **self._state()}
        if self.exclude_ is not None:
            state["exclude"] = self.exclude_
        scoring.save_arrays(path / "arrays", state)
        return path

    @staticmethod
    def load(path: str | Path) -> Recommender:
        """Load any saved model (its class is read from model.json)."""
        path = Path(path)
        meta = json.loads((path / "model.json").read_text())
        cls = MODELS.get(meta["model"])
        model = cls(meta["config"], seed=meta["seed"])
        model.best_epoch_ = meta.get("best_epoch")
        model.epochs_run_ = meta.get("epochs_run", 0)
        users = pd.read_parquet(path / "users.parquet")[C.USER]
        items = pd.read_parquet(path / "items.parquet")[C.ITEM]
        model.index_ = IdIndex(pd.Index(users), pd.Index(items))
        state = scoring.load_arrays(path / "arrays")
        model.seen_ = state.pop("seen").tocsr()
        exclude = state.pop("exclude", None)
        model.exclude_ = None if exclude is None else exclude.tocsr()
        model.popularity_ = state.pop("popularity")
        model.user_history_ = np.diff(model.seen_.indptr).astype(np.int64)
        model._set_state(state)
        model._set_meta(meta)
        return model
