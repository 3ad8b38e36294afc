"""The one evaluator: full ranking over the catalogue, seen items excluded, every metric per user.

Scoring runs in blocks of users sized to a memory budget (:func:`personalize.scoring.block_size`), so a
users x items score matrix of the whole catalogue never exists at once; each block is masked,
reduced to its top K, and dropped.

(One module: the targets, the blocked scoring and the per-user tables are the one evaluation path
that every model, the validation monitor and every report goes through.)
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from personalize.config.evaluation import EvaluationConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError
from personalize.core.metrics import MetricName, is_metric_name
from personalize.data.events import EventPolicy
from personalize.data.matrix import IdIndex, InteractionData, csr_from_pairs
from personalize.evaluation import metrics as M
from personalize.evaluation.modes import get_mode
from personalize.scoring import block_size, fold_context, topk
from personalize.scoring import mask as mask_seen

#: float32 scores per top-k pass: the block is scored at once (a large matrix product is
#: efficient), then ranked in slices of this size, which stay in the CPU cache across top-k's
#: passes (partition, threshold, candidates). 20k items (the 10M-event synthetic log): ranking
#: 745-user blocks in 52-user slices takes 0.7-0.8x the time (results identical: rows are
#: ranked independently)
RANK_BYTES = 4 * 2**20


class Scorer(Protocol):
    """Anything that scores users against the catalogue (every model does)."""

    def score(self, users: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class EvalTarget:
    """What a model is evaluated against: one split part (validation or test).

    ``users``: index of every user with at least one row in the part (ascending).
    ``relevant``: (users x items) gains of the relevant items (1, or the max rating).
    ``n_relevant``: |R| (distinct relevant items); ``n_rows``: relevant test rows (peers).
    ``seen``: (users x items) items to exclude (the history the model may know; with event
    types, its relevant events unless ``data.seen`` is 'any').
    ``warm``: the user has at least one interaction in that history.
    ``item_counts`` / ``n_seen_rows``: popularity of the seen history (novelty, ARP).
    ``segments``: each target user's segment (-1: none), assigned from the history the model
    knows; None without segmentation.
    ``foldin``: (users x items) the input history of each target user, given to the model at
    scoring time (user_holdout: held-out users unseen in training), each (user, item) pair
    weighing its training weight; None: users are scored from what the model was fitted on.
    With fold-in, ``seen`` holds the input's excluded items and ``warm`` is False for every
    user (none has a row in the fitted data).
    """

    name: str
    index: IdIndex
    users: np.ndarray
    relevant: sp.csr_matrix
    n_relevant: np.ndarray
    n_rows: np.ndarray
    seen: sp.csr_matrix
    warm: np.ndarray
    item_counts: np.ndarray
    n_seen_rows: int
    seen_items: int
    segments: np.ndarray | None = None
    foldin: sp.csr_matrix | None = None

    def unmasked(self) -> EvalTarget:
        """The same target with nothing excluded: every item is ranked, the history's too (for a
        choice that must not read the history, e.g. an event-level private model's epoch)."""
        return dataclasses.replace(self, seen=sp.csr_matrix(self.seen.shape, dtype=np.float32))

    @property
    def user_ids(self) -> np.ndarray:
        return self.index.users[self.users].to_numpy()


