"""Prequential replay (PROTOCOL.md, "Prequential replay"): one global cut in the total order, the
model fitted on everything before it, the later events replayed in order.

Rules, as implemented here:

- Total order: (timestamp, item_id, user_id), the order of every split (``sort_total_order``).
  The cut is a row position moved back to the first row of its second, so that no second (and
  so no burst) is split between the fitted data and the replay. The test period is the last
  ``test_fraction`` of the rows, the validation period the ``valid_fraction`` before it.
- A batch is the rows of one user with one timestamp; batches are taken in the order of their
  first row. For each batch: first recommend the top K for its user from the current state
  (test), then apply every row of the batch (learn). So a burst's second event can never be
  predicted with the help of its first.
- "Seen" (left out of the ranking) is the same for every strategy: the items of the user's
  excluding events (every event, or only relevant ones under ``data.seen: relevant``) before
  the cut plus those of the batches applied since. Only the scores differ between strategies.
- A row is evaluated when it counts as relevant (rating >= ``evaluation.min_rating`` when set;
  a relevant event type with event types). An evaluated row's rank is the place of its item in
  the batch's list (0: not in the top K); HR@K = 1 if rank > 0; NDCG@K = 1 / log2(1 + rank) for
  a hit, else 0. Every row is applied, evaluated or not.
- Strategies (``Scores`` classes): ``static`` (the model fitted at the cut, frozen: a user
  with no fitted row gets the model's fallback, popularity at the cut, or the attribute path of
  a model that handles cold users); ``online_popularity`` (item weights summed over the fitted
  rows and every applied row, optionally decayed with a half-life: count_i(t) = sum over rows
  of i of w * 2^(-(t - t_row) / half_life)); ``foldin`` (the fitted model's item side fixed,
  each user's history updated with the applied rows and scored through
  :func:`personalize.scoring.fold_context`; a user with no fitted row is folded in from their
  new rows alone, and a scorer that does not fold in answers them with its fallback);
  ``retrain`` (the whole model refitted on every row of an earlier second when a batch's time
  reaches the next refit time, cut + j * period; between refits it answers like ``static``);
  ``foldin_popularity`` (beyond the protocol's four: fold-in and online popularity, each
  min-max scaled per user, blended with the fold-in weight chosen on validation).
- Hyperparameters (the model's ``grid``, the retrain period, the popularity half-life) are
  chosen per (model, strategy) on the validation period replayed after a fit on the rows
  before it, by the mean over users of the per-user mean NDCG@K; the test period is then
  replayed after a fit on every row before it, with the chosen values.
- Warm: the user has a row in the data fitted at the period's cut; cold: not.
- Summaries: means per event (ratio of sums) and per user (mean of per-user means), intervals
  from a percentile bootstrap over users (for the per-event mean: users resampled with all
  their events); paired tests (``evaluation.paired_test``) of each row's per-user means against
  the baseline row's on the same users, Holm-adjusted across the rows of one slice and metric.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from personalize import scoring
from personalize.config import ModelSpec
from personalize.config.replay import ReplayConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError, DataError
from personalize.data.events import EventPolicy
from personalize.data.matrix import IdIndex, InteractionData
from personalize.data.splits import half_even, sort_total_order
from personalize.evaluation.stats import bootstrap_ci, holm, paired_test
from personalize.models.base import Recommender
from personalize.models.registry import create_model
from personalize.plotting import figure, house_style

POPULARITY = "popularity"  # the model label of the online popularity strategy
BASELINE = (POPULARITY, "online_popularity")
RESULT_COLUMNS = [
    "phase",
    "model",
    "strategy",
    "event",
    "batch",
    C.USER,
    C.ITEM,
    C.TIMESTAMP,
    "relevant",
    "warm",
    "rank",
    "hr",
    "ndcg",
]


# ---------------------------------------------------------------------------------- the stream


@dataclass
class Stream:
    """Every interaction in the total order, indexed once for all fits (users: the users table
    plus every user with a row; items: the catalogue)."""

    rows: pd.DataFrame  # the interactions, sorted in the total order
    index: IdIndex
    users_table: pd.DataFrame
    items_table: pd.DataFrame
    events: EventPolicy | None
    user: np.ndarray  # user index per row
    item: np.ndarray  # item index per row
    seconds: np.ndarray  # timestamp per row, int64 seconds since the epoch
    weight: np.ndarray  # training weight per row
    relevant: np.ndarray  # the row counts as relevant (evaluated)
    excludes: np.ndarray  # the row's item leaves its user's ranking once applied

    @classmethod
    def build(
        cls,
        interactions: pd.DataFrame,
        users: pd.DataFrame,
        items: pd.DataFrame,
        events: EventPolicy | None = None,
        min_rating: float | None = None,
    ) -> Stream:
        """Sort ``interactions`` in the total order and index them (the relevance rule and the
        'seen' rule of PROTOCOL.md, Data)."""
        for col in (C.USER, C.ITEM, C.TIMESTAMP):
            if col not in interactions.columns:
                raise DataError(f"interactions have no '{col}' column; cannot replay them")
        if len(interactions) == 0:
            raise DataError("no interactions to replay")
        rows = sort_total_order(interactions).reset_index(drop=True)
        index = IdIndex.build(users, items, rows)
        data = InteractionData.build(rows, index, users, items, events)
        frame = data.frame
        weight = frame[C.WEIGHT].to_numpy(np.float64) if C.WEIGHT in frame.columns else np.ones(len(rows))
        relevant = np.ones(len(rows), dtype=bool)
        if min_rating is not None:
            if C.RATING not in rows.columns:
                raise DataError("evaluation.min_rating is set but the interactions have no rating column")
            relevant &= rows[C.RATING].to_numpy() >= min_rating
        if events is not None:
            relevant &= events.relevant_rows(rows)
        excluding = None if events is None else events.excluding_rows(rows)
        excludes = np.ones(len(rows), dtype=bool) if excluding is None else np.asarray(excluding, bool)
        ts = pd.to_datetime(rows[C.TIMESTAMP], utc=True)
        seconds = ((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
        return cls(
            rows,
            index,
            data.users,
            data.items,
            events,
            frame[C.USER_IDX].to_numpy(np.int64),
            frame[C.ITEM_IDX].to_numpy(np.int64),
            seconds,
            weight,
            relevant,
            excludes,
        )

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def n_items(self) -> int:
        return self.index.n_items

    def fit_data(self, stop: int) -> InteractionData:
        """The rows before position ``stop`` as a model's training data (the stream's index)."""
        return InteractionData.build(
            self.rows.iloc[:stop], self.index, self.users_table, self.items_table, self.events
        )

    def cut(self, position: int) -> int:
        """``position`` moved back to the first row of its second (no second is split)."""
        if position >= len(self):
            return len(self)
        return int(np.searchsorted(self.seconds, self.seconds[position], side="left"))

    def periods(self, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
        """(validation start, test start): row positions of the two cuts (module doc)."""
        n = len(self)
        n_test = int(half_even(np.array([n]), test_fraction)[0])
        n_valid = int(half_even(np.array([n]), valid_fraction)[0])
        test_start = self.cut(n - n_test)
        valid_start = self.cut(max(0, test_start - n_valid))
        if valid_start == 0 or valid_start >= test_start or test_start >= n:
            raise DataError(
                f"cannot cut {n} rows into fit / validation / test periods of "
                f"{1 - valid_fraction - test_fraction:.0%} / {valid_fraction:.0%} / {test_fraction:.0%} "
                "without splitting a second (too few rows or distinct timestamps)"
            )
        return valid_start, test_start

    def batches(self, start: int, stop: int) -> list[np.ndarray]:
        """Row positions of each batch (one user, one second) of rows ``start:stop``, in the
        order of their first row."""
        if stop <= start:
            return []
        pos = np.arange(start, stop)
        key = pd.DataFrame({"t": self.seconds[pos], "u": self.user[pos], "p": pos})
        groups = key.groupby(["t", "u"], sort=False)["p"]
        first = groups.transform("min").to_numpy()
        order = np.lexsort((pos, first))
        ordered, firsts = pos[order], first[order]
        bounds = np.flatnonzero(np.r_[True, firsts[1:] != firsts[:-1], True])
        return [ordered[a:b] for a, b in itertools.pairwise(bounds)]


# ------------------------------------------------------------------------------ the strategies


class Scores:
    """A strategy's state: the scores of a user before a batch, and how a batch updates it."""

    def scores(self, user: int, second: int) -> np.ndarray:
        raise NotImplementedError

    def learn(self, user: int, rows: np.ndarray, second: int) -> None:
        """Apply a batch (after it was predicted)."""


