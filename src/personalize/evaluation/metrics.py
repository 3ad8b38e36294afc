"""Per-user ranking metrics, vectorised over users (the protocol's definitions).

Notation: a user's top list ``L`` (item indices, ``-1`` for an empty place), ``R`` the user's
distinct relevant test items, ``hits@j`` the relevant items among the first ``j`` places.

=================  ===============================================================
Precision@K        hits@K / K (always K, also when fewer than K items were returned)
Recall@K           hits@K / |R|
HitRate@K          1 if hits@K > 0 else 0
MRR@K              1 / rank of the first hit within K, else 0
NDCG@K             DCG@K / IDCG@K; DCG = sum over hits at rank i <= K of g_i / log2(i + 1);
                   IDCG = the same for the min(|R|, K) largest gains at the top.
                   Binary gains g = 1 by default; graded gains use the test rating.
MAP@K              sum over hits at rank j <= K of Precision@j, / min(|R|, K)
                   (``map_denominator="relevant"`` divides by |R| instead)
Coverage@K         distinct items in all users' top K / catalogue size (catalogue-level)
Novelty@K          mean over a user's recommended items of
                   -log2((train count + 1) / (train rows + catalogue size))
Popularity@K       mean train count of a user's recommended items (ARP)
Diversity@K        mean over pairs in a user's top K of 1 - Jaccard(genres), over pairs where
                   both items have genres (NaN when a list has fewer than two such items)
=================  ===============================================================

Empty places are misses everywhere; they are not recommended items for Novelty, Popularity,
Diversity and Coverage.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

ACCURACY = ("precision", "recall", "hit", "mrr", "ndcg", "map")
BEYOND = ("coverage", "novelty", "popularity", "diversity")


def metric_name(metric: str, k: int) -> str:
    return f"{metric}@{k}"


def lookup(topk: np.ndarray, rows: sp.csr_matrix) -> np.ndarray:
    """Value of ``rows[u, topk[u, j]]`` for every place (0 where absent or empty).

    ``rows`` has one row per row of ``topk`` (same order) and sorted indices.
    """
    n, k = topk.shape
    out = np.zeros((n, k), dtype=np.float64)
    if rows.nnz == 0 or n == 0:
        return out
    rows = rows.tocsr()
    rows.sort_indices()
    n_cols = rows.shape[1]
    row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(rows.indptr))
    keys = row_of * n_cols + rows.indices.astype(np.int64)
    valid = topk >= 0
    query = (np.arange(n, dtype=np.int64)[:, None] * n_cols + topk)[valid]
    pos = np.searchsorted(keys, query)
    pos_clipped = np.minimum(pos, len(keys) - 1)
    found = keys[pos_clipped] == query
    vals = np.where(found, rows.data[pos_clipped], 0.0)
    out[valid] = vals
    return out


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def accuracy_metrics(
    hits: np.ndarray,
    n_relevant: np.ndarray,
    ks: list[int],
    *,
    gains: np.ndarray | None = None,
    ideal_gains: np.ndarray | None = None,
    map_denominator: str = "min",
) -> dict[str, np.ndarray]:
    """Precision, Recall, HitRate, MRR, NDCG and MAP at every k in ``ks``, per user.

    ``hits``: (users, K), true where the place holds a relevant item. ``n_relevant``: |R|
    per user (peers that count test rows pass row counts). ``gains`` / ``ideal_gains``: graded
    gains per place and each user's gains sorted descending (at least K columns); binary
    when omitted. Users with |R| = 0 score 0 on every metric.
    """
    binary = (np.asarray(hits) > 0).astype(np.float64)
    kmax = binary.shape[1]
    if max(ks) > kmax:
        raise ValueError(f"need top-{max(ks)} lists, got {kmax} places")
    rel = np.asarray(n_relevant, dtype=np.float64)
    has_rel = rel > 0
    safe_rel = np.where(has_rel, rel, 1.0)
    cum_hits = np.cumsum(binary, axis=1)
    disc = _discounts(kmax)
    gain = binary if gains is None else np.asarray(gains, dtype=np.float64) * binary
    dcg = np.cumsum(gain * disc, axis=1)
    if ideal_gains is None:
        ideal = np.cumsum(disc)
        idcg_at = lambda k: ideal[np.clip(np.minimum(rel, k).astype(np.int64) - 1, 0, None)]  # noqa: E731
    else:
        ideal_cum = np.cumsum(np.asarray(ideal_gains, dtype=np.float64)[:, :kmax] * disc, axis=1)
        idcg_at = lambda k: ideal_cum[:, k - 1]  # noqa: E731
    precision_at_j = cum_hits / np.arange(1, kmax + 1)
    ap_terms = np.cumsum(precision_at_j * binary, axis=1)
    first_hit = np.where(binary.any(axis=1), binary.argmax(axis=1) + 1, 0)

    out: dict[str, np.ndarray] = {}
    for k in ks:
        h = cum_hits[:, k - 1]
        out[metric_name("precision", k)] = h / k
        out[metric_name("recall", k)] = np.where(has_rel, h / safe_rel, 0.0)
        out[metric_name("hit", k)] = (h > 0).astype(np.float64)
        out[metric_name("mrr", k)] = np.where(
            (first_hit > 0) & (first_hit <= k), 1.0 / np.maximum(first_hit, 1), 0.0
        )
        idcg = idcg_at(k)
        out[metric_name("ndcg", k)] = np.where(
            has_rel & (idcg > 0), dcg[:, k - 1] / np.where(idcg > 0, idcg, 1.0), 0.0
        )
        denom = np.minimum(rel, k) if map_denominator == "min" else rel
        out[metric_name("map", k)] = np.where(
            has_rel, ap_terms[:, k - 1] / np.where(denom > 0, denom, 1.0), 0.0
        )
    return out


def coverage(topk: np.ndarray, k: int, n_items: int) -> float:
    """Distinct items in all users' top ``k`` / ``n_items``."""
    items = topk[:, :k]
    return float(np.unique(items[items >= 0]).size / max(1, n_items))


