"""Top-k selection with the protocol's tie-break (equal scores: lower item index first), and
masking of items a user may not be recommended.

Scores of ``-inf`` mean "not recommendable" (seen items, items a model cannot score); such
places are left empty (item ``-1``), and the metrics count them as misses.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

EMPTY = -1


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best items per row of ``scores`` (rows: users, columns: item indices).

    Returns ``(items, values)``, both ``(n_rows, k)``; ``items`` is ``-1`` where fewer than
    ``k`` items have a finite score. Exact: equal scores are ordered by item index, also at the
    k-th place (every item tied with the k-th score is a candidate), so the result does not
    depend on the partition algorithm. Cost: one O(items) partition per row, then a sort of the
    k candidates; rows with ties across the k-th place take an exact slower path.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (users x items), got shape {scores.shape}")
    n_rows, n_items = scores.shape
    items = np.full((n_rows, k), EMPTY, dtype=np.int64)
    values = np.full((n_rows, k), -np.inf, dtype=np.float32)
    if n_rows == 0 or n_items == 0 or k == 0:
        return items, values
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; a model must return finite scores or -inf")
    k_eff = min(k, n_items)
    if k_eff == n_items:
        return _topk_exact(scores, k)
    kth = np.partition(scores, n_items - k_eff, axis=1)[:, n_items - k_eff]
    at_least = scores >= kth[:, None]
    # rows whose k-th score is shared with an item outside the top k need the exact path
    fast = np.count_nonzero(at_least, axis=1) == k_eff
    all_fast = fast.all()  # the usual case: no copies of the block
    if fast.any():
        fast_scores, fast_mask = (scores, at_least) if all_fast else (scores[fast], at_least[fast])
        cand = (np.flatnonzero(fast_mask) % n_items).reshape(-1, k_eff)  # ascending per row
        cand_vals = np.take_along_axis(fast_scores, cand, axis=1)
        order = np.lexsort((cand, -cand_vals), axis=1)
        items[fast, :k_eff] = np.take_along_axis(cand, order, axis=1)
        values[fast, :k_eff] = np.take_along_axis(cand_vals, order, axis=1)
    if not all_fast:
        items[~fast], values[~fast] = _topk_exact(scores[~fast], k, at_least[~fast])
    empty = ~np.isfinite(values)
    items[empty] = EMPTY
    values[empty] = -np.inf
    return items, values


def _topk_exact(
    scores: np.ndarray, k: int, candidates: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k with every item tied with the k-th score as a candidate (ties: item index).
    ``candidates``: the mask ``scores >= k-th score`` when the caller has it already."""
    n_rows, n_items = scores.shape
    items = np.full((n_rows, k), EMPTY, dtype=np.int64)
    values = np.full((n_rows, k), -np.inf, dtype=np.float32)
    k_eff = min(k, n_items)
    if candidates is not None:
        rows, cols = np.nonzero(candidates)
    elif k_eff < n_items:
        kth = np.partition(scores, n_items - k_eff, axis=1)[:, n_items - k_eff]
        rows, cols = np.nonzero(scores >= kth[:, None])
    else:
        rows, cols = np.divmod(np.arange(n_rows * n_items), n_items)
    vals = scores[rows, cols]
    order = np.lexsort((cols, -vals, rows))  # by row, then score descending, then item index
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, np.arange(n_rows))
    pos = np.arange(len(rows)) - starts[rows]
    keep = (pos < k_eff) & np.isfinite(vals)
    items[rows[keep], pos[keep]] = cols[keep]
    values[rows[keep], pos[keep]] = vals[keep]
    return items, values


def mask(scores: np.ndarray, rows: sp.csr_matrix) -> None:
    """Set ``scores[i, j] = -inf`` where ``rows[i, j]`` is stored (in place)."""
    if rows.nnz:
        coo = rows.tocoo()
        scores[coo.row, coo.col] = -np.inf


def block_size(n_items: int, budget_bytes: int = 256 * 2**20) -> int:
    """Users per scoring block so that a block's float32 scores (plus the partition's copy
    and the candidate mask) stay within ``budget_bytes``."""
    per_user = max(1, n_items) * (4 + 4 + 1) * 2
    return max(1, min(4096, budget_bytes // per_user))


def csr_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """``matrix[rows]``; one row is sliced directly (SciPy's fancy indexing costs ~0.3 ms)."""
    if len(rows) == 1:
        r = int(rows[0])
        start, stop = matrix.indptr[r], matrix.indptr[r + 1]
        return sp.csr_matrix(
            (matrix.data[start:stop], matrix.indices[start:stop], np.array([0, stop - start])),
            shape=(1, matrix.shape[1]),
        )
    return matrix[rows]
