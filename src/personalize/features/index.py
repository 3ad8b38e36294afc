"""A FAISS index over item vectors: "more like this", and nearest items for a profile vector.

The index is exact (``faiss.IndexFlatIP``) over L2-normalised vectors, so the similarity it
returns is the cosine similarity. Excluded items (a user's seen items, or the query item
itself) are removed *after* retrieval: the index is asked for ``k + e`` neighbours, where ``e``
is the largest number of excluded items of any query in the batch, so that ``k`` remain
whenever the catalogue has that many allowed items. Results are ordered by similarity, ties by
item position (the protocol's tie-break, applied to the retrieved items: an exact tie at the
retrieval boundary may be cut by FAISS's own order); a place with no item holds position -1 and
similarity -inf.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from personalize.features.items import l2_normalise


class VectorIndex:
    """Exact cosine-similarity search over item vectors (rows = item positions)."""

    def __init__(self, vectors: np.ndarray, ids: Sequence | pd.Index | None = None):
        import faiss

        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
            raise ValueError(f"item vectors must be a non-empty 2-D array, got shape {vectors.shape}")
        self.vectors = np.ascontiguousarray(l2_normalise(vectors))
        self.ids = pd.Index(ids) if ids is not None else pd.RangeIndex(len(vectors))
        if len(self.ids) != len(vectors):
            raise ValueError(f"{len(self.ids)} ids for {len(vectors)} vectors")
        self._index = faiss.IndexFlatIP(self.vectors.shape[1])
        self._index.add(self.vectors)

    @property
    def n(self) -> int:
        return self.vectors.shape[0]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: sp.csr_matrix | Sequence[Iterable[int]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item positions and cosine similarities for each query vector.

        ``exclude``: per query, item positions to leave out (a CSR matrix with one row per query,
        or a list of iterables); they are dropped after retrieving ``k`` + the most excluded.
        Returns ``(positions, similarities)``, both (queries x k).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = np.ascontiguousarray(l2_normalise(np.atleast_2d(np.asarray(queries, dtype=np.float32))))
        if q.shape[1] != self.dim:
            raise ValueError(f"query vectors have dimension {q.shape[1]}, the index has {self.dim}")
        excluded = _as_sets(exclude, len(q))
        extra = max((len(e) for e in excluded), default=0)
        fetch = min(self.n, k + extra)
        sims, idx = self._index.search(q, fetch)
        pos = np.full((len(q), k), -1, dtype=np.int64)
        out = np.full((len(q), k), -np.inf, dtype=np.float32)
        for row in range(len(q)):
            found = idx[row]
            keep = found >= 0
            if excluded[row]:
                keep &= ~np.isin(found, list(excluded[row]))
            cand, cand_sims = found[keep], sims[row][keep]
            order = np.lexsort((cand, -cand_sims))[:k]  # similarity desc, then position
            pos[row, : len(order)] = cand[order]
            out[row, : len(order)] = cand_sims[order]
        return pos, out

    def more_like_this(
        self, positions: Sequence[int] | np.ndarray, k: int = 10
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items most similar to each item at ``positions`` (the item itself excluded)."""
        positions = np.asarray(positions, dtype=np.int64)
        if ((positions < 0) | (positions >= self.n)).any():
            raise ValueError(f"item positions must be in [0, {self.n}), got {positions.tolist()}")
        return self.search(self.vectors[positions], k, exclude=[[int(p)] for p in positions])

    def similar_items(self, item_ids: Iterable, k: int = 10) -> pd.DataFrame:
        """ "More like this" by item ID: rows item_id, similar_item_id, rank (1-based), similarity."""
        item_ids = list(item_ids)
        positions = self.ids.get_indexer(pd.Index(item_ids))
        missing = [i for i, p in zip(item_ids, positions) if p < 0]
        if missing:
            raise KeyError(f"item IDs not in the index: {missing[:5]}")
        pos, sims = self.more_like_this(positions, k)
        rows, ranks = np.nonzero(pos >= 0)
        return pd.DataFrame(
            {
                "item_id": np.asarray(item_ids, dtype=object)[rows],
                "similar_item_id": self.ids[pos[rows, ranks]].to_numpy(),
                "rank": (ranks + 1).astype(np.int32),
                "similarity": sims[rows, ranks],
            }
        )


def _as_sets(exclude, n_queries: int) -> list[set[int]]:
    if exclude is None:
        return [set() for _ in range(n_queries)]
    if sp.issparse(exclude):
        m = sp.csr_matrix(exclude)
        if m.shape[0] != n_queries:
            raise ValueError(f"exclude has {m.shape[0]} rows for {n_queries} queries")
        return [set(m.indices[m.indptr[r] : m.indptr[r + 1]].tolist()) for r in range(n_queries)]
    sets = [set(int(i) for i in e) for e in exclude]
    if len(sets) != n_queries:
        raise ValueError(f"exclude has {len(sets)} entries for {n_queries} queries")
    return sets