def make_target(
    name: str,
    part: pd.DataFrame,
    seen: pd.DataFrame,
    index: IdIndex,
    min_rating: float | None = None,
    gains: str = "binary",
    events: EventPolicy | None = None,
    segments: pd.Series | None = None,
    inputs: pd.DataFrame | None = None,
) -> EvalTarget:
    """Build the evaluation target for ``part`` with the items of ``seen`` (the history the
    model knows) excluded. With event types (``events``) only rows of relevant types are
    relevant, and only the history's relevant events exclude their items (``data.seen``).
    ``segments`` maps user IDs to their segment (assigned from ``seen``; missing users: -1).

    ``inputs`` (user_holdout): the target users' input parts, given to the model through
    fold-in (:attr:`EvalTarget.foldin`, with training weights); their items are the ones
    excluded (relevant ones under ``data.seen: relevant``), while ``seen`` (the data the model
    was fitted on) still gives the item popularity for novelty and ARP. A target user with a
    row in ``seen`` is refused: held-out users are unseen in training."""
    users = np.unique(index.user_index(part[C.USER]))
    if (users < 0).any():
        raise ValueError(f"{name}: users outside the index")
    pos = np.searchsorted(users, index.user_index(part[C.USER]))
    items = index.item_index(part[C.ITEM])
    if (items < 0).any():
        raise ValueError(f"{name}: items outside the catalogue")
    relevant_mask = np.ones(len(part), dtype=bool)
    if min_rating is not None:
        if C.RATING not in part.columns:
            raise ValueError("evaluation.min_rating is set but the interactions have no rating")
        relevant_mask = part[C.RATING].to_numpy() >= min_rating
    if events is not None:
        relevant_mask &= events.relevant_rows(part)
    shape = (len(users), index.n_items)
    if gains == "graded":
        if C.RATING not in part.columns:
            raise ValueError("evaluation.gains is 'graded' but the interactions have no rating")
        values = part[C.RATING].to_numpy(dtype=np.float32)[relevant_mask]
    else:
        values = None
    relevant = csr_from_pairs(pos[relevant_mask], items[relevant_mask], shape, values, reduce="max")
    n_rows = np.bincount(pos[relevant_mask], minlength=len(users)).astype(np.int64)

    seen_users = index.user_index(seen[C.USER])
    seen_items = index.item_index(seen[C.ITEM])
    in_target = np.isin(seen_users, users)
    if inputs is not None:
        if in_target.any():
            raise ValueError(
                f"{name}: {len(np.unique(seen_users[in_target]))} held-out users have fitted rows"
            )
        return _foldin_target(
            name, index, users, relevant, n_rows, inputs, seen_items, len(seen), events, segments
        )
    history = csr_from_pairs(np.searchsorted(users, seen_users[in_target]), seen_items[in_target], shape)
    excluding = None if events is None else events.excluding_rows(seen)
    if excluding is None:
        seen_rows = history
    else:
        keep = in_target & excluding
        seen_rows = csr_from_pairs(np.searchsorted(users, seen_users[keep]), seen_items[keep], shape)
    item_counts = np.bincount(seen_items, minlength=index.n_items).astype(np.int64)
    return EvalTarget(
        name=name,
        index=index,
        users=users,
        relevant=relevant,
        n_relevant=np.diff(relevant.indptr).astype(np.int64),
        n_rows=n_rows,
        seen=seen_rows,
        warm=np.diff(history.indptr) > 0,
        item_counts=item_counts,
        n_seen_rows=len(seen),
        seen_items=int((item_counts > 0).sum()),
        segments=None if segments is None else _segments_of(index.users[users], segments),
    )


def _foldin_target(
    name: str,
    index: IdIndex,
    users: np.ndarray,
    relevant: sp.csr_matrix,
    n_rows: np.ndarray,
    inputs: pd.DataFrame,
    seen_items: np.ndarray,
    n_seen_rows: int,
    events: EventPolicy | None,
    segments: pd.Series | None,
) -> EvalTarget:
    """The target of held-out users scored through fold-in of ``inputs`` (see :func:`make_target`)."""
    empty = pd.DataFrame(columns=[C.USER])
    data = InteractionData.build(inputs, index, empty, pd.DataFrame({C.ITEM: index.items}), events)
    history = data.matrix[users]
    excluded = history if data.exclusion is None else data.exclusion[users]
    excluded = sp.csr_matrix(excluded, dtype=np.float32)
    excluded.data[:] = 1.0
    item_counts = np.bincount(seen_items, minlength=index.n_items).astype(np.int64)
    return EvalTarget(
        name=name,
        index=index,
        users=users,
        relevant=relevant,
        n_relevant=np.diff(relevant.indptr).astype(np.int64),
        n_rows=n_rows,
        seen=excluded,
        warm=np.zeros(len(users), dtype=bool),
        item_counts=item_counts,
        n_seen_rows=n_seen_rows,
        seen_items=int((item_counts > 0).sum()),
        segments=None if segments is None else _segments_of(index.users[users], segments),
        foldin=sp.csr_matrix(history, dtype=np.float32),
    )