class OnlinePopularity(Scores):
    """Item weights over the fitted rows plus every applied row, optionally decayed."""

    def __init__(self, stream: Stream, start: int, half_life_days: float | None = None):
        self.stream = stream
        self.half_life = None if half_life_days is None else half_life_days * 86400.0
        self.now = int(stream.seconds[start - 1]) if start > 0 else int(stream.seconds[0])
        w = stream.weight[:start]
        if self.half_life is not None:
            w = w * np.exp2(-(self.now - stream.seconds[:start]) / self.half_life)
        self.counts = np.bincount(stream.item[:start], weights=w, minlength=stream.n_items)

    def _advance(self, second: int) -> None:
        if self.half_life is not None and second > self.now:
            self.counts *= np.exp2(-(second - self.now) / self.half_life)
        self.now = max(self.now, second)

    def scores(self, user: int, second: int) -> np.ndarray:
        self._advance(second)
        return self.counts.astype(np.float32)

    def learn(self, user: int, rows: np.ndarray, second: int) -> None:
        self._advance(second)
        np.add.at(self.counts, self.stream.item[rows], self.stream.weight[rows])


class Static(Scores):
    """A fitted model, frozen: each user's scores from the fitted context (cached)."""

    def __init__(self, model: Recommender):
        self.model = model
        self.scorer = model.scorer()
        self.context = model.context
        self._cache: dict[int, np.ndarray] = {}

    def scores(self, user: int, second: int) -> np.ndarray:
        got = self._cache.get(user)
        if got is None:
            got = self.scorer.answer(np.array([user]), self.context)[0]
            self._cache[user] = got
        return got.copy()


