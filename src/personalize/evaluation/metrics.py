"""Per-user ranking metrics, vectorised over users (the protocol's definitions).

(One module: the registry and every metric's formula, so that a new metric is one decorated
function at the end of this file.)

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

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from personalize.core.metrics import MetricName


def metric_name(metric: str, k: int) -> str:
    return str(MetricName(metric, k))


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


class Cumulative:
    """What the accuracy metrics share, computed once per evaluation: cumulative hits, DCG,
    average-precision terms, the first hit, and the ideal DCG at any k.

    ``hits``: (users, K), true where the place holds a relevant item. ``n_relevant``: |R| per
    user (peers that count test rows pass row counts). ``gains`` / ``ideal_gains``: graded gains
    per place and each user's gains sorted descending (at least K columns); binary when omitted.
    """

    def __init__(
        self,
        hits: np.ndarray,
        n_relevant: np.ndarray,
        gains: np.ndarray | None = None,
        ideal_gains: np.ndarray | None = None,
    ):
        binary = (np.asarray(hits) > 0).astype(np.float64)
        self.kmax = binary.shape[1]
        self.rel = np.asarray(n_relevant, dtype=np.float64)
        self.has_rel = self.rel > 0
        self.safe_rel = np.where(self.has_rel, self.rel, 1.0)
        self.cum_hits = np.cumsum(binary, axis=1)
        disc = _discounts(self.kmax)
        gain = binary if gains is None else np.asarray(gains, dtype=np.float64) * binary
        self.dcg = np.cumsum(gain * disc, axis=1)
        if ideal_gains is None:
            self._ideal = np.cumsum(disc)
            self._ideal_cum = None
        else:
            self._ideal_cum = np.cumsum(
                np.asarray(ideal_gains, dtype=np.float64)[:, : self.kmax] * disc, axis=1
            )
        precision_at_j = self.cum_hits / np.arange(1, self.kmax + 1)
        self.ap_terms = np.cumsum(precision_at_j * binary, axis=1)
        self.first_hit = np.where(binary.any(axis=1), binary.argmax(axis=1) + 1, 0)

    def idcg(self, k: int) -> np.ndarray:
        if self._ideal_cum is None:
            return self._ideal[np.clip(np.minimum(self.rel, k).astype(np.int64) - 1, 0, None)]
        return self._ideal_cum[:, k - 1]

    def precision(self, k: int) -> np.ndarray:
        return self.cum_hits[:, k - 1] / k

    def recall(self, k: int) -> np.ndarray:
        return np.where(self.has_rel, self.cum_hits[:, k - 1] / self.safe_rel, 0.0)

    def hit(self, k: int) -> np.ndarray:
        return (self.cum_hits[:, k - 1] > 0).astype(np.float64)

    def mrr(self, k: int) -> np.ndarray:
        first = self.first_hit
        return np.where((first > 0) & (first <= k), 1.0 / np.maximum(first, 1), 0.0)

    def ndcg(self, k: int) -> np.ndarray:
        idcg = self.idcg(k)
        return np.where(self.has_rel & (idcg > 0), self.dcg[:, k - 1] / np.where(idcg > 0, idcg, 1.0), 0.0)

    def map(self, k: int, denominator: str = "min") -> np.ndarray:
        denom = np.minimum(self.rel, k) if denominator == "min" else self.rel
        return np.where(self.has_rel, self.ap_terms[:, k - 1] / np.where(denom > 0, denom, 1.0), 0.0)


def accuracy_metrics(
    hits: np.ndarray,
    n_relevant: np.ndarray,
    ks: list[int],
    *,
    gains: np.ndarray | None = None,
    ideal_gains: np.ndarray | None = None,
    map_denominator: str = "min",
) -> dict[str, np.ndarray]:
    """Precision, Recall, HitRate, MRR, NDCG and MAP at every k in ``ks``, per user (see
    :class:`Cumulative` for the arguments). Users with |R| = 0 score 0 on every metric."""
    c = Cumulative(hits, n_relevant, gains, ideal_gains)
    if max(ks) > c.kmax:
        raise ValueError(f"need top-{max(ks)} lists, got {c.kmax} places")
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[metric_name("precision", k)] = c.precision(k)
        out[metric_name("recall", k)] = c.recall(k)
        out[metric_name("hit", k)] = c.hit(k)
        out[metric_name("mrr", k)] = c.mrr(k)
        out[metric_name("ndcg", k)] = c.ndcg(k)
        out[metric_name("map", k)] = c.map(k, map_denominator)
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


# ------------------------------------------------------------------------------- registry


@dataclass
class Lists:
    """One evaluation's top-K lists and what metrics are computed from them.

    ``items``: (users, K) item indices (-1: empty place); ``gains``: the relevance value of each
    place (0: not relevant); ``n_relevant``: |R| per user as the mode counts it; ``mode``: the
    metric mode (:mod:`personalize.evaluation.modes`); ``graded``: NDCG with graded gains;
    ``ideal``: each user's gains sorted descending (graded only); ``item_counts`` /
    ``n_seen_rows``: popularity of the history; ``genres``: items x genres (or None);
    ``catalogue``: the denominator of coverage.
    """

    items: np.ndarray
    gains: np.ndarray
    n_relevant: np.ndarray
    mode: Any
    graded: bool
    ideal: np.ndarray | None
    item_counts: np.ndarray
    n_seen_rows: int
    genres: np.ndarray | None
    catalogue: int
    ks: tuple[int, ...]

    @cached_property
    def hits(self) -> np.ndarray:
        return self.gains > 0

    @cached_property
    def cumulative(self) -> Cumulative:
        return Cumulative(self.hits, self.n_relevant, self.gains if self.graded else None, self.ideal)

    @cached_property
    def burges(self) -> Cumulative:
        """The same with exponential gains 2^rel - 1 (ranx's ``ndcg_burges``)."""
        g = self.gains if self.graded else self.hits.astype(np.float64)
        ideal = None if self.ideal is None else np.exp2(self.ideal) - 1.0
        return Cumulative(self.hits, self.n_relevant, np.exp2(g) - 1.0, ideal)

    @cached_property
    def diversity(self) -> dict[int, np.ndarray]:
        return diversity_at(self.items, list(self.ks), self.genres)


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``compute(lists, k)`` gives per-user values (``level="user"``) or one
    catalogue-level value. ``group`` orders the columns (accuracy metrics by K, then mode
    variants, then beyond-accuracy metrics by K); ``applies(mode)`` says whether the mode
    reports it; ``predicted_only``: averaged over users with a non-empty list where the mode
    says so (MS Recommenders); ``shown``: a leaderboard column."""

    name: str
    compute: Callable[[Lists, int], Any]
    description: str
    level: Literal["user", "catalogue"] = "user"
    group: Literal["accuracy", "variant", "beyond"] = "accuracy"
    applies: Callable[[Any], bool] = lambda mode: True
    predicted_only: bool = False
    shown: bool = True


_METRICS: dict[str, Metric] = {}


def metric(name: str, description: str, **options) -> Callable:
    """Register the decorated ``compute(lists, k)`` as metric ``name`` (see :class:`Metric`)."""

    def register(compute: Callable[[Lists, int], Any]) -> Callable[[Lists, int], Any]:
        if name in _METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        _METRICS[name] = Metric(name, compute, description, **options)
        return compute

    return register


def registered() -> list[Metric]:
    """Every metric, in registration (display) order."""
    return list(_METRICS.values())


def metric_names() -> list[str]:
    return list(_METRICS)


def get_metric(name: str) -> Metric:
    try:
        return _METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(_METRICS)}") from None


def compute_per_user(lists: Lists) -> dict[str, np.ndarray]:
    """Every per-user metric the mode reports at every K, in column order."""
    if max(lists.ks) > lists.items.shape[1]:
        raise ValueError(f"need top-{max(lists.ks)} lists, got {lists.items.shape[1]} places")
    out: dict[str, np.ndarray] = {}
    active = [m for m in _METRICS.values() if m.level == "user" and m.applies(lists.mode)]
    for group in ("accuracy", "variant", "beyond"):
        members = [m for m in active if m.group == group]
        if group == "variant":
            pairs = [(m, k) for m in members for k in lists.ks]
        else:
            pairs = [(m, k) for k in lists.ks for m in members]
        for m, k in pairs:
            values = m.compute(lists, k)
            if values is not None:
                out[metric_name(m.name, k)] = values
    return out


def compute_catalogue(lists: Lists, users: np.ndarray) -> dict[str, float]:
    """Every catalogue-level metric at every K over the lists of ``users`` (a mask)."""
    sub = dataclasses.replace(lists, items=lists.items[users])
    return {
        metric_name(m.name, k): float(m.compute(sub, k))
        for k in lists.ks
        for m in _METRICS.values()
        if m.level == "catalogue" and m.applies(lists.mode)
    }


# --------------------------------------------------------------------- the metrics (in order)


@metric("precision", "hits@K / K (always K)", predicted_only=True)
def _precision(lists: Lists, k: int) -> np.ndarray:
    return lists.cumulative.precision(k)


@metric("recall", "hits@K / |R|", predicted_only=True)
def _recall(lists: Lists, k: int) -> np.ndarray:
    return lists.cumulative.recall(k)


@metric("hit", "1 if hits@K > 0")
def _hit(lists: Lists, k: int) -> np.ndarray:
    return lists.cumulative.hit(k)


@metric("mrr", "1 / rank of the first hit within K, else 0")
def _mrr(lists: Lists, k: int) -> np.ndarray:
    return lists.cumulative.mrr(k)


@metric("ndcg", "DCG@K / IDCG@K (binary gains, or graded by the rating)")
def _ndcg(lists: Lists, k: int) -> np.ndarray:
    return lists.cumulative.ndcg(k)


@metric("map", "sum over hits at j <= K of Precision@j / min(|R|, K) (ranx: / |R|)", predicted_only=True)
def _map(lists: Lists, k: int) -> np.ndarray:
    return lists.cumulative.map(k, "relevant" if lists.mode.map_denominator == "relevant" else "min")


@metric(
    "map_r",
    "MAP divided by |R| (MS Recommenders' `map`)",
    group="variant",
    applies=lambda mode: mode.also_map_relevant,
    predicted_only=True,
)
def _map_r(lists: Lists, k: int) -> np.ndarray:
    return lists.cumulative.map(k, "relevant")


@metric(
    "ndcg_burges",
    "NDCG with exponential gains 2^rel - 1 (ranx)",
    group="variant",
    applies=lambda mode: mode.ndcg_burges,
)
def _ndcg_burges(lists: Lists, k: int) -> np.ndarray:
    return lists.burges.ndcg(k)


@metric("coverage", "distinct items in all users' top K / catalogue size", level="catalogue")
def _coverage(lists: Lists, k: int) -> float:
    return coverage(lists.items, k, lists.catalogue)


@metric("novelty", "mean -log2((train count + 1) / (train rows + catalogue size))", group="beyond")
def _novelty(lists: Lists, k: int) -> np.ndarray:
    return novelty(lists.items, k, lists.item_counts, lists.n_seen_rows)


@metric("popularity", "mean train count of the recommended items (ARP)", group="beyond")
def _popularity(lists: Lists, k: int) -> np.ndarray:
    return popularity(lists.items, k, lists.item_counts)


@metric("diversity", "mean pairwise genre dissimilarity 1 - Jaccard", group="beyond")
def _diversity(lists: Lists, k: int) -> np.ndarray | None:
    return lists.diversity[k] if lists.genres is not None else None
