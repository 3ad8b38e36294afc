"""Fold-in: a user's scores from their history plus events that arrived after the fit, without
refitting the model.

A fold-in context (:func:`fold_context`) holds one row per request: the user's history in the
fitted model (when it knows the user) merged with the new events, each (user, item) pair
weighing the maximum of its events' weights as in training (``data.events``), and the items
left out of the ranking (the fitted exclusion plus the new events that exclude: every event,
or only relevant ones under ``data.seen: relevant``). Each scorer kind answers a folded row as
the module doc of :mod:`.kinds` says: item-item and static scorers score the updated history
with their fixed item side, ALS solves the user's least-squares problem against its fixed item
factors, the content profile is recomputed from the history, a blend or routed scorer folds in
through its parts; NeuMF and factors without a fold rule (BPR, the two-tower) keep the vectors
they learned for known users, and a user they never saw gets the fallback until a refit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from .kinds import Context


@dataclass(frozen=True)
class EventRules:
    """How an event of each type weighs and whether it leaves the item out of the ranking
    (the exported ``data.events`` policy; without types every event weighs 1 and excludes)."""

    weights: dict[str, float] = field(default_factory=dict)
    relevant: frozenset[str] = frozenset()
    seen: str = "any"

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None) -> EventRules:
        events = (settings or {}).get("events") or {}
        return cls(
            {str(k): float(v) for k, v in (events.get("weights") or {}).items()},
            frozenset(str(e) for e in events.get("relevant") or []),
            str(events.get("seen", "any")),
        )

    def to_settings(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "relevant": sorted(self.relevant), "seen": self.seen}

    @property
    def history_event(self) -> str | None:
        """The type a request's ``history`` item counts as: the heaviest relevant type (None
        without types, where every event weighs 1)."""
        if not self.weights:
            return None
        relevant = [e for e in self.weights if e in self.relevant] or list(self.weights)
        return max(relevant, key=lambda e: (self.weights[e], e))

    def weight(self, event: str | None) -> float:
        """Training weight of an event type (1 without types; an unknown type: ValueError)."""
        if not self.weights:
            return 1.0
        if event not in self.weights:
            raise ValueError(
                f"event type {event!r} is not one the model was trained with {sorted(self.weights)}"
            )
        return self.weights[event]

    def excludes(self, event: str | None) -> bool:
        """True when an event of this type leaves its item out of the user's ranking."""
        if not self.weights or self.seen == "any":
            return True
        return event in self.relevant


