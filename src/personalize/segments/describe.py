"""Segments a person can read: what each segment is, a name by rule, what to show it, a map.

Segment labels are an input here (``pd.Series`` user_id -> segment, an integer). The
*population* every lift is measured against is the labelled users: users of the profile table or
of the training data without a label take no part (a description of segments describes the
users that were segmented).

Lift, the one measure of over-representation used throughout::

    lift(x, segment) = share of x in the segment / share of x in the population

for a demographic value x the shares are of users; for a genre or an item they are of
consumption (training interaction rows; an item with n genres counts 1/n for each). A lift of 2
means "twice as common in the segment as among all users"; 1 means "as common".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from personalize import plotting as P
from personalize.config.segments import DescribeConfig
from personalize.core import columns as C
from personalize.core.errors import DataError
from personalize.data.matrix import InteractionData
from personalize.features.items import genre_one_hot
from personalize.features.profile_table import ProfileTable

ACTIVITY_LEVELS = ("light", "regular", "heavy")
DEMOGRAPHIC_ATTRIBUTES = ("age_bucket", "gender", "occupation")
# values that say nothing about who the users are: never called over-represented
UNINFORMATIVE = frozenset({"unknown", "other", "none", ""})
_AGENT_SUFFIXES = ("er", "or", "ist", "ian", "ive", "ant", "ent")


@dataclass(frozen=True)
class Share:
    """One value of an attribute in a segment: its share there and its lift (module doc)."""

    value: str
    share: float
    lift: float

    def __str__(self) -> str:
        return f"{self.value} ({self.share:.0%}, x{self.lift:.2f})"


# --------------------------------------------------------------------------------- input checks


def _show(value) -> str:
    """A user ID or value as it reads in an error message (numpy scalars as Python ones)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _check_labels(labels: pd.Series) -> pd.Series:
    """The labels as int64, or a DataError naming the first bad user."""
    if not isinstance(labels, pd.Series):
        raise DataError(f"labels: expected a pandas Series user_id -> segment, got {type(labels).__name__}")
    if labels.empty:
        raise DataError("labels: no users (expected a Series user_id -> segment with at least one row)")
    repeated = labels.index[labels.index.duplicated()]
    if len(repeated):
        raise DataError(f"labels: user {_show(repeated[0])} appears more than once (one segment per user)")
    missing = labels.index[labels.isna().to_numpy()]
    if len(missing):
        raise DataError(f"labels: user {_show(missing[0])} has no segment (expected an integer)")
    values = pd.to_numeric(labels, errors="coerce")
    numeric = values.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(numeric) | (numeric != np.round(numeric))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"labels: user {_show(labels.index[first])} has segment {_show(labels.iloc[first])}, "
            "expected an integer"
        )
    return pd.Series(numeric.astype(np.int64), index=labels.index, name="segment")


