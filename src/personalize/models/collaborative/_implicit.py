"""Shared wrapper for matrix factorisation models of the ``implicit`` library.

implicit does the training; this wrapper adds the contract: per-epoch reporting to an
:class:`~personalize.models.base.EpochMonitor` (through implicit's epoch callback, so training
continues between reports and is never restarted), keeping the best epoch's factors,
early stopping, and save/load of the factors.
"""

from __future__ import annotations

import contextlib

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from personalize import scoring
from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, Recommender


class _StopTraining(Exception):
    """Raised from the epoch callback to end implicit's training loop early."""


class ImplicitMF(Recommender):
    """Base for ALS and BPR: score(u, i) = user_factors[u] . item_factors[i]."""

    stochastic = True
    epoch_param = "iterations"
    iterative = True

    def _make(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _train_matrix(self, data: InteractionData) -> sp.csr_matrix:
        return data.matrix

    def _epoch_loss(self, callback_args: tuple, data: InteractionData) -> float | None:
        return None

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        with threadpool_limits(1, user_api="blas"):
            model = self._make()
        best: tuple[np.ndarray, np.ndarray] | None = None

        def on_epoch(*args) -> None:
            nonlocal best
            epoch = int(args[0]) + 1
            self.user_factors_, self.item_factors_ = model.user_factors, model.item_factors
            loss = None if monitor is None else self._epoch_loss(args, data)
            report = self._epoch_done(monitor, epoch, loss)
            if report.improved:
                best = (model.user_factors.copy(), model.item_factors.copy())
            if report.stop:
                raise _StopTraining

        # implicit parallelises itself; nested BLAS threads only slow it down
        with threadpool_limits(1, user_api="blas"), contextlib.suppress(_StopTraining):
            model.fit(self._train_matrix(data), show_progress=False, callback=on_epoch)
        self.user_factors_, self.item_factors_ = (
            best if best is not None else (model.user_factors, model.item_factors)
        )
        self._training_done(best is not None)
        self.__dict__.pop("_loss_triples", None)
        self.user_factors_ = np.ascontiguousarray(self.user_factors_, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(self.item_factors_, dtype=np.float32)

    def _scorer(self) -> scoring.Factors:
        return scoring.Factors(users=self.user_factors_, items=self.item_factors_)

    def _state(self):
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _set_state(self, state) -> None:
        self.user_factors_ = state["user_factors"]
        self.item_factors_ = state["item_factors"]
