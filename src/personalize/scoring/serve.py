"""Answering top-k requests: the user's scores (fallback included), seen and requested items
left out, the ``k`` best kept with ties broken by item index. The trained model's
``recommend`` and the exported model answer through :func:`rank_rows`; :class:`TopKScorer`
adds what a served model needs (the state folder, ID lookup, request checks, consent).

**Personalisation consent.** A state exported with a consent table lists the users without
``personalisation`` consent (:mod:`.codec`); ``consent`` (one dict purpose -> granted per row,
read from the online store: :mod:`.online`) adds records made since the export. A row whose user
may not be personalised is answered as an unknown user: the overall popularity, nothing of
their history (no seen items left out, no segment, no fold-in of recent events), with
``personalised`` false and ``consent`` false. The rule (:meth:`TopKScorer.consented`): an online
withdrawal applies at once, whatever the export says; an online grant lets a user the export
does not know be personalised (folded in), but does not lift the export's withdrawal of a known
user (the next export, from a consent table with the grant, does); without an online record, a
user the state lists is not personalised, nor is a user unknown to a state exported with a
consent table (no record means not granted). Without a consent table and online records every
row has ``consent`` true.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .codec import load_state
from .foldin import EventRules, added_matrices, fold_context
from .ids import positions
from .kinds import Context, Scorer
from .ranking import topk
from .segments import SegmentFallback

USER, ITEM, RANK, SCORE, PERSONALISED = "user_id", "item_id", "rank", "score", "personalised"
SEGMENT = "segment"
CONSENT = "consent"
PERSONALISATION = "personalisation"
COLUMNS = (USER, ITEM, RANK, SCORE, PERSONALISED)


class RequestError(ValueError):
    """A request that cannot be answered as given (the message says which row and field)."""


def rank_rows(
    scorer: Scorer,
    ctx: Context,
    users: np.ndarray,
    ks: np.ndarray,
    exclude: list[np.ndarray | None] | None = None,
    exclude_seen: bool = True,
    block: int | None = None,
    fallback: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top-``ks[r]`` items of request row r for user index ``users[r]`` (-1: unknown).

    ``exclude``: item indices to leave out per row. ``fallback``: (segment per row, segments x
    items scores): a row the scorer does not answer itself and whose segment is known gets its
    segment's scores instead of the overall popularity. Returns aligned arrays over the answer
    rows: (request row, item index, rank 1..k, score, personalised). A list is shorter than k
    when fewer items can be recommended (``-inf`` scores are left out).
    """
    users = np.asarray(users, dtype=np.int64)
    ks = np.asarray(ks, dtype=np.int64)
    n = len(users)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty.astype(np.int32), empty.astype(np.float32), empty.astype(bool)
    personal = scorer.personalised(users, ctx.history, ctx.owners)
    seen = ctx.excluded
    k_max = int(ks.max())
    top_items = np.full((n, k_max), -1, dtype=np.int64)
    top_scores = np.full((n, k_max), -np.inf, dtype=np.float32)
    step = block or scorer.block_rows(ctx.n_items)
    for start in range(0, n, step):
        rows = np.arange(start, min(n, start + step))
        scores = scorer.answer(users[rows], ctx)
        if fallback is not None:
            segment = fallback[0][rows]
            swap = ~personal[rows] & (segment >= 0)
            if swap.any():
                scores[swap] = fallback[1][segment[swap]]
        for r, row in enumerate(rows):
            u = users[row]
            if exclude_seen and u >= 0:
                scores[r, seen.indices[seen.indptr[u] : seen.indptr[u + 1]]] = -np.inf
            extra = None if exclude is None else exclude[row]
            if extra is not None and len(extra):
                scores[r, extra[extra >= 0]] = -np.inf
        top_items[rows], top_scores[rows] = topk(scores, k_max)
    keep = (top_items >= 0) & (np.arange(k_max)[None, :] < ks[:, None])
    rows, ranks = np.nonzero(keep)
    return rows, top_items[rows, ranks], (ranks + 1).astype(np.int32), top_scores[rows, ranks], personal[rows]


