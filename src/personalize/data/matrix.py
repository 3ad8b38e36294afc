"""From frames to indexed matrices: the one ID <-> index mapping models and the evaluator share.

Users are indexed in ascending raw-ID order over every known user (the users table plus any
user that appears in interactions); items over the catalogue (the item table). Ties in score
are broken by item index, i.e. by ascending item ID.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from personalize.core import columns as C
from personalize.data.events import EventPolicy
from personalize.scoring.ids import positions


@dataclass(frozen=True)
class IdIndex:
    """Raw user / item IDs and their contiguous integer indices."""

    users: pd.Index
    items: pd.Index

    @classmethod
    def build(cls, users: pd.DataFrame, items: pd.DataFrame, *frames: pd.DataFrame) -> IdIndex:
        user_ids = pd.Index(users[C.USER])
        for frame in frames:
            user_ids = user_ids.union(pd.Index(frame[C.USER].unique()))
        item_ids = pd.Index(items[C.ITEM])
        for frame in frames:
            unknown = pd.Index(frame[C.ITEM].unique()).difference(item_ids)
            if len(unknown):
                raise ValueError(
                    f"{len(unknown)} interaction item IDs are not in the catalogue, e.g. {list(unknown[:5])}"
                )
        return cls(user_ids.sort_values().unique(), item_ids.sort_values().unique())

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def user_index(self, ids) -> np.ndarray:
        """Indices of raw user IDs; -1 for unknown users ('196' finds user 196 and back)."""
        return positions(self.users, ids)

    def item_index(self, ids) -> np.ndarray:
        """Indices of raw item IDs; -1 for items not in the catalogue."""
        return positions(self.items, ids)


@dataclass(frozen=True)
class InteractionData:
    """Interactions mapped to indices: what a model is fitted on.

    ``frame`` holds user_idx, item_idx, timestamp, the optional rating, and with event types or
    a weight column the ``event`` and the training ``weight`` of each row
    (:mod:`personalize.data.events`), in the protocol's total order. ``users`` / ``items`` are
    the attribute tables aligned with the index (row i describes user / item i). ``cutoff`` is
    the latest timestamp in the data, the "now" of recency weighting. ``events``: the event
    types' weights and relevance (None: one kind of interaction).
    """

    index: IdIndex
    frame: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    cutoff: pd.Timestamp
    events: EventPolicy | None = None

    @classmethod
    def build(
        cls,
        interactions: pd.DataFrame,
        index: IdIndex,
        users: pd.DataFrame,
        items: pd.DataFrame,
        events: EventPolicy | None = None,
    ) -> InteractionData:
        frame = pd.DataFrame(
            {
                C.USER_IDX: index.user_index(interactions[C.USER]).astype(np.int64),
                C.ITEM_IDX: index.item_index(interactions[C.ITEM]).astype(np.int64),
                # the column's own array: to_numpy() on a tz-aware column makes one Python
                # Timestamp object per row (seconds and gigabytes at 10M rows)
                C.TIMESTAMP: interactions[C.TIMESTAMP].array,
            }
        )
        if C.RATING in interactions.columns:
            frame[C.RATING] = interactions[C.RATING].to_numpy(dtype=np.float64)
        if events is not None:
            frame[C.EVENT] = interactions[C.EVENT].to_numpy()
        weight = None
        if C.WEIGHT in interactions.columns:
            weight = interactions[C.WEIGHT].to_numpy(dtype=np.float64)
        if events is not None:
            by_event = events.row_weights(interactions)
            weight = by_event if weight is None else weight * by_event
        if weight is not None:
            frame[C.WEIGHT] = weight
        if (frame[C.USER_IDX] < 0).any() or (frame[C.ITEM_IDX] < 0).any():
            raise ValueError("interactions reference users or items outside the index")
        aligned_users = users.set_index(C.USER).reindex(index.users).rename_axis(C.USER).reset_index()
        aligned_items = items.set_index(C.ITEM).reindex(index.items).rename_axis(C.ITEM).reset_index()
        cutoff = interactions[C.TIMESTAMP].max() if len(interactions) else pd.Timestamp(0, tz="UTC")
        return cls(index, frame.reset_index(drop=True), aligned_users, aligned_items, cutoff, events)

    @property
    def n_users(self) -> int:
        return self.index.n_users

    @property
    def n_items(self) -> int:
        return self.index.n_items

    @cached_property
    def matrix(self) -> sp.csr_matrix:
        """User x item matrix, float32: 1 where the user interacted with the item, or with
        training weights (event types, a weight column) the maximum weight of the pair's rows."""
        users = self.frame[C.USER_IDX].to_numpy()
        items = self.frame[C.ITEM_IDX].to_numpy()
        if C.WEIGHT in self.frame.columns:
            return csr_from_pairs(users, items, (self.n_users, self.n_items), self.frame[C.WEIGHT].to_numpy())
        m = sp.csr_matrix(
            (np.ones(len(self.frame), dtype=np.float32), (users, items)), shape=(self.n_users, self.n_items)
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    @cached_property
    def exclusion(self) -> sp.csr_matrix | None:
        """Binary user x item matrix of the items left out of each user's ranking, when that is
        not every item of the history (event types with ``data.seen: relevant``); else None."""
        if self.events is None:
            return None
        rows = self.events.excluding_rows(self.frame)
        if rows is None:
            return None
        return csr_from_pairs(
            self.frame[C.USER_IDX].to_numpy()[rows],
            self.frame[C.ITEM_IDX].to_numpy()[rows],
            (self.n_users, self.n_items),
        )

    @cached_property
    def item_popularity(self) -> np.ndarray:
        """Sum of the training weights of each item's rows (its row count without weights): the
        popularity fallback and the popularity baseline."""
        if C.WEIGHT not in self.frame.columns:
            return self.item_counts.astype(np.float64)
        return np.bincount(
            self.frame[C.ITEM_IDX].to_numpy(), weights=self.frame[C.WEIGHT].to_numpy(), minlength=self.n_items
        )

    @cached_property
    def item_counts(self) -> np.ndarray:
        """Interaction rows per item (the protocol's train popularity)."""
        return np.bincount(self.frame[C.ITEM_IDX].to_numpy(), minlength=self.n_items).astype(np.int64)

    @cached_property
    def user_counts(self) -> np.ndarray:
        return np.bincount(self.frame[C.USER_IDX].to_numpy(), minlength=self.n_users).astype(np.int64)

    def days_before_cutoff(self) -> np.ndarray:
        """Age of each interaction in days, relative to ``cutoff``."""
        delta = self.cutoff - self.frame[C.TIMESTAMP]
        return (delta.dt.total_seconds() / 86400.0).to_numpy(dtype=np.float64)


def csr_from_pairs(
    users: np.ndarray,
    items: np.ndarray,
    shape: tuple[int, int],
    values: np.ndarray | None = None,
    reduce: str = "max",
) -> sp.csr_matrix:
    """A CSR matrix (float32, sorted indices) from (user, item[, value]) pairs; duplicates
    reduced by max (missing values skipped, as pandas' ``max``) or sum. The max groups the pairs
    by ``user x n_items + item`` with one stable sort and ``np.fmax.reduceat``."""
    if values is None:
        values = np.ones(len(users), dtype=np.float32)
    if reduce == "max" and len(users):
        key = np.asarray(users, dtype=np.int64) * max(1, shape[1]) + np.asarray(items, dtype=np.int64)
        order = np.argsort(key, kind="stable")
        key = key[order]
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        reduced = np.fmax.reduceat(np.asarray(values)[order], starts)
        u, i = np.divmod(key[starts], max(1, shape[1]))
        m = sp.csr_matrix((reduced.astype(np.float32), (u, i)), shape=shape)
    else:
        m = sp.csr_matrix((np.asarray(values, dtype=np.float32), (users, items)), shape=shape)
        m.sum_duplicates()
    m.sort_indices()
    return m