def fold_in_refusal(model: object) -> str | None:
    """Why ``model`` cannot score users through fold-in (None: it can): it has no scorer, or
    a scorer of its tree answers only users it learned a vector for (``folds_in`` False)."""
    if not hasattr(model, "scorer") or not hasattr(model, "context"):
        return f"{type(model).__name__} has no scorer to fold a history into"
    stack = [model.scorer()]
    while stack:
        scorer = stack.pop()
        if not scorer.folds_in:
            return (
                f"its {type(scorer).__name__} scorer ({scorer.kind or 'computed'}) keeps per-user "
                "vectors learned at fit time: held-out users have none"
            )
        stack.extend(scorer.parts)
    return None


def _segments_of(user_ids: pd.Index, segments: pd.Series) -> np.ndarray:
    values = pd.to_numeric(segments.reindex(user_ids), errors="coerce").to_numpy(dtype=np.float64)
    return np.where(np.isnan(values), -1, values).astype(np.int64)


@dataclass
class EvaluationResult:
    """Per-user metric vectors, their means, the top-K lists, and timings."""

    target: str
    mode: str
    ks: list[int]
    per_user: pd.DataFrame  # index: user_id; columns: metric names, n_relevant, warm
    summary: dict[str, float]
    catalogue_metrics: dict[str, float]
    recommendations: pd.DataFrame  # user_id, item_id, rank, score
    timings: dict[str, float] = field(default_factory=dict)

    def metric(self, name: str) -> float:
        if name in self.summary:
            return self.summary[name]
        return self.catalogue_metrics[name]

    def slice_summary(self, mask: np.ndarray) -> dict[str, float]:
        """Plain means over the users selected by ``mask`` (e.g. the warm or cold slice)."""
        sub = self.per_user.loc[mask]
        return {c: float(sub[c].mean()) for c in self.metric_columns}

    @property
    def metric_columns(self) -> list[str]:
        return [c for c in self.per_user.columns if is_metric_name(c)]