def frame(users, items, ranks, scores, personal) -> pd.DataFrame:
    """Recommendation rows as a DataFrame: user_id, item_id, rank, score, personalised."""
    return pd.DataFrame(
        {
            USER: np.asarray(users, dtype=object),
            ITEM: np.asarray(items),
            RANK: np.asarray(ranks, dtype=np.int32),
            SCORE: np.asarray(scores, dtype=np.float32),
            PERSONALISED: np.asarray(personal, dtype=bool),
        }
    )


class TopKScorer:
    """Answers top-K requests from an exported state (see :mod:`.codec` for the folder)."""

    def __init__(
        self,
        root: Scorer,
        users: pd.Index,
        items: pd.Index,
        context: Context,
        settings: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
        segments: SegmentFallback | None = None,
        no_personalisation: np.ndarray | None = None,
    ):
        settings = settings or {}
        self.no_personalisation = (
            None if no_personalisation is None else np.unique(np.asarray(no_personalisation, dtype=np.int64))
        )
        self.segments = segments
        self.root = root
        self.users = users
        self.items = items
        self.ctx = context
        self.default_k = int(settings.get("default_k", 10))
        self.max_k = int(settings.get("max_k", 1000))
        self.max_rows = int(settings.get("max_rows", 10_000))
        self.info = info or {}
        self.events = EventRules.from_settings(settings)
        self._item_ids = items.to_numpy()

    @classmethod
    def load(cls, folder: str | Path) -> TopKScorer:
        state = load_state(folder)
        return cls(
            state.scorer,
            state.users,
            state.items,
            state.context,
            state.settings,
            state.info,
            state.segments,
            state.no_personalisation,
        )

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def seen(self):
        """Items left out of each user's ranking (nonzero = left out)."""
        return self.ctx.excluded

    @property
    def popularity(self) -> np.ndarray:
        return self.ctx.popularity

    def user_index(self, ids: list[Any]) -> np.ndarray:
        """Indices of raw user IDs (-1: unknown); '196' finds user 196 and 196 finds '196'."""
        return positions(self.users, ids)

    def item_index(self, ids: list[Any]) -> np.ndarray:
        return positions(self.items, ids)

    def personalised(self, users: np.ndarray) -> np.ndarray:
        """True where the model answers the user itself, False where the fallback does."""
        return self.root.personalised(np.asarray(users, dtype=np.int64), self.ctx.history, self.ctx.owners)

    def consented(self, index: np.ndarray, consent: list[dict[str, bool] | None] | None = None) -> np.ndarray:
        """True where the user of each row (user index, -1: unknown) may get a personalised
        answer, by the rule of the module doc; ``consent``: each row's online records (purpose ->
        granted; None or empty: none)."""
        index = np.asarray(index, dtype=np.int64)
        allowed = np.ones(len(index), dtype=bool)
        if self.no_personalisation is not None:
            known = index >= 0
            allowed = known.copy()
            allowed[known] = ~np.isin(index[known], self.no_personalisation)
        if consent is not None:
            if len(consent) != len(index):
                raise RequestError(f"got {len(consent)} consent records for {len(index)} rows")
            for row, records in enumerate(consent):
                if not records or PERSONALISATION not in records:
                    continue
                if not records[PERSONALISATION]:
                    allowed[row] = False
                elif index[row] < 0:
                    allowed[row] = True
        return allowed

    def score(self, users: np.ndarray) -> np.ndarray:
        """Scores (float32, users x items) of user indices (-1: unknown), fallback included,
        seen items not removed."""
        return self.root.answer(np.asarray(users, dtype=np.int64), self.ctx)

    # ------------------------------------------------------------------------- requests

    def check_request(
        self, user_ids: list[Any], ks: list[Any] | None = None, exclude_items: list[Any] | None = None
    ) -> tuple[list[Any], np.ndarray, list[list[Any]]]:
        """Validate a request; returns (user IDs, k per row, excluded item IDs per row).

        Raises :class:`RequestError` naming the row and field at fault.
        """
        n = len(user_ids)
        if n > self.max_rows:
            raise RequestError(f"a request may hold at most {self.max_rows} rows, got {n}")
        for row, uid in enumerate(user_ids):
            if not _is_id(uid):
                raise RequestError(
                    f"row {row}: user_id must be an integer or a string, got {type(uid).__name__} {uid!r}"
                )
        ks = [None] * n if ks is None else list(ks)
        if len(ks) != n:
            raise RequestError(f"got {len(ks)} values of k for {n} rows")
        k_out = np.empty(n, dtype=np.int64)
        for row, k in enumerate(ks):
            k = self.default_k if k is None else k
            if isinstance(k, bool) or not isinstance(k, numbers.Integral):
                raise RequestError(f"row {row}: k must be an integer, got {type(k).__name__} {k!r}")
            if not 1 <= int(k) <= self.max_k:
                raise RequestError(
                    f"row {row}: k must be between 1 and {self.max_k} (the catalogue has "
                    f"{self.n_items} items), got {int(k)}"
                )
            k_out[row] = int(k)
        excludes: list[list[Any]] = []
        extras = [None] * n if exclude_items is None else list(exclude_items)
        if len(extras) != n:
            raise RequestError(f"got {len(extras)} exclude_items values for {n} rows")
        for row, extra in enumerate(extras):
            if extra is None:
                excludes.append([])
                continue
            if isinstance(extra, (str, bytes, dict)) or not hasattr(extra, "__iter__"):
                raise RequestError(
                    f"row {row}: exclude_items must be a list of item IDs, got {type(extra).__name__}"
                )
            extra = list(extra)
            bad = [x for x in extra if not _is_id(x)]
            if bad:
                raise RequestError(f"row {row}: exclude_items must hold integers or strings, got {bad[0]!r}")
            excludes.append(extra)
        return list(user_ids), k_out, excludes

    def recommend(
        self,
        user_ids: list[Any],
        k: int | list[Any] | None = None,
        exclude_items: list[Any] | None = None,
        exclude_seen: bool = True,
        attributes: list[dict[str, Any] | None] | None = None,
        recent: list[list[tuple[Any, str | None]] | None] | None = None,
        consent: list[dict[str, bool] | None] | None = None,
    ) -> pd.DataFrame:
        """Top-k for raw user IDs: rows user_id, item_id, rank, score, personalised (and
        ``segment`` when the state carries segments; missing where the row has none).

        ``k`` is one value for every row or one per row (``None``: the default k);
        ``exclude_items`` one list of item IDs per row (or ``None``); ``attributes`` one dict of
        age / gender / occupation / zip_code per row (or ``None``): with segments, a cold or
        unknown user's segment (:mod:`.segments`); ``recent`` one list of (item ID, event type)
        per row (or ``None``): events after the fit, folded in (:mod:`.foldin`). Rows come out
        in request order, ranks 1..k within a row. ``consent``: one dict purpose -> granted per
        row (online records, or ``None``); with it, or with a state exported with a consent
        table, the rows carry a ``consent`` column (false: answered non-personalised because the
        user has no personalisation consent; module doc).
        """
        columns, allowed = self.answer_columns(
            user_ids, k, exclude_items, exclude_seen, attributes, recent, consent
        )
        out = frame(*columns[:5])
        if consent is not None or self.no_personalisation is not None:
            out[CONSENT] = allowed
        if self.segments is not None:  # -1 (no segment) as missing
            out[SEGMENT] = pd.array(np.where(columns[5] >= 0, columns[5], 0), dtype="Int64")
            out.loc[columns[5] < 0, SEGMENT] = pd.NA
        return out

    def recommend_columns(
        self,
        user_ids: list[Any],
        k: int | list[Any] | None = None,
        exclude_items: list[Any] | None = None,
        exclude_seen: bool = True,
        attributes: list[dict[str, Any] | None] | None = None,
        recent: list[list[tuple[Any, str | None]] | None] | None = None,
        consent: list[dict[str, bool] | None] | None = None,
    ) -> tuple[np.ndarray, ...]:
        """:meth:`recommend` as aligned arrays (user_id, item_id, rank, score, personalised and,
        with segments, segment), without building a DataFrame (the serving path)."""
        return self.answer_columns(user_ids, k, exclude_items, exclude_seen, attributes, recent, consent)[0]

    def answer_columns(
        self,
        user_ids: list[Any],
        k: int | list[Any] | None = None,
        exclude_items: list[Any] | None = None,
        exclude_seen: bool = True,
        attributes: list[dict[str, Any] | None] | None = None,
        recent: list[list[tuple[Any, str | None]] | None] | None = None,
        consent: list[dict[str, bool] | None] | None = None,
    ) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """(:meth:`recommend_columns`, consent per answer row): a row of a user without
        personalisation consent is answered as an unknown user (module doc)."""
        user_ids = list(user_ids)
        ks = k if isinstance(k, (list, tuple, np.ndarray)) else [k] * len(user_ids)
        user_ids, ks_arr, excludes = self.check_request(user_ids, ks, exclude_items)
        if attributes is not None and len(attributes) != len(user_ids):
            raise RequestError(f"got {len(attributes)} attribute rows for {len(user_ids)} rows")
        exclude = [self.item_index(extra) if extra else None for extra in excludes]
        index = self.user_index(user_ids)
        allowed = self.consented(index, consent)
        blocked = ~allowed
        if blocked.any():  # answered as an unknown user: nothing of their history or profile
            index = np.where(blocked, -1, index)
            if attributes is not None:
                attributes = [None if b else a for a, b in zip(attributes, blocked, strict=True)]
        fallback = None
        if self.segments is not None:
            try:
                segment = self.segments.segments_for(index, attributes)
            except ValueError as exc:  # an attribute the classifier cannot read
                raise RequestError(str(exc)) from None
            segment = np.where(blocked, -1, segment)
            fallback = (segment, np.asarray(self.segments.scores, dtype=np.float32))
        if recent is not None and len(recent) != len(user_ids):
            raise RequestError(f"got {len(recent)} recent-event lists for {len(user_ids)} rows")
        if recent is not None and blocked.any():
            recent = [None if b else events for events, b in zip(recent, blocked, strict=True)]
        folded = [] if recent is None else [r for r, events in enumerate(recent) if events]
        if not folded:
            rows, items, ranks, scores, personal = rank_rows(
                self.root, self.ctx, index, ks_arr, exclude, exclude_seen, fallback=fallback
            )
        else:
            rows, items, ranks, scores, personal = self._rank_folded(
                index, ks_arr, exclude, exclude_seen, fallback, folded, recent
            )
        ids = np.empty(len(user_ids), dtype=object)
        ids[:] = user_ids
        out = (ids[rows], self._item_ids[items], ranks, scores, personal)
        return (out if fallback is None else (*out, fallback[0][rows])), allowed[rows]

    def fold(self, index: np.ndarray, recent: list[list[tuple[Any, str | None]]]):
        """The fold-in context of user indices ``index`` with their recent (item ID, event)
        lists (items outside the catalogue are skipped: no scorer can use them)."""
        parts = []
        for events in recent:
            ids = [e[0] for e in events]
            items = self.item_index(ids) if ids else np.zeros(0, dtype=np.int64)
            weights = np.array([self.events.weight(e[1]) for e in events], dtype=np.float64)
            excludes = np.array([self.events.excludes(e[1]) for e in events], dtype=bool)
            ok = items >= 0
            parts.append((items[ok], weights[ok], excludes[ok]))
        added, added_exclude = added_matrices(parts, self.n_items)
        return fold_context(self.ctx, index, added, added_exclude)

    def _rank_folded(self, index, ks, exclude, exclude_seen, fallback, folded, recent):
        """rank_rows over the rows with recent events (a fold-in context) and the rest (the
        exported state), merged back in request order."""
        folded = np.asarray(folded, dtype=np.int64)
        rest = np.setdiff1d(np.arange(len(index)), folded)
        out = []
        if len(rest):
            sub = None if fallback is None else (fallback[0][rest], fallback[1])
            r = rank_rows(
                self.root,
                self.ctx,
                index[rest],
                ks[rest],
                None if exclude is None else [exclude[i] for i in rest],
                exclude_seen,
                fallback=sub,
            )
            out.append((rest[r[0]], *r[1:]))
        ctx = self.fold(index[folded], [recent[i] for i in folded])
        sub = None if fallback is None else (fallback[0][folded], fallback[1])
        r = rank_rows(
            self.root,
            ctx,
            np.arange(len(folded)),
            ks[folded],
            None if exclude is None else [exclude[i] for i in folded],
            exclude_seen,
            fallback=sub,
        )
        out.append((folded[r[0]], *r[1:]))
        merged = [np.concatenate(parts) for parts in zip(*out)]
        order = np.lexsort((merged[2], merged[0]))
        return tuple(m[order] for m in merged)


def _is_id(value: Any) -> bool:
    return isinstance(value, (str, numbers.Integral)) and not isinstance(value, bool)