def added_matrices(
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_items: int
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(history, exclusion) matrices of new events, one row per request row: ``rows[r]`` =
    (item indices, weights, excludes). A pair weighs the maximum of its events' weights."""
    n = len(rows)
    indptr, ex_ptr = np.zeros(n + 1, dtype=np.int64), np.zeros(n + 1, dtype=np.int64)
    indices, values, ex_idx = [], [], []
    for r, (items, weights, excludes) in enumerate(rows):
        items = np.asarray(items, dtype=np.int64)
        weights = np.asarray(weights, dtype=np.float64)
        excludes = np.asarray(excludes, dtype=bool)
        if len(items) > 1:  # one entry per item, the largest weight first
            order = np.lexsort((-weights, items))
            items, weights, excludes = items[order], weights[order], excludes[order]
            ex = np.unique(items[excludes])
            first = np.r_[True, items[1:] != items[:-1]]
            items, weights = items[first], weights[first]
        else:
            ex = items[excludes] if len(items) else items
        indices.append(items)
        values.append(weights)
        ex_idx.append(ex)
        indptr[r + 1] = indptr[r] + len(items)
        ex_ptr[r + 1] = ex_ptr[r] + len(ex)
    cat = np.concatenate(indices) if n else np.zeros(0, dtype=np.int64)
    val = np.concatenate(values) if n else np.zeros(0)
    exc = np.concatenate(ex_idx) if n else np.zeros(0, dtype=np.int64)
    added = _csr(val.astype(np.float32), cat, indptr, (n, n_items))
    excluded = _csr(np.ones(len(exc), dtype=np.float32), exc, ex_ptr, (n, n_items))
    return added, excluded


def _csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """A CSR matrix from its arrays, with 32-bit indices where they fit (SciPy's own choice,
    made here once instead of by scanning the arrays)."""
    small = max(shape[1], len(indices)) < np.iinfo(np.int32).max
    kind = np.int32 if small else np.int64
    return sp.csr_matrix((data, indices.astype(kind), indptr.astype(kind)), shape=shape)


def fold_context(
    ctx: Context, owners: np.ndarray, added: sp.csr_matrix, added_exclude: sp.csr_matrix | None = None
) -> Context:
    """A fold-in context over request rows (module doc): row r is user ``owners[r]`` of the
    fitted model (-1: unknown to it) with the events of ``added[r]``; ``added_exclude[r]`` the
    new events' items that leave the ranking (None: all of ``added[r]``).

    Row r's history is the elementwise maximum of the user's fitted history and ``added[r]``
    (an absent pair counts 0; pairs that come out 0 are dropped), its exclusion the union of the
    user's fitted exclusion and ``added_exclude[r]``. Built row by row from the CSR arrays (no
    sparse algebra: a request holds few rows, and SciPy's per-operation overhead dominates)."""
    owners = np.asarray(owners, dtype=np.int64)
    n, n_items = len(owners), ctx.n_items
    added = _canonical(added, np.float32)
    new_ex = added if added_exclude is None else _canonical(added_exclude, None)
    base, base_ex = ctx.seen, ctx.excluded
    seen_idx, seen_val, ex_idx = [], [], []
    seen_ptr, ex_ptr = np.zeros(n + 1, dtype=np.int64), np.zeros(n + 1, dtype=np.int64)
    empty_i, empty_v = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    for r in range(n):
        u = owners[r]
        h_idx, h_val, e_idx = empty_i, empty_v, empty_i
        if u >= 0:
            h_idx = base.indices[base.indptr[u] : base.indptr[u + 1]]
            h_val = base.data[base.indptr[u] : base.indptr[u + 1]]
            e_idx = base_ex.indices[base_ex.indptr[u] : base_ex.indptr[u + 1]]
        a_lo, a_hi = added.indptr[r], added.indptr[r + 1]
        a_idx, a_val = added.indices[a_lo:a_hi], added.data[a_lo:a_hi]
        idx = np.union1d(h_idx, a_idx)
        val = np.zeros(len(idx), dtype=np.float32)
        val[np.searchsorted(idx, h_idx)] = h_val
        val = np.maximum(val, _placed(idx, a_idx, a_val))
        keep = val != 0
        seen_idx.append(idx[keep])
        seen_val.append(val[keep])
        seen_ptr[r + 1] = seen_ptr[r] + int(keep.sum())
        e_lo, e_hi = new_ex.indptr[r], new_ex.indptr[r + 1]
        ex = np.union1d(e_idx, new_ex.indices[e_lo:e_hi])
        ex_idx.append(ex)
        ex_ptr[r + 1] = ex_ptr[r] + len(ex)
    seen = _csr(
        np.concatenate(seen_val) if n else empty_v,
        np.concatenate(seen_idx) if n else empty_i,
        seen_ptr,
        (n, n_items),
    )
    ex_all = np.concatenate(ex_idx) if n else empty_i
    exclude = _csr(np.ones(len(ex_all), dtype=np.float32), ex_all, ex_ptr, (n, n_items))
    # Context.build without its copies: both matrices are fresh CSR here
    return Context(seen, ctx.popularity, np.diff(seen_ptr), exclude, owners)


def _canonical(matrix: sp.spmatrix, dtype) -> sp.csr_matrix:
    """``matrix`` as CSR with sorted, unique indices (copied only when it is not already)."""
    if sp.isspmatrix_csr(matrix) and matrix.has_canonical_format and dtype in (None, matrix.dtype):
        return matrix
    out = sp.csr_matrix(matrix, dtype=dtype, copy=True)
    out.sum_duplicates()
    return out


def _placed(idx: np.ndarray, at: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` placed at positions of ``at`` within the sorted ``idx`` (0 elsewhere)."""
    out = np.zeros(len(idx), dtype=np.float32)
    out[np.searchsorted(idx, at)] = values
    return out