class Evaluator:
    """Ranks the catalogue for each target user and computes every metric at every K."""

    def __init__(self, config: EvaluationConfig | None = None, item_genres: sp.csr_matrix | None = None):
        self.config = config or EvaluationConfig()
        self.mode = get_mode(self.config.mode)
        M.get_metric(self.config.primary.metric)  # an unknown metric fails here, not after ranking
        self.item_genres = item_genres
        self._genres = None if item_genres is None else np.asarray(item_genres.toarray(), dtype=np.float32)

    @property
    def kmax(self) -> int:
        return max(self.config.ks)

    def rank(
        self, model: Scorer, target: EvalTarget, k: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict]:
        """Top-``k`` lists for every target user, seen items excluded, in memory-bounded blocks.

        Users are scored a block at a time (:func:`personalize.scoring.block_size` users within
        ``evaluation.memory_budget_mb``), the block's seen items masked, and each slice of
        :data:`RANK_BYTES` of it reduced to its top ``k``: memory is one block plus one slice's
        top-k working copies, whatever the number of users."""
        k = k or self.kmax
        n_users = len(target.users)
        n_items = target.index.n_items
        items = np.full((n_users, k), -1, dtype=np.int64)
        scores = np.full((n_users, k), -np.inf, dtype=np.float32)
        step = block_size(n_items, self.config.memory_budget_mb * 2**20)
        chunk = max(1, RANK_BYTES // (4 * max(1, n_items)))
        t_score = t_rank = 0.0
        score = self._fold_in(model, target) if target.foldin is not None else None
        for start in range(0, n_users, step):
            stop = min(n_users, start + step)
            t0 = time.perf_counter()
            if score is None:
                block = np.asarray(model.score(target.users[start:stop]), dtype=np.float32)
            else:
                block = score(start, stop)
            if block.shape != (stop - start, n_items):
                raise ValueError(
                    f"{type(model).__name__}.score returned shape {block.shape}, "
                    f"expected {(stop - start, n_items)}"
                )
            t1 = time.perf_counter()
            block = block.copy() if not block.flags.writeable else block
            mask_seen(block, target.seen[start:stop])
            for first in range(start, stop, chunk):  # top-k over cache-sized slices of the block
                last = min(stop, first + chunk)
                items[first:last], scores[first:last] = topk(block[first - start : last - start], k)
            t_rank += time.perf_counter() - t1
            t_score += t1 - t0
        return items, scores, {"score_seconds": t_score, "rank_seconds": t_rank}

    @staticmethod
    def _fold_in(model: Scorer, target: EvalTarget):
        """Scores of target rows start:stop through fold-in (user_holdout): a fold-in context
        whose rows are users unknown to the fitted model (owner -1) with the target's input
        history (``target.foldin``) and its excluded items (``target.seen``), answered by the
        model's scorer (:func:`personalize.scoring.fold_context`)."""
        reason = fold_in_refusal(model)
        if reason is not None:
            raise ConfigError(
                f"model {getattr(model, 'name', type(model).__name__)!r} cannot score held-out users on "
                f"{target.name} through fold-in: {reason}"
            )
        scorer, ctx = model.scorer(), model.context  # type: ignore[attr-defined]

        def score(start: int, stop: int) -> np.ndarray:
            rows = stop - start
            folded = fold_context(
                ctx, np.full(rows, -1, dtype=np.int64), target.foldin[start:stop], target.seen[start:stop]
            )
            return np.asarray(scorer.answer(np.arange(rows), folded), dtype=np.float32)

        return score

    def evaluate(self, model: Scorer, target: EvalTarget) -> EvaluationResult:
        """Rank and score ``model`` on ``target``."""
        items, scores, timings = self.rank(model, target)
        result = self.evaluate_lists(items, scores, target)
        result.timings.update(timings)
        return result

    def evaluate_lists(
        self, items: np.ndarray, scores: np.ndarray | None, target: EvalTarget
    ) -> EvaluationResult:
        """Metrics for given top-K lists (rows aligned with ``target.users``)."""
        t0 = time.perf_counter()
        cfg, mode = self.config, self.mode
        ks = cfg.ks
        if items.shape[1] < self.kmax:
            pad = np.full((items.shape[0], self.kmax - items.shape[1]), -1, dtype=np.int64)
            items = np.hstack([items, pad])
        items = items[:, : self.kmax]
        graded = cfg.gains == "graded" and not mode.binary_only
        n_rel = target.n_rows if mode.relevance_count == "rows" else target.n_relevant
        lists = M.Lists(
            items=items,
            gains=M.lookup(items, target.relevant),
            n_relevant=n_rel,
            mode=mode,
            graded=graded,
            ideal=_sorted_gains(target.relevant, self.kmax) if graded else None,
            item_counts=target.item_counts,
            n_seen_rows=target.n_seen_rows,
            genres=self._genres,
            catalogue=target.seen_items if mode.coverage_base == "train_items" else target.index.n_items,
            ks=tuple(ks),
        )
        per_user = M.compute_per_user(lists)

        # which users each metric is averaged over
        has_rel = n_rel > 0
        base = has_rel if mode.users_without_relevant == "exclude" else np.ones(len(n_rel), dtype=bool)
        predicted = (items >= 0).any(axis=1)
        summary: dict[str, float] = {}
        for col, values in per_user.items():
            mask = base
            if mode.predicted_users_only and M.get_metric(MetricName.parse(col).metric).predicted_only:
                mask = base & predicted
            selected = values[mask]
            finite = selected[~np.isnan(selected)]
            summary[col] = float(finite.mean()) if len(finite) else 0.0
        catalogue = M.compute_catalogue(lists, base)
        if mode.decimals is not None:
            summary = {k: round(v, mode.decimals) for k, v in summary.items()}
            catalogue = {k: round(v, mode.decimals) for k, v in catalogue.items()}
        frame = pd.DataFrame(
            {**per_user, "n_relevant": n_rel, "warm": target.warm, "evaluated": base},
            index=pd.Index(target.user_ids, name=C.USER),
        )
        if target.segments is not None:
            frame[C.SEGMENT] = target.segments
        recs = recommendations_frame(items, scores, target)
        return EvaluationResult(
            target=target.name,
            mode=mode.name,
            ks=list(ks),
            per_user=frame,
            summary=summary,
            catalogue_metrics=catalogue,
            recommendations=recs,
            timings={"metric_seconds": time.perf_counter() - t0, "users": float(base.sum())},
        )


def _sorted_gains(relevant: sp.csr_matrix, k: int) -> np.ndarray:
    """Each row's stored gains sorted descending, padded with zeros to ``k`` columns."""
    n = relevant.shape[0]
    out = np.zeros((n, k), dtype=np.float64)
    lengths = np.diff(relevant.indptr)
    rows = np.repeat(np.arange(n), lengths)
    order = np.lexsort((-relevant.data, rows))
    pos = np.arange(len(rows)) - relevant.indptr[rows]
    keep = pos < k
    out[rows[order][keep], pos[keep]] = relevant.data[order][keep]
    return out


def recommendations_frame(items: np.ndarray, scores: np.ndarray | None, target: EvalTarget) -> pd.DataFrame:
    """Long table of the top lists: user_id, item_id, rank (1-based), score."""
    valid = items >= 0
    rows, ranks = np.nonzero(valid)
    return pd.DataFrame(
        {
            C.USER: target.user_ids[rows],
            C.ITEM: target.index.items[items[rows, ranks]].to_numpy(),
            C.RANK: (ranks + 1).astype(np.int32),
            C.SCORE: (scores[rows, ranks] if scores is not None else np.full(len(rows), np.nan)).astype(
                np.float32
            ),
        }
    )


def genre_matrix(items: pd.DataFrame) -> sp.csr_matrix | None:
    """Items x genres binary matrix from the catalogue's ``genres`` lists (rows in index order)."""
    if C.GENRES not in items.columns:
        return None
    lists = items[C.GENRES].map(lambda v: list(v) if isinstance(v, (list, tuple, np.ndarray)) else [])
    vocab = sorted({g for genres in lists for g in genres})
    if not vocab:
        return None
    col = {g: j for j, g in enumerate(vocab)}
    rows = np.repeat(np.arange(len(lists)), [len(v) for v in lists])
    cols = np.array([col[g] for v in lists for g in v], dtype=np.int64)
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(lists), len(vocab)))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def lists_from_frame(
    recommendations: pd.DataFrame, target: EvalTarget, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` arrays (rows aligned with ``target.users``) from a recommendations table with
    user_id, item_id, rank[, score]: the inverse of :func:`recommendations_frame`, so metrics can
    be recomputed from logged recommendations."""
    n = len(target.users)
    items = np.full((n, k), -1, dtype=np.int64)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    recs = recommendations[recommendations[C.RANK] <= k]
    rows = np.searchsorted(target.users, target.index.user_index(recs[C.USER]))
    ok = (rows < n) & (target.users[np.minimum(rows, n - 1)] == target.index.user_index(recs[C.USER]))
    cols = recs[C.RANK].to_numpy()[ok] - 1
    items[rows[ok], cols] = target.index.item_index(recs[C.ITEM])[ok]
    if C.SCORE in recs.columns:
        scores[rows[ok], cols] = recs[C.SCORE].to_numpy(dtype=np.float32)[ok]
    return items, scores