def _segment_codes(labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(sorted segment ids, each label's position among them)."""
    segments, codes = np.unique(labels.to_numpy(), return_inverse=True)
    return segments, codes


def _labelled_rows(labels: pd.Series, train: InteractionData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segments, and for the training rows of labelled users: their segment position and item index."""
    user_idx = train.index.user_index(labels.index)
    unknown = labels.index[user_idx < 0]
    if len(unknown):
        raise DataError(
            f"labels: {len(unknown)} users are not in the training data's user index, "
            f"e.g. {unknown[:5].tolist()}"
        )
    segments, codes = _segment_codes(labels)
    position = np.full(train.n_users, -1, dtype=np.int64)
    position[user_idx] = codes
    rows = position[train.frame[C.USER_IDX].to_numpy()]
    keep = rows >= 0
    return segments, rows[keep], train.frame[C.ITEM_IDX].to_numpy()[keep]


def _item_counts(segment_rows: np.ndarray, items: np.ndarray, n_segments: int, n_items: int) -> np.ndarray:
    """(segments x items) interaction rows."""
    flat = np.bincount(segment_rows * n_items + items, minlength=n_segments * n_items)
    return flat.reshape(n_segments, n_items).astype(np.float64)


def _lift(segment_counts: np.ndarray, population_counts: np.ndarray) -> np.ndarray:
    """Share in each segment over share in the population (NaN where the population has none).

    ``segment_counts``: (segments x things); ``population_counts``: (things,)."""
    seg_share = segment_counts / np.maximum(segment_counts.sum(axis=1, keepdims=True), 1e-300)
    pop_share = population_counts / max(float(population_counts.sum()), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pop_share > 0, seg_share / pop_share, np.nan)


def _titles(items: pd.DataFrame, item_idx: Sequence[int]) -> list[str]:
    """'Title (year)' of catalogue rows; 'item <id>' where the title is missing."""
    out = []
    for i in item_idx:
        row = items.iloc[int(i)]
        title = row.get(C.TITLE)
        text = str(title) if isinstance(title, str) and title else f"item {row[C.ITEM]}"
        year = row.get(C.YEAR)
        if year is not None and not pd.isna(year):
            text += f" ({int(year)})"
        out.append(text)
    return out


def _top(scores: np.ndarray, eligible: np.ndarray, n: int, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``n`` highest ``scores`` among ``eligible``; ties by ``tiebreak`` (higher
    first), then by index."""
    idx = np.flatnonzero(eligible)
    second = np.zeros(len(idx)) if tiebreak is None else -tiebreak[idx]
    order = np.lexsort((idx, second, -scores[idx]))
    return idx[order[:n]]


# --------------------------------------------------------------------------------- description


def describe_segments(
    labels: pd.Series,
    profiles: ProfileTable,
    train: InteractionData,
    config: DescribeConfig | None = None,
) -> pd.DataFrame:
    """One row per segment (index ``segment``, ascending) describing who its users are.

    Behaviour and demographics come from the profile table (one row per user; its log-scale
    columns turned back with ``expm1``), genres and items from ``train`` (the interactions the
    profile table was built from). The population is the labelled users (module doc).

    Columns:

    ``size``, ``share``
        users in the segment, and size / labelled users
    ``ages``, ``occupations``
        the ``top_demographics`` most common values in the segment: :class:`Share` (value, share
        of the segment's users, lift)
    ``genders``
        the gender split, every value, most common first (:class:`Share`)
    ``over_represented``
        ``(attribute, Share)`` of the demographic value (age bucket, gender or occupation) with
        the highest lift among values that hold at least ``min_demographic_share`` of the
        segment; values that say nothing (unknown, other, none) are never chosen. None if no
        value qualifies. Ties: larger share, then attribute order, then value.
    ``genres_by_lift``
        the ``top_genres`` genres of highest lift among genres that make at least
        ``min_genre_share`` of the segment's consumption (:class:`Share`; the share is of the
        segment's consumption, an item with n genres counting 1/n for each)
    ``genres_by_share``
        the ``top_genres`` largest genres of the segment's consumption (:class:`Share`)
    ``genre_lift``
        ``{genre: lift}`` of every genre the population consumed (for the heatmap)
    ``median_interactions``
        median training interactions per user
    ``activity``
        ``light`` / ``regular`` / ``heavy``: where ``median_interactions`` falls among the
        population's tertiles of interactions per user (t1, t2: the 1/3 and 2/3 quantiles):
        light if <= t1, regular if <= t2, heavy above
    ``median_recency_days``
        median days from a user's last interaction to the cut-off
    ``niche_share``
        mean share of a user's interactions on long-tail items
    ``rating_mean``
        mean of the users' mean ratings (NaN when the data has no ratings)
    ``typical_items``, ``typical_titles``
        the ``top_items`` items the segment consumed most (interaction rows; ties by item ID) and
        their titles ('Title (year)')
    """
    config = config or DescribeConfig()
    labels = _check_labels(labels)
    table = profiles.table
    absent = labels.index.difference(table.index)
    if len(absent):
        raise DataError(
            f"labels: {len(absent)} users are not in the profile table, e.g. {absent[:5].tolist()} "
            "(every labelled user needs a profile)"
        )
    table = table.loc[labels.index]
    segments, codes = _segment_codes(labels)
    n_seg = len(segments)
    sizes = np.bincount(codes, minlength=n_seg)

    interactions = np.rint(np.expm1(table["frequency"].to_numpy(dtype=np.float64)))
    recency = np.expm1(table["recency_days"].to_numpy(dtype=np.float64))
    t1, t2 = np.quantile(interactions, [1 / 3, 2 / 3])
    has_ratings = C.RATING in train.frame.columns

    seg_rows, seg_items = _labelled_rows(labels, train)[1:]
    item_counts = _item_counts(seg_rows, seg_items, n_seg, train.n_items)
    genres, names = genre_one_hot(train.items)
    genre_weight = genres / np.maximum(genres.sum(axis=1, keepdims=True), 1.0)
    genre_mass = item_counts @ genre_weight.astype(np.float64)  # (segments x genres)
    population_mass = genre_mass.sum(axis=0)
    genre_lift = _lift(genre_mass, population_mass)
    genre_share = genre_mass / np.maximum(genre_mass.sum(axis=1, keepdims=True), 1e-300)
    consumed_genres = population_mass > 0

    demo_values = {
        a: table[a].astype("string").fillna("unknown").to_numpy(dtype=object) for a in DEMOGRAPHIC_ATTRIBUTES
    }
    rows = []
    for s, segment in enumerate(segments):
        member = codes == s
        demo: dict[str, list[Share]] = {}
        for attribute in DEMOGRAPHIC_ATTRIBUTES:
            values = demo_values[attribute]
            population = pd.Series(values).value_counts(normalize=True)
            inside = pd.Series(values[member]).value_counts(normalize=True)
            shares = [Share(str(v), float(p), float(p / population[v])) for v, p in inside.items()]
            demo[attribute] = sorted(shares, key=lambda x: (-x.share, x.value))
        candidates = [
            (attribute, x)
            for attribute in DEMOGRAPHIC_ATTRIBUTES
            for x in demo[attribute]
            if x.value.lower() not in UNINFORMATIVE and x.share >= config.min_demographic_share
        ]
        candidates.sort(
            key=lambda ax: (-ax[1].lift, -ax[1].share, DEMOGRAPHIC_ATTRIBUTES.index(ax[0]), ax[1].value)
        )

        def genre_list(order: np.ndarray, s: int = s) -> list[Share]:
            return [Share(names[g], float(genre_share[s, g]), float(genre_lift[s, g])) for g in order]

        qualifying = consumed_genres & (genre_share[s] >= config.min_genre_share)
        by_lift = _top(np.nan_to_num(genre_lift[s]), qualifying, config.top_genres, genre_share[s])
        by_share = _top(genre_share[s], consumed_genres & (genre_mass[s] > 0), config.top_genres)
        typical = _top(item_counts[s], item_counts[s] > 0, config.top_items)
        median = float(np.median(interactions[member]))
        level = (
            ACTIVITY_LEVELS[0] if median <= t1 else ACTIVITY_LEVELS[1] if median <= t2 else ACTIVITY_LEVELS[2]
        )
        rows.append(
            {
                "segment": int(segment),
                "size": int(sizes[s]),
                "share": float(sizes[s] / len(labels)),
                "ages": demo["age_bucket"][: config.top_demographics],
                "occupations": demo["occupation"][: config.top_demographics],
                "genders": demo["gender"],
                "over_represented": candidates[0] if candidates else None,
                "genres_by_lift": genre_list(by_lift),
                "genres_by_share": genre_list(by_share),
                "genre_lift": {names[g]: float(genre_lift[s, g]) for g in np.flatnonzero(consumed_genres)},
                "median_interactions": median,
                "activity": level,
                "median_recency_days": float(np.median(recency[member])),
                "niche_share": float(table["niche_share"].to_numpy()[member].mean()),
                "rating_mean": float(table["rating_mean"].to_numpy()[member].mean())
                if has_ratings
                else np.nan,
                "typical_items": train.index.items[typical].tolist(),
                "typical_titles": _titles(train.items, typical),
            }
        )
    out = pd.DataFrame(rows).set_index("segment")
    out.attrs["activity_tertiles"] = (float(t1), float(t2))
    return out


def format_description(description: pd.DataFrame) -> pd.DataFrame:
    """The description as plain text, one row per segment (for a report or a notebook): lists
    joined with '; ', shares as percentages, lifts as 'x1.85'."""

    def join(items) -> str:
        return "; ".join(str(x) for x in items)

    out = pd.DataFrame(index=description.index)
    out["name"] = name_segments(description)
    out["users"] = [f"{n} ({s:.0%})" for n, s in zip(description["size"], description["share"])]
    out["top genres (lift)"] = description["genres_by_lift"].map(join)
    out["top genres (share)"] = description["genres_by_share"].map(join)
    out["activity"] = [
        f"{a} (median {m:g})" for a, m in zip(description["activity"], description["median_interactions"])
    ]
    out["recency (median days)"] = description["median_recency_days"].round(1)
    out["niche share"] = description["niche_share"].round(3)
    out["rating mean"] = description["rating_mean"].round(2)
    out["ages"] = description["ages"].map(join)
    out["occupations"] = description["occupations"].map(join)
    out["genders"] = description["genders"].map(join)
    out["over-represented"] = ["" if o is None else f"{o[0]} {o[1]}" for o in description["over_represented"]]
    out["typical items"] = description["typical_titles"].map(join)
    return out


# --------------------------------------------------------------------------------- names


def demographic_phrase(attribute: str, value: str) -> str:
    """How a demographic value reads in a name: age bucket -> 'aged 25-34' ('<18' -> 'aged
    under 18'); gender F / M -> 'women' / 'men' (other codes 'gender <code>'); occupation ->
    its plural when it names a person (ends in er, or, ist, ian, ive, ant, or ent but not ment:
    'students'; 'salesman' -> 'salesmen'), else '<occupation> users' ('retired users')."""
    if attribute == "age_bucket":
        return "aged " + (f"under {value[1:]}" if value.startswith("<") else value)
    if attribute == "gender":
        return {"f": "women", "female": "women", "m": "men", "male": "men"}.get(
            value.lower(), f"gender {value}"
        )
    word = value.strip()
    if word.endswith("man"):
        return word[:-3] + "men"
    if word.endswith(_AGENT_SUFFIXES) and not word.endswith("ment"):
        return word + "s"
    return f"{word} users"


def name_segments(description: pd.DataFrame, config: DescribeConfig | None = None) -> pd.Series:
    """A name per segment (index as ``description``), by this rule:

    1. The genre clause. <genre> is the segment's top genre by lift (``genres_by_lift``; its top
       genre by share when no genre qualifies for lift). If its lift is at least
       ``config.name_min_genre_lift`` the name starts ``"<genre> fans, "``; otherwise the
       segment's taste is not set apart by any genre and the name starts ``"Broad-taste "``.
       Without genre data there is no clause.
    2. ``"<activity> raters"``: the activity level (light / regular / heavy); "users" instead of
       "raters" when the data has no ratings.
    3. ``", often <demographic>"`` when the segment's most over-represented demographic value
       (``over_represented``) has a lift of at least ``config.name_min_lift``, phrased by
       :func:`demographic_phrase` (e.g. "often students", "often aged 18-24").

    E.g. "Horror fans, heavy raters, often students"; "Broad-taste light raters".

    Ties: while two or more segments share a name, each of them takes its next genre by lift
    into the genre clause ("Drama/Romance fans", then "Drama/Romance/War fans"; a broad-taste
    segment reads "Broad-taste (leaning Drama) ...", then "(leaning Drama/Romance)"); segments
    whose genres run out and are still tied get " (segment <id>)" appended, so names are always
    unique.
    """
    config = config or DescribeConfig()
    needed = ["activity", "rating_mean", "over_represented", "genres_by_lift", "genres_by_share"]
    absent = [c for c in needed if c not in description.columns]
    if absent:
        raise DataError(f"description: no column(s) {absent} (expected the table of describe_segments)")
    raters = "raters" if description["rating_mean"].notna().any() else "users"
    ranked: dict = {}
    strong: dict = {}
    for segment, row in description.iterrows():
        shares = list(row["genres_by_lift"]) or list(row["genres_by_share"])[:1]
        ranked[segment] = [x.value for x in shares]
        strong[segment] = bool(shares) and shares[0].lift >= config.name_min_genre_lift

    def name(segment, depth: int) -> str:
        row = description.loc[segment]
        text = f"{row['activity']} {raters}"
        over = row["over_represented"]
        if over is not None and over[1].lift >= config.name_min_lift:
            text += f", often {demographic_phrase(over[0], over[1].value)}"
        genres = ranked[segment]
        if genres and strong[segment]:
            text = f"{'/'.join(genres[:depth])} fans, {text}"
        elif genres:
            leaning = f"(leaning {'/'.join(genres[: depth - 1])}) " if depth > 1 else ""
            text = f"Broad-taste {leaning}{text}"
        return text[0].upper() + text[1:]

    def max_depth(segment) -> int:
        return len(ranked[segment]) + (0 if strong[segment] or not ranked[segment] else 1)

    depth = dict.fromkeys(description.index, 1)
    suffixed: set = set()
    while True:
        names = {
            s: name(s, depth[s]) + (f" (segment {s})" if s in suffixed else "") for s in description.index
        }
        counts = pd.Series(names).value_counts()
        tied = [s for s in description.index if counts[names[s]] > 1]
        if not tied:
            break
        for s in tied:
            if depth[s] < max_depth(s):
                depth[s] += 1
            else:
                suffixed.add(s)
    return pd.Series(names, name="name").reindex(description.index)


# --------------------------------------------------------------------------------- strategy


def content_strategy(
    labels: pd.Series,
    train: InteractionData,
    config: DescribeConfig | None = None,
    description: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """What to show each segment: one row per segment (index ``segment``, ascending).

    Item lists (item IDs and 'Title (year)' titles, ``config.top_items`` each; ties by item ID):

    ``top_items``
        the items the segment consumed most (training interaction rows)
    ``distinctive_items``
        the items of highest lift (module doc) among items with at least ``config.min_support``
        interactions in the segment (``distinctive_lift`` holds their lifts); ties by count
    ``new_items``
        "new to segment": the recently popular items the segment has consumed least relative to
        the population. Recently popular: the ``config.new_pool`` items with the most
        interactions of labelled users in the last ``config.new_window_days`` days before the
        training cut-off (ties by item ID). Of those, leaving out the segment's top and
        distinctive items, the ones of lowest lift over the whole training data (``new_lift``;
        0: the segment never consumed it); ties by recent interactions (more first), then item ID.

    ``strategy``: one line, ``"<name>: lead with <3 distinctive titles>; keep <2 top titles not
    already named> in view; introduce <2 new titles>."`` (a clause is left out when its list is
    empty; with no distinctive item the top titles lead). <name> comes from
    :func:`name_segments` of ``description`` when given, else "Segment <id>"; ``name`` holds it.
    """
    config = config or DescribeConfig()
    labels = _check_labels(labels)
    segments, seg_rows, seg_items = _labelled_rows(labels, train)
    n_seg, n_items = len(segments), train.n_items
    counts = _item_counts(seg_rows, seg_items, n_seg, n_items)
    population = counts.sum(axis=0)
    lift = np.nan_to_num(_lift(counts, population))
    recent = _recent_counts(labels, train, config.new_window_days)
    pool = _top(recent, recent > 0, config.new_pool)
    in_pool = np.zeros(n_items, dtype=bool)
    in_pool[pool] = True

    if description is not None:
        missing = set(segments.tolist()) - set(description.index.tolist())
        if missing:
            raise DataError(f"description: no row for segments {sorted(missing)} of the labels")
        names = name_segments(description, config)
    else:
        names = pd.Series({int(s): f"Segment {int(s)}" for s in segments})

    rows = []
    for s, segment in enumerate(segments):
        top = _top(counts[s], counts[s] > 0, config.top_items)
        distinctive = _top(lift[s], counts[s] >= config.min_support, config.top_items, counts[s])
        candidates = in_pool.copy()
        candidates[top] = False
        candidates[distinctive] = False
        # lowest lift first: rank by -lift, ties by more recent interactions
        new = _top(-lift[s], candidates, config.top_items, recent)
        top_titles = _titles(train.items, top)
        distinctive_titles = _titles(train.items, distinctive)
        new_titles = _titles(train.items, new)
        name = str(names.loc[segment])
        rows.append(
            {
                "segment": int(segment),
                "name": name,
                "top_items": train.index.items[top].tolist(),
                "top_titles": top_titles,
                "distinctive_items": train.index.items[distinctive].tolist(),
                "distinctive_titles": distinctive_titles,
                "distinctive_lift": [float(lift[s, i]) for i in distinctive],
                "new_items": train.index.items[new].tolist(),
                "new_titles": new_titles,
                "new_lift": [float(lift[s, i]) for i in new],
                "strategy": _strategy_line(name, top_titles, distinctive_titles, new_titles),
            }
        )
    return pd.DataFrame(rows).set_index("segment")


def _recent_counts(labels: pd.Series, train: InteractionData, days: float) -> np.ndarray:
    """Interactions per item of labelled users within ``days`` before the cut-off."""
    user_idx = train.index.user_index(labels.index)
    labelled = np.zeros(train.n_users, dtype=bool)
    labelled[user_idx] = True
    frame = train.frame
    window = (frame[C.TIMESTAMP] > train.cutoff - pd.Timedelta(days=days)).to_numpy()
    keep = window & labelled[frame[C.USER_IDX].to_numpy()]
    return np.bincount(frame[C.ITEM_IDX].to_numpy()[keep], minlength=train.n_items).astype(np.float64)


def _strategy_line(name: str, top: list[str], distinctive: list[str], new: list[str]) -> str:
    lead = distinctive[:3]
    keep = [t for t in top if t not in lead][:2]
    if not lead:
        lead, keep = keep, []
    clauses = []
    if lead:
        clauses.append(f"lead with {', '.join(lead)}")
    if keep:
        clauses.append(f"keep {', '.join(keep)} in view")
    if new[:2]:
        clauses.append(f"introduce {', '.join(new[:2])}")
    return f"{name}: {'; '.join(clauses) or 'no items to recommend'}."


# --------------------------------------------------------------------------------- figures


def segment_colours(segments: Sequence[int]) -> dict[int, tuple]:
    """One distinct colour per segment (in the order given): tab10 up to 10 segments, tab20 up
    to 20, evenly spaced turbo beyond."""
    import matplotlib

    n = len(segments)
    if n <= 10:
        cmap = matplotlib.colormaps["tab10"]
        colours = [cmap(i) for i in range(n)]
    elif n <= 20:
        cmap = matplotlib.colormaps["tab20"]
        colours = [cmap(i) for i in range(n)]
    else:
        cmap = matplotlib.colormaps["turbo"]
        colours = [cmap(v) for v in np.linspace(0.05, 0.95, n)]
    return dict(zip(segments, colours))


@P.house_style
def segment_map(
    x: np.ndarray,
    labels: pd.Series,
    method: str = "pca",
    names: pd.Series | None = None,
    seed: int = 0,
):
    """A 2-D map of users (rows of ``x``, aligned with ``labels``), coloured by segment.

    ``method="pca"`` (the default) projects on the first two principal components of ``x``: the
    map is linear and deterministic, and distances on it are (shrunken) distances of the space
    K-Means clustered in, so a segment's spread and the gaps between segments can be read off
    it; the axes say how much of the variance they keep. ``method="tsne"`` (scikit-learn
    t-SNE, PCA initialisation, perplexity min(30, (n - 1) / 3), ``seed``) keeps local
    neighbourhoods and so separates segments more clearly, but its distances and cluster sizes
    are not comparable with the clustering space: use it to see whether segments are
    neighbourhoods, not how far apart they are. ``names``: legend labels per segment (default
    'segment <id>').
    """
    x = np.asarray(x, dtype=np.float64)
    labels = _check_labels(labels)
    if x.ndim != 2 or x.shape[0] != len(labels):
        raise DataError(
            f"segment_map: x has shape {x.shape}, expected ({len(labels)}, features): a row per label"
        )
    if x.shape[0] < 3:
        raise DataError(f"segment_map: {x.shape[0]} users, expected at least 3 to draw a map")
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed)
        xy = pca.fit_transform(x)
        ratio = pca.explained_variance_ratio_
        xlabel, ylabel = (f"PC {j + 1} ({ratio[j]:.0%} of variance)" for j in range(2))
        what = "PCA"
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, (x.shape[0] - 1) / 3))
        xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
        xlabel, ylabel = "t-SNE 1 (no unit)", "t-SNE 2 (no unit)"
        what = "t-SNE"
    else:
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    segments = sorted(set(labels.tolist()))
    colours = segment_colours(segments)
    fig, axes = P.figure(height=5.0)
    ax = axes[0][0]
    values = labels.to_numpy()
    for segment in segments:
        member = values == segment
        label = names.loc[segment] if names is not None else f"segment {segment}"
        ax.scatter(
            xy[member, 0],
            xy[member, 1],
            s=10,
            alpha=0.7,
            color=colours[segment],
            linewidths=0,
            label=f"{label} ({member.sum()})",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"Users by segment ({what} of the profile space)")
    handles, texts = ax.get_legend_handles_labels()
    columns = 1 if max(len(t) for t in texts) > 40 else min(3, len(texts))
    fig.legend(
        handles, texts, title="segment (users)", loc="outside lower center", ncols=columns, markerscale=2
    )
    return fig


@P.house_style
def plot_segment_profiles(description: pd.DataFrame, names: pd.Series | None = None):
    """Segments side by side: left, a heatmap of genre lift (rows: segments; columns: the genres
    any segment lists by lift or by share, in order of first mention; colour log2 of the lift,
    so x2 and x0.5 are equally far from 1; cells annotated with the lift); right, median
    training interactions per user with the activity level and size. ``names``: row labels
    (default :func:`name_segments`, wrapped)."""
    import textwrap

    from matplotlib.colors import TwoSlopeNorm

    names = names if names is not None else name_segments(description)
    genres: list[str] = []
    for column in ("genres_by_lift", "genres_by_share"):
        for shares in description[column]:
            for x in shares:
                if x.value not in genres:
                    genres.append(x.value)
    if not genres:
        raise DataError("plot_segment_profiles: the description has no genres to compare segments on")
    lift = np.array([[row.get(g, np.nan) for g in genres] for row in description["genre_lift"]], dtype=float)
    with np.errstate(divide="ignore"):
        logged = np.log2(np.where(lift > 0, lift, np.nan))
    span = float(np.nanmax(np.abs(logged))) if np.isfinite(logged).any() else 1.0
    span = max(span, 0.1)
    n = len(description)
    fig, axes = P.figure(
        1,
        2,
        width=P.WIDTH + 1.5,
        height=P.rows_height(n, per_row=0.55, extra=2.2),
        gridspec_kw={"width_ratios": [3.2, 1.0]},
    )
    heat, bars = axes[0]
    image = heat.imshow(logged, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -span, span), aspect="auto")
    for i in range(n):
        for j in range(len(genres)):
            if np.isfinite(lift[i, j]):
                dark = abs(logged[i, j]) > 0.6 * span
                colour = "white" if dark else "black"
                heat.text(j, i, f"{lift[i, j]:.1f}", ha="center", va="center", fontsize=7, color=colour)
    row_labels = [textwrap.fill(str(names.loc[s]), 24) for s in description.index]
    heat.set_yticks(range(n), row_labels)
    heat.set_xticks(range(len(genres)), genres, rotation=45, ha="right")
    heat.set_xlabel("genre")
    heat.grid(False)
    heat.set_title("Genre lift (segment share / population share)")
    bar = fig.colorbar(image, ax=heat, shrink=0.8)
    bar.set_label("log2 lift")

    y = np.arange(n)
    colours = segment_colours(list(description.index))
    bars.barh(y, description["median_interactions"], color=[colours[s] for s in description.index])
    for yi, (level, size, median) in enumerate(
        zip(description["activity"], description["size"], description["median_interactions"])
    ):
        bars.text(median, yi, f" {level}, {size} users", va="center", fontsize=7.5)
    bars.set_yticks(y, [])
    bars.set_ylim(heat.get_ylim())
    bars.set_xlabel("median interactions per user")
    bars.set_title("Activity")
    bars.grid(axis="y", alpha=0)
    bars.set_xlim(0, float(description["median_interactions"].max()) * 1.9 or 1.0)
    return fig