class FoldIn(Static):
    """The fitted model's item side fixed; each user's history grows with the applied rows."""

    def __init__(self, model: Recommender, stream: Stream):
        super().__init__(model)
        self.stream = stream
        self.added: dict[int, dict[int, float]] = {}

    def scores(self, user: int, second: int) -> np.ndarray:
        added = self.added.get(user)
        if not added:
            return super().scores(user, second)
        items = np.fromiter(added.keys(), dtype=np.int64, count=len(added))
        weights = np.fromiter(added.values(), dtype=np.float64, count=len(added))
        matrix, _ = scoring.added_matrices([(items, weights, np.ones(len(items), bool))], self.stream.n_items)
        owner = user if self.model.user_history_[user] > 0 else -1  # never fitted: no learned vector
        folded = scoring.fold_context(self.context, np.array([owner]), matrix)
        return self.scorer.answer(np.arange(1), folded)[0]

    def learn(self, user: int, rows: np.ndarray, second: int) -> None:
        mine = self.added.setdefault(user, {})
        for i, w in zip(self.stream.item[rows].tolist(), self.stream.weight[rows].tolist()):
            mine[i] = max(w, mine.get(i, w))


class FoldInPopularity(Scores):
    """Fold-in blended with online popularity: ``weight * minmax(fold-in) + (1 - weight) *
    minmax(popularity)`` per user (min-max over the finite scores of the catalogue), both
    updated with every applied batch."""

    def __init__(self, foldin: FoldIn, popularity: OnlinePopularity, weight: float):
        self.foldin, self.popularity, self.weight = foldin, popularity, float(weight)

    @staticmethod
    def _scaled(s: np.ndarray) -> np.ndarray:
        s = np.asarray(s, dtype=np.float64)
        finite = np.isfinite(s)
        if not finite.any():
            return np.where(finite, s, -np.inf)
        lo, hi = s[finite].min(), s[finite].max()
        out = (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
        return np.where(finite, out, -np.inf)

    def scores(self, user: int, second: int) -> np.ndarray:
        a = self._scaled(self.foldin.scores(user, second))
        b = self._scaled(self.popularity.scores(user, second))
        return (self.weight * a + (1 - self.weight) * b).astype(np.float32)

    def learn(self, user: int, rows: np.ndarray, second: int) -> None:
        self.foldin.learn(user, rows, second)
        self.popularity.learn(user, rows, second)


class Retrain(Scores):
    """Refit the whole model every ``period_days`` of replay time on every earlier row."""

    def __init__(
        self,
        model: Recommender,
        stream: Stream,
        start: int,
        period_days: float,
        fit: Callable[[int], Recommender],
    ):
        self.stream = stream
        self.fit = fit
        self.period = period_days * 86400.0
        self.origin = int(stream.seconds[start])
        self.next = self.origin + self.period
        self.current = Static(model)
        self.refits = 0

    def scores(self, user: int, second: int) -> np.ndarray:
        if second >= self.next:
            stop = int(np.searchsorted(self.stream.seconds, second, side="left"))  # rows of earlier seconds
            self.current = Static(self.fit(stop))
            self.refits += 1
            while self.next <= second:
                self.next += self.period
        return self.current.scores(user, second)


# -------------------------------------------------------------------------------- the replay


def replay(
    stream: Stream,
    start: int,
    stop: int,
    strategy: Scores,
    k: int,
    *,
    label: tuple[str, str, str] = ("test", "", ""),
    progress: bool = False,
    batches: list[np.ndarray] | None = None,
) -> pd.DataFrame:
    """Replay rows ``start:stop`` through ``strategy`` (module doc): one result row per replayed
    row (columns :data:`RESULT_COLUMNS`; ``rank`` 0 and ``hr``/``ndcg`` NaN where the row is not
    evaluated). ``label``: (phase, model, strategy)."""
    if not 0 < start <= stop <= len(stream):
        raise ValueError(f"replay needs 0 < start <= stop <= {len(stream)}, got {start}, {stop}")
    batches = stream.batches(start, stop) if batches is None else batches
    excluded: dict[int, set[int]] = {}
    ex_rows = np.flatnonzero(stream.excludes[:start])
    for u, i in zip(stream.user[ex_rows].tolist(), stream.item[ex_rows].tolist()):
        excluded.setdefault(u, set()).add(i)
    fitted_users = np.zeros(stream.index.n_users, dtype=bool)
    fitted_users[stream.user[:start]] = True
    n = stop - start
    rank = np.zeros(n, dtype=np.int64)
    batch_of = np.zeros(n, dtype=np.int64)
    phase, model, name = label
    bar = tqdm(
        batches, desc=f"{phase} {model}/{name}".strip(), disable=not progress, unit="batch", leave=False
    )
    for b, rows in enumerate(bar):
        user, second = int(stream.user[rows[0]]), int(stream.seconds[rows[0]])
        scores = np.asarray(strategy.scores(user, second), dtype=np.float32).copy()
        seen = excluded.get(user)
        if seen:
            scores[np.fromiter(seen, dtype=np.int64, count=len(seen))] = -np.inf
        top, _ = scoring.topk(scores[None, :], k)
        top = top[0]
        for r in rows:
            hit = np.flatnonzero(top == stream.item[r])
            rank[r - start] = int(hit[0]) + 1 if len(hit) else 0
        batch_of[rows - start] = b
        strategy.learn(user, rows, second)
        ex = rows[stream.excludes[rows]]
        if len(ex):
            excluded.setdefault(user, set()).update(stream.item[ex].tolist())
    bar.close()
    pos = np.arange(start, stop)
    relevant = stream.relevant[pos]
    rank = np.where(relevant, rank, 0)
    hr = np.where(relevant, (rank > 0).astype(np.float64), np.nan)
    with np.errstate(divide="ignore"):
        ndcg = np.where(rank > 0, 1.0 / np.log2(1.0 + np.maximum(rank, 1)), 0.0)
    ndcg = np.where(relevant, ndcg, np.nan)
    return pd.DataFrame(
        {
            "phase": phase,
            "model": model,
            "strategy": name,
            "event": pos,
            "batch": batch_of,
            C.USER: stream.index.users[stream.user[pos]],
            C.ITEM: stream.index.items[stream.item[pos]],
            C.TIMESTAMP: stream.rows[C.TIMESTAMP].to_numpy()[pos],
            "relevant": relevant,
            "warm": fitted_users[stream.user[pos]],
            "rank": rank,
            "hr": hr,
            "ndcg": ndcg,
        }
    )


# ----------------------------------------------------------------------- the study (choice + test)


@dataclass
class Candidate:
    """One point of a (model, strategy) grid: model params and the strategy's own setting."""

    model: str
    strategy: str
    params: dict[str, Any]
    setting: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return json.dumps({**self.params, **self.setting}, sort_keys=True, default=str)


@dataclass
class ReplayStudy:
    """What :func:`replay_study` gives back."""

    config: ReplayConfig
    valid_start: int
    test_start: int
    selection: pd.DataFrame  # every candidate's validation score, ``chosen`` marked
    results: pd.DataFrame  # per test event and (model, strategy): RESULT_COLUMNS
    summary: pd.DataFrame  # long: model, strategy, slice, per, metric, mean, low, high, p, p_holm
    seconds: dict[str, float]  # wall time per phase
    refits: dict[str, int]  # test-period refits per retrain row

    def table(self) -> pd.DataFrame:
        """The summary as one row per (model, strategy): 'metric per slice' columns."""
        return format_table(self.summary)


class _Fits:
    """Fitted models by (type, params, rows): the static, fold-in and retrain strategies of one
    model start from the same fit at a cut."""

    def __init__(self, stream: Stream, seed: int):
        self.stream, self.seed = stream, seed
        self._cache: dict[tuple[str, str, int], Recommender] = {}

    def get(self, model_type: str, params: dict[str, Any], stop: int) -> Recommender:
        key = (model_type, json.dumps(params, sort_keys=True, default=str), stop)
        if key not in self._cache:
            self._cache[key] = create_model(model_type, params, self.seed).fit(self.stream.fit_data(stop))
        return self._cache[key]

    def fresh(self, model_type: str, params: dict[str, Any]) -> Callable[[int], Recommender]:
        return lambda stop: create_model(model_type, params, self.seed).fit(self.stream.fit_data(stop))


def candidates(specs: Sequence[ModelSpec], config: ReplayConfig) -> list[Candidate]:
    """Every (model, strategy, setting) the validation period scores."""
    out: list[Candidate] = []
    if "online_popularity" in config.strategies:
        out += [
            Candidate(POPULARITY, "online_popularity", {}, {"half_life_days": h})
            for h in config.popularity_half_life_days
        ]
    for spec in specs:
        for params in spec.combinations():
            for strategy in config.strategies:
                if strategy in ("static", "foldin"):
                    out.append(Candidate(spec.label, strategy, params))
                elif strategy == "retrain":
                    out += [
                        Candidate(spec.label, strategy, params, {"period_days": p})
                        for p in config.retrain_days
                    ]
                elif strategy == "foldin_popularity":
                    out += [
                        Candidate(spec.label, strategy, params, {"weight": w, "half_life_days": h})
                        for w in config.blend_weights
                        for h in config.popularity_half_life_days
                    ]
    return out


def _strategy(c: Candidate, stream: Stream, start: int, fits: _Fits, types: dict[str, str]) -> Scores:
    if c.strategy == "online_popularity":
        return OnlinePopularity(stream, start, c.setting.get("half_life_days"))
    model = fits.get(types[c.model], c.params, start)
    if c.strategy == "static":
        return Static(model)
    if c.strategy == "foldin":
        return FoldIn(model, stream)
    if c.strategy == "foldin_popularity":
        popularity = OnlinePopularity(stream, start, c.setting.get("half_life_days"))
        return FoldInPopularity(FoldIn(model, stream), popularity, c.setting["weight"])
    if c.strategy == "retrain":
        return Retrain(model, stream, start, c.setting["period_days"], fits.fresh(types[c.model], c.params))
    raise ConfigError(f"unknown replay strategy {c.strategy!r}")


def replay_study(
    stream: Stream,
    specs: Sequence[ModelSpec],
    config: ReplayConfig,
    *,
    seed: int = 0,
    resamples: int = 1000,
    confidence: float = 0.95,
    test: str = "t",
    progress: bool = False,
) -> ReplayStudy:
    """Choose each (model, strategy)'s settings on the validation period, then replay the test
    period with them and summarise (module doc). The validation phase reads only the rows
    before the test cut."""
    if POPULARITY in {s.label for s in specs}:
        raise ConfigError(
            f"model name {POPULARITY!r} is the online popularity strategy's row in a replay; "
            "name the model differently (name: ...)"
        )
    types = {s.label: s.type for s in specs}
    valid_start, test_start = stream.periods(config.valid_fraction, config.test_fraction)
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    valid_stream = _prefix(stream, test_start)  # the validation phase cannot read test rows
    fits = _Fits(valid_stream, seed)
    batches = valid_stream.batches(valid_start, test_start)
    rows = []
    for c in candidates(specs, config):
        res = replay(
            valid_stream,
            valid_start,
            test_start,
            _strategy(c, valid_stream, valid_start, fits, types),
            config.k,
            label=("valid", c.model, c.strategy),
            progress=progress,
            batches=batches,
        )
        per_user = res.groupby(C.USER)["ndcg"].mean()
        rows.append(
            {
                "model": c.model,
                "strategy": c.strategy,
                "setting": c.describe(),
                "valid_ndcg_user": float(per_user.mean()),
                "valid_ndcg_event": float(res["ndcg"].mean()),
                "_candidate": c,
            }
        )
    selection = pd.DataFrame(rows)
    best = selection.groupby(["model", "strategy"], sort=False)["valid_ndcg_user"].idxmax()
    selection["chosen"] = selection.index.isin(best.to_numpy())
    seconds["validation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fits = _Fits(stream, seed)
    batches = stream.batches(test_start, len(stream))
    results, refits = [], {}
    for c in selection.loc[selection["chosen"], "_candidate"]:
        strategy = _strategy(c, stream, test_start, fits, types)
        results.append(
            replay(
                stream,
                test_start,
                len(stream),
                strategy,
                config.k,
                label=("test", c.model, c.strategy),
                progress=progress,
                batches=batches,
            )
        )
        if isinstance(strategy, Retrain):
            refits[c.model] = strategy.refits
    seconds["test"] = time.perf_counter() - t0
    results_frame = pd.concat(results, ignore_index=True)
    summary = summarise(results_frame, resamples=resamples, confidence=confidence, test=test, seed=seed)
    return ReplayStudy(
        config,
        valid_start,
        test_start,
        selection.drop(columns="_candidate"),
        results_frame,
        summary,
        seconds,
        refits,
    )


def _prefix(stream: Stream, stop: int) -> Stream:
    """The stream cut to its first ``stop`` rows (the same index)."""
    return Stream(
        stream.rows.iloc[:stop],
        stream.index,
        stream.users_table,
        stream.items_table,
        stream.events,
        stream.user[:stop],
        stream.item[:stop],
        stream.seconds[:stop],
        stream.weight[:stop],
        stream.relevant[:stop],
        stream.excludes[:stop],
    )


# ------------------------------------------------------------------------------- summaries


def per_user(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per-user mean of ``metric`` over evaluated events: users x (model, strategy)."""
    ev = results[results["relevant"]]
    return ev.pivot_table(index=C.USER, columns=["model", "strategy"], values=metric, aggfunc="mean")


def _ratio_ci(
    sums: np.ndarray, counts: np.ndarray, resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Bootstrap over users of sum(values) / sum(events) (users resampled with their events)."""
    if len(sums) < 2:
        value = float(sums.sum() / counts.sum()) if counts.sum() else np.nan
        return value, value
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(sums), size=(resamples, len(sums)))
    ratios = sums[idx].sum(axis=1) / np.maximum(counts[idx].sum(axis=1), 1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(ratios, [alpha, 1 - alpha])
    return float(lo), float(hi)


def summarise(
    results: pd.DataFrame,
    baseline: tuple[str, str] = BASELINE,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    test: str = "t",
    seed: int = 0,
) -> pd.DataFrame:
    """Long table: for each (model, strategy), slice (all, warm, cold), per (event, user) and
    metric (hr, ndcg): mean, bootstrap interval over users, events, users, and for per-user rows
    the paired test against ``baseline`` (p) and its Holm adjustment across the rows of that
    slice and metric (p_holm). Raises ValueError when the rows did not replay the same events."""
    ev = results[results["relevant"]]
    keys = list(ev.groupby(["model", "strategy"], sort=False).groups)
    events = {key: g["event"].to_numpy() for key, g in ev.groupby(["model", "strategy"], sort=False)}
    first = next(iter(events.values()))
    for key, e in events.items():
        if not np.array_equal(np.sort(e), np.sort(first)):
            raise ValueError(f"{key} replayed other events than {keys[0]}: comparisons must pair events")
    out = []
    for slice_name in ("all", "warm", "cold"):
        part = ev if slice_name == "all" else ev[ev["warm"] == (slice_name == "warm")]
        for metric in ("hr", "ndcg"):
            if len(part) == 0:
                continue
            users = per_user(part, metric)
            grouped = part.groupby(["model", "strategy", C.USER])[metric].agg(["sum", "count"]).sort_index()
            p_values = []
            rows = []
            for key in keys:
                if key not in users.columns:
                    continue
                u = users[key].to_numpy()
                g = grouped.loc[key]
                s, n = g["sum"].to_numpy(np.float64), g["count"].to_numpy(np.float64)
                lo_e, hi_e = _ratio_ci(s, n, resamples, confidence, seed)
                lo_u, hi_u = bootstrap_ci(u, resamples, confidence, seed)
                base = {"model": key[0], "strategy": key[1], "slice": slice_name, "metric": metric}
                count = {"events": int(n.sum()), "users": len(u)}
                rows.append(
                    {**base, "per": "event", "mean": s.sum() / n.sum(), "low": lo_e, "high": hi_e, **count}
                )
                p = np.nan
                if baseline in users.columns and key != baseline:
                    p = paired_test(u, users[baseline].to_numpy(), test, seed=seed)
                p_values.append(p)
                rows.append(
                    {
                        **base,
                        "per": "user",
                        "mean": float(np.mean(u)),
                        "low": lo_u,
                        "high": hi_u,
                        **count,
                        "p": p,
                    }
                )
            adjusted = iter(holm(p_values))
            for row in rows:
                if row["per"] == "user":
                    row["p_holm"] = next(adjusted)
            out += rows
    return pd.DataFrame(out)


def format_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, strategy): 'HR@K per event', ... as 'mean [low, high]', the users per
    slice and the Holm-adjusted p-values (per-user NDCG and HR) against the baseline."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in summary.itertuples(index=False):
        row = rows.setdefault((r.model, r.strategy), {"model": r.model, "strategy": r.strategy})
        sl = "" if r.slice == "all" else f" {r.slice}"
        row[f"{r.metric} per {r.per}{sl}"] = f"{r.mean:.4f} [{r.low:.4f}, {r.high:.4f}]"
        if r.per == "user":
            row[f"users{sl}"] = r.users
            if not pd.isna(r.p_holm):
                row[f"p_holm {r.metric}{sl}"] = f"{r.p_holm:.2g}"
    return pd.DataFrame(list(rows.values()))


def over_time(results: pd.DataFrame, window_days: float) -> pd.DataFrame:
    """Per-event means of hr and ndcg in windows of replay time (days from the period's first
    event): model, strategy, window, start, events, hr, ndcg."""
    ev = results[results["relevant"]].copy()
    ts = pd.to_datetime(ev[C.TIMESTAMP], utc=True)
    origin = ts.min()
    ev["window"] = ((ts - origin).dt.total_seconds() // (window_days * 86400)).astype(int)
    table = (
        ev.groupby(["model", "strategy", "window"], sort=False)
        .agg(events=("hr", "size"), hr=("hr", "mean"), ndcg=("ndcg", "mean"))
        .reset_index()
    )
    table["start"] = origin + pd.to_timedelta(table["window"] * window_days, unit="D")
    return table


@house_style
def plot_over_time(results: pd.DataFrame, window_days: float, k: int):
    """HR@K and NDCG@K per event in windows of replay time, one line per (model, strategy)."""
    table = over_time(results, window_days)
    fig, axes = figure(2, 1, height=6.0, sharex=True)
    styles = {
        "static": ":",
        "online_popularity": "-",
        "foldin": "-",
        "retrain": "--",
        "foldin_popularity": "-.",
    }
    for (model, strategy), g in table.groupby(["model", "strategy"], sort=False):
        for ax, metric in zip(axes[:, 0], ("hr", "ndcg")):
            ax.plot(
                g["start"],
                g[metric],
                styles.get(strategy, "-"),
                marker="o",
                ms=3,
                label=f"{model} / {strategy}",
            )
    axes[0, 0].set_ylabel(f"HR@{k} (mean per event)")
    axes[1, 0].set_ylabel(f"NDCG@{k} (mean per event)")
    axes[1, 0].set_xlabel(f"start of the {window_days:g}-day window (replay time, UTC)")
    axes[0, 0].set_title(f"Prequential replay: HR@{k} and NDCG@{k} over replay time")
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.autofmt_xdate()
    return fig


@house_style
def plot_strategies(summary: pd.DataFrame, k: int):
    """Per-user mean NDCG@K with its interval per (model, strategy), warm and cold slices."""
    rows = summary[(summary["metric"] == "ndcg") & (summary["per"] == "user")]
    labels = list(dict.fromkeys(f"{m} / {s}" for m, s in zip(rows["model"], rows["strategy"])))
    fig, axes = figure(1, 1, height=max(3.0, 0.35 * len(labels) + 1.2))
    ax = axes[0, 0]
    y = np.arange(len(labels))
    for offset, (slice_name, colour) in zip(
        (-0.25, 0.0, 0.25), (("all", "black"), ("warm", "tab:blue"), ("cold", "tab:orange"))
    ):
        part = rows[rows["slice"] == slice_name]
        lab = [f"{m} / {s}" for m, s in zip(part["model"], part["strategy"])]
        pos = np.array([labels.index(x) for x in lab]) + offset
        ax.errorbar(
            part["mean"],
            pos,
            xerr=[part["mean"] - part["low"], part["high"] - part["mean"]],
            fmt="o",
            ms=4,
            color=colour,
            label=slice_name,
        )
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"NDCG@{k}, mean over users (95% bootstrap interval)")
    ax.set_title("Prequential replay (test period) by update strategy")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