def novelty(topk: np.ndarray, k: int, item_counts: np.ndarray, n_train_rows: int) -> np.ndarray:
    """Per user: mean of -log2((count + 1) / (train rows + catalogue size)) over recommended items."""
    items = topk[:, :k]
    valid = items >= 0
    info = -np.log2((item_counts.astype(np.float64) + 1.0) / (n_train_rows + len(item_counts)))
    vals = np.where(valid, info[np.where(valid, items, 0)], 0.0)
    n = valid.sum(axis=1)
    return np.where(n > 0, vals.sum(axis=1) / np.maximum(n, 1), np.nan)


def popularity(topk: np.ndarray, k: int, item_counts: np.ndarray) -> np.ndarray:
    """Per user: mean train count of the recommended items (average recommendation popularity)."""
    items = topk[:, :k]
    valid = items >= 0
    vals = np.where(valid, item_counts[np.where(valid, items, 0)], 0).astype(np.float64)
    n = valid.sum(axis=1)
    return np.where(n > 0, vals.sum(axis=1) / np.maximum(n, 1), np.nan)


def diversity(topk: np.ndarray, k: int, genres: sp.csr_matrix | np.ndarray | None) -> np.ndarray:
    """Per user: mean pairwise genre dissimilarity 1 - |A & B| / |A | B| within the top ``k``."""
    return diversity_at(topk, [k], genres)[k]


def diversity_at(
    topk: np.ndarray, ks: list[int], genres: sp.csr_matrix | np.ndarray | None
) -> dict[int, np.ndarray]:
    """:func:`diversity` at every k in ``ks`` from one pairwise computation over the top max(ks)."""
    n_users = topk.shape[0]
    if genres is None or genres.shape[1] == 0:
        return {k: np.full(n_users, np.nan) for k in ks}
    dense = genres.toarray() if sp.issparse(genres) else np.asarray(genres)
    dense = dense.astype(np.float32, copy=False)
    kmax = max(ks)
    items = topk[:, :kmax]
    valid = items >= 0
    g = dense[np.where(valid, items, 0)] * valid[..., None]  # (users, kmax, n_genres)
    sizes = g.sum(axis=2)  # (users, kmax)
    inter = np.matmul(g, g.transpose(0, 2, 1))  # (users, kmax, kmax)
    union = sizes[:, :, None] + sizes[:, None, :] - inter
    has = sizes > 0
    pair = has[:, :, None] & has[:, None, :] & ~np.eye(items.shape[1], dtype=bool)[None]
    dissim = np.where(pair, 1.0 - inter / np.where(union > 0, union, 1.0), 0.0)
    out = {}
    for k in ks:
        n_pairs = pair[:, :k, :k].sum(axis=(1, 2))
        total = dissim[:, :k, :k].sum(axis=(1, 2))
        out[k] = np.where(n_pairs > 0, total / np.maximum(n_pairs, 1), np.nan)
    return out
