r"""Synthetic interaction logs with the structure of real ones, at any size, from a seed.

:func:`generate` writes a folder of files that ingestion reads as any other exports
(``users``, ``items`` and one interactions file per event type, Parquet or CSV), the latent
parameters that generated them (``params.npz``) and ``generator.json`` (settings, row counts,
what was planted, the parameters' fingerprint). ``data.source: synthetic`` generates into a
cache folder keyed by the settings, under ``data/cache/synthetic/`` (:func:`ensure_generated`),
and ingests it through :func:`personalize.data.ingest.ingest` like ``data.source: files``.

The generative process (U users, I items, K clusters, R events; settings in
:class:`~personalize.config.synthetic.SyntheticConfig`):

1. **Popularity** (Zipf-like): a random permutation gives item i the rank :math:`r_i \in
   \{1..I\}` and the base popularity :math:`\pi_i = r_i^{-s} / \sum_j r_j^{-s}` (``s``:
   ``popularity_zipf``).
2. **Item profiles**: item i belongs to cluster :math:`g_i \sim \mathrm{Cat}(\rho)`,
   :math:`\rho \sim \mathrm{Dir}(5 \cdot 1_K)`, and has the profile :math:`\phi_i = f\,e_{g_i} +
   (1 - f)\,\epsilon_i`, :math:`\epsilon_i \sim \mathrm{Dir}(1_K)` (``f``: ``item_focus``).
3. **User tastes**: :math:`\theta_u \sim \mathrm{Dir}(\alpha 1_K)` (``alpha``:
   ``user_concentration``; small: a user likes a few clusters). The affinity is
   :math:`A(u, i) = \theta_u \cdot \phi_i = \sum_k \theta_{uk} \phi_{ik}`.
4. **Choice**: :math:`P(i \mid u) \propto \pi_i^{a} A(u, i)` (``a``: ``popularity_weight``),
   restricted at time t to the items released by t. It is sampled exactly as a mixture: with
   :math:`w_{ik} = \pi_i^a \phi_{ik}` and :math:`Z_k(t) = \sum_{i \text{ released by } t}
   w_{ik}`, draw the cluster :math:`k \sim \theta_{uk} Z_k(t)`, then the item :math:`i \sim
   w_{ik} / Z_k(t)` (an inverse-CDF search over the items in release order, whose released
   set at t is a prefix).
5. **Activity** (heavy tail): :math:`x_u \sim \mathrm{LogNormal}(0, \sigma^2)`; user u has
   :math:`n_u = m + \lfloor (R - mU) x_u / \sum_v x_v \rceil` events (largest remainders, so
   :math:`\sum_u n_u = R` exactly; ``m``: ``min_user_interactions``, ``sigma``:
   ``activity_sigma``).
6. **Time**: the log covers ``days`` days from ``start`` (UTC). Activity has the intensity
   :math:`\lambda(t) = (1 + A_d \cos(2\pi (h(t) - h^*) / 24)) (1 + B\,[t \text{ on a
   weekend}])` (``A_d``: ``daily_amplitude``, :math:`h^*`: ``peak_hour``, ``B``:
   ``weekend_boost``; h(t) the hour of the day), with :math:`\Lambda(t) = \int_{t_0}^t
   \lambda`. User u is active in a window :math:`[s_u, e_u]` of length :math:`L_u =
   \max(7\,\mathrm{days},\ n_u \cdot 60\,\mathrm{s},\ D \cdot \mathrm{Beta}(0.8, 1.2))`
   (D the log's length) placed uniformly in the log. Event j of user u (j = 0..n_u-1) is at
   :math:`t_{uj} = \Lambda^{-1}(\Lambda(s_u) + (j + v_{uj}) (\Lambda(e_u) - \Lambda(s_u)) /
   n_u)`, :math:`v_{uj} \sim U(0, 1)`: stratified draws of the inhomogeneous Poisson process,
   so the daily and weekly cycles show, and, rounded to whole seconds inside their stratum,
   a user's events have strictly increasing timestamps (no two rows collide by accident).
7. **Releases**: a share ``back_catalogue`` of the items is released (at midnight UTC) in the
   5 years before the log, the others uniformly during it; the earliest release is at the
   latest the log's start. No event is before its item's release (step 4).
8. **Event types and ratings**: each event's type is drawn with ``event_shares``; rows of
   ``rated_events`` carry the rating :math:`\mathrm{clip}(\mathrm{round}(1.5 + 3.5\,A(u,i) /
   \max_k \theta_{uk} + N(0, 0.6^2)), 1, 5)`: users rate the items of their clusters higher.
9. **Attributes**: each cluster has an age mean (22-60), a share of women, a distribution
   over occupations and over regions; a user's attributes are drawn from the distributions of
   their dominant cluster :math:`\arg\max_k \theta_{uk}` (age :math:`\sim N(\mu_k, 8^2)`,
   clipped to 16-80). Each cluster has two home genres and its own vocabulary of 30 invented words;
   an item's genres are its cluster's first home genre, the second with probability 0.6 and a
   random genre with probability 0.25; its title (2-4 words) and description (6-10 words)
   take each word from its cluster's vocabulary with probability 0.75, else from shared words.
10. **Defects**: ``floor(duplicate_share * R)`` exact copies of events and (CSV)
    ``floor(malformed_share * R)`` malformed lines (an event's line with its last field cut,
    with an extra field, or replaced by a line of text without separators) are planted; rows
    are shuffled within each block, as exports are not sorted.

**Determinism**: the parameters (steps 1-3, 5-7) draw from ``default_rng([seed, 0])``, the
attributes and texts (step 9) from ``default_rng([seed, 0, 1])``. Events are generated in
blocks of ``block_events`` (event e belongs to block ``e // block_events``; users are laid out
one after another, event e being event j of the user u with :math:`\sum_{v<u} n_v \le e`);
block b draws from ``default_rng([seed, b + 1])``, its defects from ``default_rng([seed, b + 1,
1])``, and its share of the planted defects is :math:`\lfloor p\,e_{end} \rfloor - \lfloor
p\,e_{start} \rfloor`. The rows depend on the settings only, never on the machine or on
``write_rows`` (how many rows are buffered per Parquet row group / CSV write); memory is bounded
by one block plus one write buffer per file.

**Oracle**: :func:`oracle_scores` gives :math:`P(i \mid u)` over the whole catalogue, from the
saved parameters: a rough ceiling for any model (at a given time, the released items keep the
same order).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from personalize.config.data import FILE_OPTIONS, DataConfig, InteractionSource, TableSource
from personalize.config.synthetic import SyntheticConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError, DataError
from personalize.core.paths import cache_dir

VERSION = 1  # of the generative process: bumped when the same settings would give other rows
PARAMS_FILE = "params.npz"
META_FILE = "generator.json"
WRITE_ROWS = 1_000_000  # rows per Parquet row group / per CSV write, by default
DAY = 86_400
MIN_SECONDS_PER_EVENT = 60  # a user's window holds at least one minute per event
BACK_CATALOGUE_YEARS = 5
ATTRIBUTE_COLUMNS = ("age", "gender", "occupation", "region")
OCCUPATIONS = (
    "student", "engineer", "educator", "artist", "healthcare", "sales",
    "technician", "writer", "administrator", "retired", "executive", "other",
)  # fmt: skip
REGIONS = ("north", "south", "east", "west", "central", "coastal", "mountain", "islands")
GENRES = (
    "action", "adventure", "animation", "comedy", "crime", "documentary", "drama", "family",
    "fantasy", "history", "horror", "music", "mystery", "romance", "science", "sport",
    "thriller", "travel",
)  # fmt: skip
SHARED_WORDS = (
    "the", "of", "night", "story", "last", "new", "day", "home", "world", "little",
    "great", "road", "city", "light", "time", "house", "river", "second", "winter", "summer",
)  # fmt: skip
_SYLLABLES = (
    "ka", "lo", "mi", "ren", "ta", "vo", "shi", "dar", "ne", "pol", "qui", "ras", "tem",
    "ul", "bri", "zan", "fe", "gor", "hal", "jin", "mor", "sel", "tu", "wex", "yor", "ek",
)  # fmt: skip


# ------------------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class GeneratorParams:
    """The latent parameters of one generated log (user ``u`` is ID ``u + 1``, item ``i`` ID
    ``i + 1``); see the module doc for their meaning."""

    theta: np.ndarray  # (U, K) user mixtures over clusters, rows sum to 1
    phi: np.ndarray  # (I, K) item cluster profiles, rows sum to 1
    popularity: np.ndarray  # (I,) base popularity pi, sums to 1
    popularity_weight: float  # a
    item_cluster: np.ndarray  # (I,) g_i
    release: np.ndarray  # (I,) release time, epoch seconds (midnight UTC)
    activity: np.ndarray  # (U,) n_u, events per user
    window_start: np.ndarray  # (U,) s_u, epoch seconds
    window_end: np.ndarray  # (U,) e_u, epoch seconds

    _ARRAYS = (
        "theta", "phi", "popularity", "item_cluster", "release", "activity", "window_start", "window_end",
    )  # fmt: skip

    @property
    def user_ids(self) -> np.ndarray:
        return np.arange(1, len(self.theta) + 1, dtype=np.int64)

    @property
    def item_ids(self) -> np.ndarray:
        return np.arange(1, len(self.phi) + 1, dtype=np.int64)

    def save(self, path: Path) -> None:
        """Write the parameters as a NumPy ``.npz`` archive."""
        np.savez(
            path,
            popularity_weight=np.float64(self.popularity_weight),
            **{name: getattr(self, name) for name in self._ARRAYS},
        )

    @classmethod
    def load(cls, path: str | Path) -> GeneratorParams:
        """Read parameters saved by :meth:`save` (a file, or the generated folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / PARAMS_FILE
        if not path.is_file():
            raise DataError(f"generator parameters not found: {path}")
        with np.load(path) as z:
            missing = [n for n in (*cls._ARRAYS, "popularity_weight") if n not in z.files]
            if missing:
                raise DataError(f"generator parameters {path}: missing arrays {missing}")
            return cls(popularity_weight=float(z["popularity_weight"]), **{n: z[n] for n in cls._ARRAYS})

    def fingerprint(self) -> str:
        """SHA-256 over the arrays (name, dtype, shape, bytes) and the popularity weight."""
        digest = hashlib.sha256(repr(float(self.popularity_weight)).encode())
        for name in self._ARRAYS:
            a = np.ascontiguousarray(getattr(self, name))
            digest.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
            digest.update(a.tobytes())
        return digest.hexdigest()


def oracle_scores(params: GeneratorParams, users: ArrayLike, items: ArrayLike) -> np.ndarray:
    """The generating probability :math:`P(i \\mid u) = \\pi_i^a A(u, i) / \\sum_j \\pi_j^a
    A(u, j)` (module doc) of each of ``items`` (IDs) for each of ``users`` (IDs), normalised
    over the whole catalogue: a (len(users), len(items)) float64 matrix. DataError for an ID
    the generator did not make."""
    u = _positions(users, len(params.theta), "user")
    i = _positions(items, len(params.phi), "item")
    w = params.phi * (params.popularity**params.popularity_weight)[:, None]  # (I, K)
    norm = params.theta[u] @ w.sum(axis=0)  # (users,)
    return (params.theta[u] @ w[i].T) / norm[:, None]


def _positions(ids: ArrayLike, n: int, kind: str) -> np.ndarray:
    values = np.asarray(ids)
    if values.dtype.kind not in "iu":
        try:
            values = values.astype(np.int64)
        except (TypeError, ValueError):
            raise DataError(
                f"{kind} IDs of a synthetic log are integers 1..{n}, got {values[:3]!r}"
            ) from None
    pos = values.astype(np.int64) - 1
    bad = (pos < 0) | (pos >= n)
    if bad.any():
        raise DataError(f"{kind} ID {values[bad][0]} was not generated (IDs are 1..{n})")
    return pos


def draw_params(config: SyntheticConfig) -> GeneratorParams:
    """Steps 1-3 and 5-7 of the module doc, from ``default_rng([seed, 0])``."""
    rng = np.random.default_rng([config.seed, 0])
    n_users, n_items, k = config.n_users, config.n_items, config.clusters
    t0, t1 = _period(config)
    # 1. popularity
    ranks = rng.permutation(n_items) + 1
    pop = ranks.astype(np.float64) ** -config.popularity_zipf
    pop /= pop.sum()
    # 2. item profiles
    rho = rng.dirichlet(np.full(k, 5.0))
    cluster = rng.choice(k, size=n_items, p=rho)
    phi = (1 - config.item_focus) * _dirichlet(rng, 1.0, (n_items, k))
    phi[np.arange(n_items), cluster] += config.item_focus
    # 3. user tastes
    theta = _dirichlet(rng, config.user_concentration, (n_users, k))
    # 5. activity
    x = rng.lognormal(0.0, config.activity_sigma, size=n_users)
    activity = _allocate(config.interactions, config.min_user_interactions, x)
    # 6. windows
    period = float(t1 - t0)
    need = activity.astype(np.float64) * MIN_SECONDS_PER_EVENT
    if need.max() > period:
        raise ConfigError(
            f"data.synthetic: a user with {int(activity.max())} events needs at least "
            f"{MIN_SECONDS_PER_EVENT} s per event, more than the {config.days} days of the log "
            "(raise days or users, or lower activity_sigma)"
        )
    length = np.maximum(np.maximum(7.0 * DAY, need), period * rng.beta(0.8, 1.2, size=n_users))
    length = np.minimum(length, period)
    start = t0 + rng.random(n_users) * (period - length)
    # 7. releases (midnight UTC)
    back = rng.random(n_items) < config.back_catalogue
    back_days = rng.integers(1, BACK_CATALOGUE_YEARS * 365 + 1, size=n_items)
    during_days = rng.integers(0, config.days, size=n_items)
    release = np.where(back, t0 - back_days * DAY, t0 + during_days * DAY).astype(np.int64)
    first = int(np.argmin(release))
    release[first] = min(int(release[first]), t0)
    return GeneratorParams(
        theta=theta,
        phi=phi,
        popularity=pop,
        popularity_weight=config.popularity_weight,
        item_cluster=cluster.astype(np.int64),
        release=release,
        activity=activity,
        window_start=start,
        window_end=start + length,
    )


def _dirichlet(rng: np.random.Generator, alpha: float, shape: tuple[int, int]) -> np.ndarray:
    """Rows from Dir(alpha 1_K) by normalised gammas (a tiny floor keeps every row positive)."""
    g = rng.gamma(alpha, 1.0, size=shape) + 1e-12
    return g / g.sum(axis=1, keepdims=True)


def _allocate(total: int, minimum: int, weights: np.ndarray) -> np.ndarray:
    """``minimum`` each plus ``total - minimum * n`` spread in proportion to ``weights``
    (largest remainders, ties to the lower index): sums to ``total`` exactly."""
    extra = total - minimum * len(weights)
    share = weights / weights.sum() * extra
    base = np.floor(share).astype(np.int64)
    left = extra - int(base.sum())
    order = np.argsort(-(share - base), kind="stable")
    base[order[:left]] += 1
    return base + minimum


def _period(config: SyntheticConfig) -> tuple[int, int]:
    t0 = int(pd.Timestamp(config.start, tz="UTC").timestamp())
    return t0, t0 + config.days * DAY


# ------------------------------------------------------------------------------ time


@dataclass(frozen=True)
class _Clock:
    """The cumulative intensity Lambda on an hourly grid (exact for an hourly-constant lambda)."""

    knots: np.ndarray  # epoch seconds of the hour boundaries
    cumulative: np.ndarray  # Lambda at the knots

    @classmethod
    def build(cls, config: SyntheticConfig) -> _Clock:
        t0, t1 = _period(config)
        hours = np.arange((t1 - t0) // 3600)
        at = pd.to_datetime(t0 + hours * 3600, unit="s", utc=True)
        hour = at.hour.to_numpy() + 0.5  # the intensity at the middle of the hour
        weekend = at.day_of_week.to_numpy() >= 5
        rate = (1 + config.daily_amplitude * np.cos(2 * np.pi * (hour - config.peak_hour) / 24)) * (
            1 + config.weekend_boost * weekend
        )
        cumulative = np.concatenate([[0.0], np.cumsum(rate * 3600.0)])
        return cls(t0 + np.arange(len(hours) + 1, dtype=np.float64) * 3600, cumulative)

    def forward(self, t: np.ndarray) -> np.ndarray:
        return np.interp(t, self.knots, self.cumulative)

    def inverse(self, q: np.ndarray) -> np.ndarray:
        return np.interp(q, self.cumulative, self.knots)


# ------------------------------------------------------------------------------ tables


def _vocabularies(rng: np.random.Generator, k: int) -> list[list[str]]:
    """K disjoint vocabularies of 30 invented words (2-3 syllables)."""
    words, used = [], set(SHARED_WORDS)
    for _ in range(k):
        vocab: list[str] = []
        while len(vocab) < 30:
            n = int(rng.integers(2, 4))
            word = "".join(_SYLLABLES[j] for j in rng.integers(0, len(_SYLLABLES), size=n))
            if word not in used:
                vocab.append(word)
                used.add(word)
        words.append(vocab)
    return words


def _text(rng: np.random.Generator, vocab: list[str], low: int, high: int) -> str:
    n = int(rng.integers(low, high + 1))
    own = rng.random(n) < 0.75
    picks = [
        vocab[int(rng.integers(len(vocab)))] if o else SHARED_WORDS[int(rng.integers(len(SHARED_WORDS)))]
        for o in own
    ]
    return " ".join(picks)


def _tables(config: SyntheticConfig, params: GeneratorParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The users and items tables (step 9), from ``default_rng([seed, 0, 1])``."""
    rng = np.random.default_rng([config.seed, 0, 1])
    k = config.clusters
    age_mean = rng.uniform(22, 60, size=k)
    women = rng.uniform(0.2, 0.8, size=k)
    occupation = rng.dirichlet(np.full(len(OCCUPATIONS), 0.5), size=k)
    region = rng.dirichlet(np.full(len(REGIONS), 1.0), size=k)
    home = np.array([rng.choice(len(GENRES), size=2, replace=False) for _ in range(k)])
    vocab = _vocabularies(rng, k)

    dominant = params.theta.argmax(axis=1)
    n_users = len(dominant)
    age = np.clip(np.round(rng.normal(age_mean[dominant], 8.0)), 16, 80).astype(np.int64)
    gender = np.where(rng.random(n_users) < women[dominant], "F", "M")
    users = pd.DataFrame(
        {
            C.USER: params.user_ids,
            C.AGE: age,
            C.GENDER: gender,
            C.OCCUPATION: [OCCUPATIONS[_pick(rng, occupation[c])] for c in dominant],
            "region": [REGIONS[_pick(rng, region[c])] for c in dominant],
        }
    )
    genres, titles, descriptions = [], [], []
    for g in params.item_cluster:
        chosen = {GENRES[home[g, 0]]}
        if rng.random() < 0.6:
            chosen.add(GENRES[home[g, 1]])
        if rng.random() < 0.25:
            chosen.add(GENRES[int(rng.integers(len(GENRES)))])
        genres.append("|".join(sorted(chosen)))
        titles.append(_text(rng, vocab[g], 2, 4).title())
        descriptions.append(_text(rng, vocab[g], 6, 10))
    released = pd.to_datetime(params.release, unit="s", utc=True)
    items = pd.DataFrame(
        {
            C.ITEM: params.item_ids,
            C.TITLE: titles,
            C.YEAR: released.year.to_numpy().astype(np.int64),
            "released": released.strftime("%Y-%m-%d"),
            C.GENRES: genres,
            "description": descriptions,
        }
    )
    return users, items


def _pick(rng: np.random.Generator, p: np.ndarray) -> int:
    return int(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right").clip(0, len(p) - 1))


# ------------------------------------------------------------------------------ events


@dataclass(frozen=True)
class _Model:
    """What every block needs, computed once from the parameters."""

    config: SyntheticConfig
    params: GeneratorParams
    clock: _Clock
    offsets: np.ndarray  # (U + 1,) first event of each user
    order: np.ndarray  # items in release order
    release_sorted: np.ndarray
    cumulative: np.ndarray  # (K, I + 1) C_k: cumulative w_ik over items in release order
    events: tuple[str, ...]
    event_cdf: np.ndarray

    @classmethod
    def build(cls, config: SyntheticConfig, params: GeneratorParams) -> _Model:
        order = np.argsort(params.release, kind="stable")
        w = params.phi[order] * (params.popularity[order] ** params.popularity_weight)[:, None]
        cumulative = np.concatenate([np.zeros((1, config.clusters)), np.cumsum(w, axis=0)]).T.copy()
        shares = np.array(list(config.event_shares.values()))
        return cls(
            config,
            params,
            _Clock.build(config),
            np.concatenate([[0], np.cumsum(params.activity)]),
            order,
            params.release[order],
            cumulative,
            tuple(config.event_shares),
            np.cumsum(shares) / shares.sum(),
        )

    def block(self, b: int) -> dict[str, pd.DataFrame]:
        """Events ``[b * B, min(R, (b + 1) * B))`` by event type (user_id, item_id, timestamp,
        [rating]), before defects are planted."""
        cfg, p = self.config, self.params
        lo = b * cfg.block_events
        hi = min(cfg.interactions, lo + cfg.block_events)
        rng = np.random.default_rng([cfg.seed, b + 1])
        e = np.arange(lo, hi, dtype=np.int64)
        u = np.searchsorted(self.offsets, e, side="right") - 1
        j = (e - self.offsets[u]).astype(np.float64)
        n = p.activity[u].astype(np.float64)
        # 6. stratified times, whole seconds, strictly increasing per user
        q0 = self.clock.forward(p.window_start[u])
        span = self.clock.forward(p.window_end[u]) - q0
        lower = self.clock.inverse(q0 + j / n * span)
        upper = self.clock.inverse(q0 + (j + 1) / n * span)
        if (upper - lower < 1.0).any():  # pragma: no cover - prevented by the window's minimum length
            raise ConfigError("data.synthetic: a user's events are less than a second apart (raise days)")
        t = self.clock.inverse(q0 + (j + rng.random(len(e))) / n * span)
        t = np.maximum(np.floor(t), np.ceil(lower)).astype(np.int64)
        # 4. cluster, then item among the items released by t
        released = np.searchsorted(self.release_sorted, t, side="right")
        weights = p.theta[u] * self.cumulative[:, released].T  # (events, K)
        cdf = np.cumsum(weights, axis=1)
        k = (cdf < (rng.random(len(e)) * cdf[:, -1])[:, None]).sum(axis=1).clip(0, cfg.clusters - 1)
        x = rng.random(len(e)) * self.cumulative[k, released]
        pos = np.empty(len(e), dtype=np.int64)
        for c in np.unique(k):
            at = k == c
            pos[at] = np.searchsorted(self.cumulative[c], x[at], side="right") - 1
        pos = np.minimum(np.maximum(pos, 0), released - 1)
        item = self.order[pos]
        # 8. event types and ratings
        kind = np.searchsorted(self.event_cdf, rng.random(len(e)), side="right").clip(0, len(self.events) - 1)
        affinity = np.einsum("ek,ek->e", p.theta[u], p.phi[item]) / p.theta[u].max(axis=1)
        rating = np.clip(np.round(1.5 + 3.5 * affinity + rng.normal(0.0, 0.6, len(e))), 1, 5).astype(np.int64)
        out = {}
        for code, name in enumerate(self.events):
            at = kind == code
            frame = pd.DataFrame({C.USER: u[at] + 1, C.ITEM: item[at] + 1, C.TIMESTAMP: t[at]})
            if name in cfg.rated_events:
                frame[C.RATING] = rating[at]
            out[name] = frame
        return out

    def defects(self, b: int, frames: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], dict]:
        """Plant the block's duplicates, shuffle each file's rows, and (CSV) choose the malformed
        lines: (frames, {event: (positions, lines)})."""
        cfg = self.config
        lo = b * cfg.block_events
        hi = min(cfg.interactions, lo + cfg.block_events)
        rng = np.random.default_rng([cfg.seed, b + 1, 1])
        sizes = np.array([len(frames[e]) for e in self.events])
        starts = np.concatenate([[0], np.cumsum(sizes)])
        n_dup = _share_count(cfg.duplicate_share, lo, hi)
        n_bad = _share_count(cfg.malformed_share, lo, hi)
        dup = rng.choice(hi - lo, size=min(n_dup, hi - lo), replace=False)
        bad = rng.choice(hi - lo, size=n_bad, replace=n_bad > hi - lo)
        variants = rng.integers(0, 3, size=n_bad)
        out, malformed = {}, {}
        for code, name in enumerate(self.events):
            frame = frames[name]
            mine = dup[(dup >= starts[code]) & (dup < starts[code + 1])] - starts[code]
            frame = pd.concat([frame, frame.iloc[np.sort(mine)]], ignore_index=True)
            frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
            out[name] = frame
            at = (bad >= starts[code]) & (bad < starts[code + 1])
            rows = frames[name].iloc[bad[at] - starts[code]]
            lines = []
            for values, variant in zip(rows.to_numpy(), variants[at], strict=True):
                fields = [str(v) for v in values]
                if variant == 0:
                    lines.append(",".join(fields[:-1]))  # a field too few
                elif variant == 1:
                    lines.append(",".join([*fields, "x"]))  # a field too many
                else:
                    lines.append("#" + "-".join(fields))  # no separator at all
            positions = np.sort(rng.choice(len(frame) + len(lines), size=len(lines), replace=False))
            malformed[name] = (positions, lines)
        return out, malformed


def _share_count(share: float, lo: int, hi: int) -> int:
    """Block [lo, hi)'s part of floor(share * R): floor(share * hi) - floor(share * lo)."""
    return int(np.floor(share * hi + 1e-9) - np.floor(share * lo + 1e-9))


# ------------------------------------------------------------------------------ writing


class _Sink:
    """One output file, written in chunks of ``write_rows`` rows (Parquet row groups; CSV text)."""

    def __init__(self, path: Path, fmt: str, columns: list[str], write_rows: int):
        self.path, self.fmt, self.columns, self.write_rows = path, fmt, columns, write_rows
        self.buffer: list[pd.DataFrame] = []
        self.lines: list[str] = []
        self.buffered = 0
        self.rows = 0  # data rows (CSV: lines) written
        self.writer = None
        if fmt == "csv":
            path.write_text(",".join(columns) + "\n")

    def add(self, frame: pd.DataFrame, malformed: tuple[np.ndarray, list[str]] | None = None) -> None:
        if self.fmt == "csv":
            text = frame.to_csv(index=False, header=False, lineterminator="\n")
            lines = text.splitlines() if len(frame) else []
            if malformed is not None and malformed[1]:
                merged = np.empty(len(lines) + len(malformed[1]), dtype=object)
                is_bad = np.zeros(len(merged), dtype=bool)
                is_bad[malformed[0]] = True
                merged[is_bad] = malformed[1]
                merged[~is_bad] = lines
                lines = merged.tolist()
            self.lines.extend(lines)
            self.buffered += len(lines)
        else:
            self.buffer.append(frame)
            self.buffered += len(frame)
        while self.buffered >= self.write_rows:
            self._flush(self.write_rows)

    def close(self) -> None:
        while self.buffered:
            self._flush(min(self.buffered, self.write_rows))
        if self.writer is not None:
            self.writer.close()
        elif self.fmt == "parquet":  # no row at all: an empty file with the schema
            pd.DataFrame({c: pd.Series(dtype="int64") for c in self.columns}).to_parquet(
                self.path, index=False
            )

    def _flush(self, n: int) -> None:
        if self.fmt == "csv":
            with self.path.open("a", newline="") as f:
                f.write("\n".join(self.lines[:n]) + "\n")
            del self.lines[:n]
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            frame = pd.concat(self.buffer, ignore_index=True) if len(self.buffer) > 1 else self.buffer[0]
            table = pa.Table.from_pandas(frame.iloc[:n], preserve_index=False)
            if self.writer is None:
                self.writer = pq.ParquetWriter(self.path, table.schema)
            self.writer.write_table(table, row_group_size=n)
            self.buffer = [frame.iloc[n:].reset_index(drop=True)] if n < len(frame) else []
        self.buffered -= n
        self.rows += n


@dataclass(frozen=True)
class SyntheticLog:
    """A generated folder: its files and ``generator.json`` (settings, counts, fingerprint)."""

    folder: Path
    meta: dict

    @classmethod
    def open(cls, folder: str | Path) -> SyntheticLog:
        """The log in ``folder``; DataError when it is not a complete generated folder."""
        folder = Path(folder)
        path = folder / META_FILE
        if not path.is_file():
            raise DataError(f"{folder} is not a generated log: {META_FILE} is missing")
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON: {exc}") from None
        missing = [f["path"] for f in meta.get("files", {}).values() if not (folder / f["path"]).is_file()]
        if not meta.get("complete") or missing or not (folder / PARAMS_FILE).is_file():
            raise DataError(f"{folder} is an incomplete generated log (missing: {missing or PARAMS_FILE})")
        return cls(folder, meta)

    @property
    def settings(self) -> SyntheticConfig:
        return SyntheticConfig(**self.meta["settings"])

    @property
    def files(self) -> dict[str, Path]:
        """File name (users, items, one per event type) -> path."""
        return {name: self.folder / f["path"] for name, f in self.meta["files"].items()}

    def params(self) -> GeneratorParams:
        return GeneratorParams.load(self.folder / PARAMS_FILE)

    def data_config(self, options: DataConfig | None = None) -> DataConfig:
        """The ``data:`` block (``source: files``) reading this folder: users, items and one
        interaction source per event type, keeping the options of ``options`` that apply to
        any files (name, timestamps, conflicts, events, seen, sample_users, write_processed,
        privacy, merge_duplicate_items)."""
        files = self.meta["files"]
        kept = (options or DataConfig()).model_dump(include={*FILE_OPTIONS, "name", "privacy"})
        kept["name"] = kept.get("name") or f"synthetic-{self.meta['key'][:10]}"
        return DataConfig(
            source="files",
            users=TableSource(path=self.folder / files["users"]["path"]),
            items=TableSource(path=self.folder / files["items"]["path"]),
            interactions=[
                InteractionSource(path=self.folder / f["path"], name=name, event=f["event"])
                for name, f in files.items()
                if f["role"] == "interactions"
            ],
            rating_range=(1, 5),
            **kept,
        )


def generate(
    config: SyntheticConfig,
    folder: str | Path,
    write_rows: int = WRITE_ROWS,
    progress: Callable[[int, int], None] | None = None,
) -> SyntheticLog:
    """Generate the log of ``config`` into ``folder`` (which must not exist yet): written into
    a temporary sibling folder, renamed at the end, so that ``folder`` is complete or absent.
    ``write_rows``: rows per Parquet row group / CSV write (the rows do not depend on it).
    ``progress``: called with (events done, events) after each block."""
    if write_rows < 1:
        raise ConfigError(f"write_rows must be at least 1, got {write_rows}")
    folder = Path(folder)
    if folder.exists():
        raise DataError(f"{folder} already exists; remove it or choose another folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        meta = _write(config, tmp, write_rows, progress)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SyntheticLog(folder, meta)


def _write(
    config: SyntheticConfig, folder: Path, write_rows: int, progress: Callable[[int, int], None] | None
) -> dict:
    params = draw_params(config)
    params.save(folder / PARAMS_FILE)
    users, items = _tables(config, params)
    ext = config.format
    files: dict[str, dict] = {}
    for name, table in (("users", users), ("items", items)):
        sink = _Sink(folder / f"{name}.{ext}", ext, list(table.columns), write_rows)
        sink.add(table)
        sink.close()
        files[name] = {"path": sink.path.name, "role": name, "rows": sink.rows}
    model = _Model.build(config, params)
    sinks = {
        e: _Sink(
            folder / f"{e}.{ext}",
            ext,
            [C.USER, C.ITEM, C.TIMESTAMP, *([C.RATING] if e in config.rated_events else [])],
            write_rows,
        )
        for e in model.events
    }
    counts = {e: {"events": 0, "duplicates": 0, "malformed": 0} for e in model.events}
    blocks = -(-config.interactions // config.block_events)
    for b in range(blocks):
        frames = model.block(b)
        for e, frame in frames.items():
            counts[e]["events"] += len(frame)
        planted, malformed = model.defects(b, frames)
        for e in model.events:
            counts[e]["duplicates"] += len(planted[e]) - len(frames[e])
            counts[e]["malformed"] += len(malformed[e][1])
            sinks[e].add(planted[e], malformed[e] if ext == "csv" else None)
        if progress is not None:
            progress(min(config.interactions, (b + 1) * config.block_events), config.interactions)
    for e, sink in sinks.items():
        sink.close()
        files[e] = {
            "path": sink.path.name,
            "role": "interactions",
            "event": e,
            "rows": sink.rows,
            **counts[e],
        }
    return {
        "generator_version": VERSION,
        "settings": config.settings(),
        "key": config.key(),
        "params_fingerprint": params.fingerprint(),
        "files": files,
        "totals": {
            "users": len(users),
            "items": len(items),
            "events": sum(c["events"] for c in counts.values()),
            "duplicates": sum(c["duplicates"] for c in counts.values()),
            "malformed": sum(c["malformed"] for c in counts.values()),
        },
        "complete": True,
    }


# ------------------------------------------------------------------------------ the cache


def synthetic_root() -> Path:
    """Where ``data.source: synthetic`` keeps generated logs: ``data/cache/synthetic/`` (derived
    data, safe to delete, never committed)."""
    return cache_dir() / "synthetic"


def cache_folder(config: SyntheticConfig) -> Path:
    """The cache folder of ``config``: ``data/cache/synthetic/v<version>-<key>`` (the settings'
    SHA-256, shortened)."""
    return synthetic_root() / f"v{VERSION}-{config.key()[:16]}"


def ensure_generated(config: SyntheticConfig, write_rows: int = WRITE_ROWS) -> SyntheticLog:
    """The cached log of ``config``, generated first when absent. A cached folder is reused when
    complete with the same settings; one that is not (an interrupted copy, other settings) is
    replaced."""
    folder = cache_folder(config)
    if folder.exists():
        try:
            log = SyntheticLog.open(folder)
            if log.meta["settings"] == config.settings() and log.meta["generator_version"] == VERSION:
                return log
        except (DataError, KeyError):
            pass
        shutil.rmtree(folder)
    try:
        return generate(config, folder, write_rows)
    except DataError:
        if folder.exists():  # another process generated it meanwhile
            return SyntheticLog.open(folder)
        raise


def synthetic_data_config(data: DataConfig) -> DataConfig:
    """``data`` with ``source: synthetic`` as the ``source: files`` block reading its generated
    (or cached) files, with the options that apply to any files kept."""
    if data.source != "synthetic":
        raise ConfigError(f"data.source is {data.source!r}, not 'synthetic'")
    log = ensure_generated(data.synthetic or SyntheticConfig())
    return log.data_config(data)
