"""Segment descriptions, names, content strategies and maps (``personalize.segments.describe``).

Exact numbers are checked on a hand-made six-user dataset; the ML-100K checks use K-Means
(k=4, seed 0) on the scaled profile of a user_temporal training part.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from personalize.config import SplitConfig
from personalize.config.segments import DescribeConfig
from personalize.core import columns as C
from personalize.core.errors import DataError
from personalize.data.matrix import IdIndex, InteractionData
from personalize.data.splits import make_split
from personalize.features.profile_table import ProfileScaler, build_profile_table
from personalize.segments.describe import (
    Share,
    content_strategy,
    demographic_phrase,
    describe_segments,
    format_description,
    name_segments,
    plot_segment_profiles,
    segment_map,
)

T0 = pd.Timestamp("2020-01-01", tz="UTC")

# ----------------------------------------------------------------------------- hand-made data

USERS = pd.DataFrame(
    {
        C.USER: [1, 2, 3, 4, 5, 6],
        C.AGE: [20, 22, 23, 30, 40, 45],
        C.GENDER: ["F", "M", "F", "M", "M", "M"],
        C.OCCUPATION: ["student", "student", "writer", "engineer", "engineer", "other"],
        C.ZIP: ["10001", "10002", "20001", "30001", "30002", "40001"],
    }
)
ITEMS = pd.DataFrame(
    {
        C.ITEM: [10, 20, 30, 40, 50],
        C.TITLE: ["Alpha", "Beta", "Gamma", "Delta", "Epsilon"],
        C.YEAR: [1990.0, 1991.0, 1992.0, 1993.0, np.nan],
        C.GENRES: [["A"], ["B"], ["A", "B"], ["C"], ["C"]],
    }
)
# (user, item, rating, day); users 1-2 are segment 0, users 3-6 segment 1; day 100 is the cut-off
ROWS = [
    (1, 10, 5, 0), (1, 30, 4, 1), (2, 10, 5, 2), (3, 20, 3, 3), (4, 20, 4, 4), (4, 40, 2, 5),
    (5, 20, 3, 6), (6, 20, 4, 7), (3, 10, 2, 100), (4, 30, 3, 100), (5, 40, 4, 100),
]  # fmt: skip
LABELS = pd.Series([0, 0, 1, 1, 1, 1], index=pd.Index([1, 2, 3, 4, 5, 6], name=C.USER))


@pytest.fixture(scope="module")
def tiny():
    frame = pd.DataFrame(ROWS, columns=[C.USER, C.ITEM, C.RATING, "day"])
    frame[C.TIMESTAMP] = T0 + pd.to_timedelta(frame.pop("day"), unit="D")
    frame[C.RATING] = frame[C.RATING].astype(float)
    frame = frame.sort_values([C.TIMESTAMP, C.ITEM, C.USER], kind="stable").reset_index(drop=True)
    index = IdIndex.build(USERS, ITEMS, frame)
    train = InteractionData.build(frame, index, USERS, ITEMS)
    return train, build_profile_table(train, None)


def test_tiny_sizes_shares_and_demographic_lifts(tiny):
    train, profiles = tiny
    d = describe_segments(LABELS, profiles, train)
    assert d.index.tolist() == [0, 1]
    assert d["size"].tolist() == [2, 4]
    assert d["share"].tolist() == pytest.approx([2 / 6, 4 / 6])
    genders = {x.value: (x.share, x.lift) for x in d.loc[0, "genders"]}
    # segment 0: one F of two (population 2 of 6), one M of two (population 4 of 6)
    assert genders == {"F": pytest.approx((0.5, 1.5)), "M": pytest.approx((0.5, 0.75))}
    # students: all of segment 0, 2 of 6 in the population -> lift 3 beats 18-24 (lift 1 / (3/6) = 2)
    attribute, best = d.loc[0, "over_represented"]
    assert (attribute, best.value) == ("occupation", "student")
    assert (best.share, best.lift) == pytest.approx((1.0, 3.0))
    # segment 1: engineer, 25-34, 35-44, 45-49, writer all have lift 1.5; engineer has the largest share
    attribute, best = d.loc[1, "over_represented"]
    assert (attribute, best.value, best.share, best.lift) == (
        "occupation",
        "engineer",
        0.5,
        pytest.approx(1.5),
    )
    assert [x.value for x in d.loc[0, "ages"]] == ["18-24"]


def test_tiny_genre_lifts_by_hand(tiny):
    train, profiles = tiny
    d = describe_segments(LABELS, profiles, train, DescribeConfig(min_genre_share=0.0))
    # genre mass (Gamma counts 1/2 to A and 1/2 to B): segment 0 A 2.5, B 0.5 (3);
    # segment 1 A 1.5, B 4.5, C 2 (8); population A 4, B 5, C 2 (11)
    assert d.loc[0, "genre_lift"] == pytest.approx(
        {"A": (2.5 / 3) / (4 / 11), "B": (0.5 / 3) / (5 / 11), "C": 0.0}
    )
    assert d.loc[1, "genre_lift"] == pytest.approx(
        {"A": (1.5 / 8) / (4 / 11), "B": (4.5 / 8) / (5 / 11), "C": (2 / 8) / (2 / 11)}
    )
    assert [x.value for x in d.loc[1, "genres_by_lift"]] == ["C", "B", "A"]
    assert [x.value for x in d.loc[1, "genres_by_share"]] == ["B", "C", "A"]
    assert d.loc[1, "genres_by_share"][0].share == pytest.approx(4.5 / 8)
    # a genre below min_genre_share is not ranked by lift (segment 0 has B at 1/6 and C at 0)
    strict = describe_segments(LABELS, profiles, train, DescribeConfig(min_genre_share=0.2))
    assert [x.value for x in strict.loc[0, "genres_by_lift"]] == ["A"]


def test_tiny_activity_recency_ratings_and_typical_items(tiny):
    train, profiles = tiny
    d = describe_segments(LABELS, profiles, train, DescribeConfig(top_items=2))
    # interactions per user 2,1 | 2,3,2,1: tertiles 1.667 and 2 -> medians 1.5 light, 2 regular
    assert d.attrs["activity_tertiles"] == pytest.approx((5 / 3, 2.0))
    assert d["median_interactions"].tolist() == [1.5, 2.0]
    assert d["activity"].tolist() == ["light", "regular"]
    assert d.loc[0, "median_recency_days"] == pytest.approx(98.5)  # last on days 1 and 2; cut-off day 100
    assert d.loc[0, "rating_mean"] == pytest.approx((4.5 + 5.0) / 2)
    assert d.loc[0, "typical_items"] == [10, 30]
    assert d.loc[0, "typical_titles"] == ["Alpha (1990)", "Gamma (1992)"]
    assert d.loc[1, "typical_items"] == [20, 40]
    text = format_description(d)
    assert text.loc[0, "name"] == name_segments(d).loc[0]


def test_tiny_content_strategy(tiny):
    train, _ = tiny
    cfg = DescribeConfig(top_items=2, min_support=1, new_window_days=30)
    s = content_strategy(LABELS, train, cfg)
    assert s.loc[0, "top_items"] == [10, 30]
    # lifts: segment 0 item 10 (2/3)/(3/11), item 30 (1/3)/(2/11)
    assert s.loc[0, "distinctive_items"] == [10, 30]
    assert s.loc[0, "distinctive_lift"] == pytest.approx([(2 / 3) / (3 / 11), (1 / 3) / (2 / 11)])
    # segment 1: items 20 and 40 tie at lift 1.375; 20 has more interactions
    assert s.loc[1, "distinctive_items"] == [20, 40]
    assert s.loc[1, "distinctive_lift"] == pytest.approx([1.375, 1.375])
    # recent (last 30 days): items 10, 30, 40. Segment 0 leads with 10 and 30 -> only 40 (lift 0) is
    # new; segment 1 leads with 20 and 40 -> 10 (lift 0.458) before 30 (lift 0.6875)
    assert s.loc[0, "new_items"] == [40]
    assert s.loc[0, "new_lift"] == [0.0]
    assert s.loc[1, "new_items"] == [10, 30]
    assert s.loc[1, "new_titles"] == ["Alpha (1990)", "Gamma (1992)"]
    assert s.loc[0, "strategy"] == "Segment 0: lead with Alpha (1990), Gamma (1992); introduce Delta (1993)."
    # unlabelled users take no part: without user 6 (one row on item 20) segment 1 has 7 rows, the
    # population 10, and items 20 and 40 have lift (3/7)/(3/10) = (2/7)/(2/10) = 10/7
    part = content_strategy(LABELS.drop(6), train, cfg)
    assert part.loc[1, "distinctive_items"] == [20, 40]
    assert part.loc[1, "distinctive_lift"] == pytest.approx([10 / 7, 10 / 7])
    # min_support leaves out items with too few interactions in the segment
    strict = content_strategy(LABELS, train, DescribeConfig(top_items=2, min_support=2))
    assert strict.loc[0, "distinctive_items"] == [10]
    # a pool of one recent item: item 10 (ties broken by item ID), which segment 0 already leads with
    one = content_strategy(LABELS, train, DescribeConfig(top_items=2, min_support=1, new_pool=1))
    assert one.loc[0, "new_items"] == []
    assert one.loc[1, "new_items"] == [10]
    assert "introduce" not in one.loc[0, "strategy"]


def test_strategy_uses_segment_names(tiny):
    train, profiles = tiny
    d = describe_segments(LABELS, profiles, train)
    s = content_strategy(LABELS, train, DescribeConfig(min_support=1), description=d)
    names = name_segments(d)
    for segment, row in s.iterrows():
        assert row["name"] == names.loc[segment]
        assert row["strategy"].startswith(names.loc[segment] + ": lead with ")


def test_bad_labels_are_named(tiny):
    train, profiles = tiny
    with pytest.raises(DataError, match="not in the profile table"):
        describe_segments(pd.Series([0, 1], index=[1, 99]), profiles, train)
    with pytest.raises(DataError, match="user 1 appears more than once"):
        describe_segments(pd.Series([0, 1], index=[1, 1]), profiles, train)
    with pytest.raises(DataError, match=r"user 2 has segment 0\.5"):
        content_strategy(pd.Series([0.0, 0.5], index=[1, 2]), train)
    with pytest.raises(DataError, match="not in the training data"):
        content_strategy(pd.Series([0, 1], index=[1, 77]), train)
    with pytest.raises(DataError, match="no users"):
        content_strategy(pd.Series([], dtype=int), train)


# ----------------------------------------------------------------------------- names


def _description(rows: dict[int, dict]) -> pd.DataFrame:
    out = []
    for segment, row in rows.items():
        genres = [Share(g, 0.1, lift) for g, lift in row.get("genres", [])]
        out.append(
            {
                "segment": segment,
                "activity": row.get("activity", "regular"),
                "rating_mean": row.get("rating_mean", 3.5),
                "over_represented": row.get("over"),
                "genres_by_lift": genres,
                "genres_by_share": row.get("by_share", genres[:1]),
            }
        )
    return pd.DataFrame(out).set_index("segment")


def test_names_follow_the_rule():
    d = _description(
        {
            0: {
                "genres": [("Horror", 1.8)],
                "activity": "heavy",
                "over": ("occupation", Share("student", 0.4, 1.7)),
            },
            1: {"genres": [("Drama", 1.1)], "activity": "light", "over": ("gender", Share("F", 0.5, 1.6))},
            2: {"genres": [("Sci-Fi", 1.3)], "over": ("age_bucket", Share("25-34", 0.5, 1.4))},
            3: {"genres": [("children's", 1.5)], "over": ("age_bucket", Share("<18", 0.3, 2.5))},
        }
    )
    names = name_segments(d)
    assert names.to_dict() == {
        0: "Horror fans, heavy raters, often students",
        1: "Broad-taste light raters, often women",  # top genre lift 1.1 < 1.2
        2: "Sci-Fi fans, regular raters",  # demographic lift 1.4 < 1.5
        3: "Children's fans, regular raters, often aged under 18",
    }
    looser = name_segments(d, DescribeConfig(name_min_lift=1.3, name_min_genre_lift=1.05))
    assert looser.loc[1] == "Drama fans, light raters, often women"
    assert looser.loc[2] == "Sci-Fi fans, regular raters, often aged 25-34"
    no_ratings = d.assign(rating_mean=np.nan)
    assert name_segments(no_ratings).loc[2] == "Sci-Fi fans, regular users"


def test_names_are_unique_by_the_tie_rule():
    d = _description(
        {
            0: {"genres": [("Drama", 1.5), ("Romance", 1.3), ("War", 1.2)]},
            1: {"genres": [("Drama", 1.6), ("War", 1.4)]},
            2: {"genres": [("Drama", 1.4), ("Romance", 1.2)]},
            3: {"genres": [("Comedy", 1.4)]},
            4: {"genres": [("Action", 1.0), ("War", 1.0)]},
            5: {"genres": [("Action", 1.1)]},
            6: {"genres": []},
            7: {"genres": [], "by_share": []},
        }
    )
    names = name_segments(d)
    assert names.is_unique
    assert names.to_dict() == {
        0: "Drama/Romance/War fans, regular raters",
        1: "Drama/War fans, regular raters",
        2: "Drama/Romance fans, regular raters (segment 2)",
        3: "Comedy fans, regular raters",
        4: "Broad-taste (leaning Action/War) regular raters",
        5: "Broad-taste (leaning Action) regular raters (segment 5)",
        6: "Regular raters (segment 6)",
        7: "Regular raters (segment 7)",
    }


def test_demographic_phrases():
    assert demographic_phrase("occupation", "student") == "students"
    assert demographic_phrase("occupation", "salesman") == "salesmen"
    assert demographic_phrase("occupation", "executive") == "executives"
    assert demographic_phrase("occupation", "retired") == "retired users"
    assert demographic_phrase("occupation", "entertainment") == "entertainment users"
    assert demographic_phrase("age_bucket", "56+") == "aged 56+"
    assert demographic_phrase("gender", "M") == "men"


# ----------------------------------------------------------------------------- ML-100K


@pytest.fixture(scope="module")
def ml_segments(ml100k):
    from sklearn.cluster import KMeans

    from personalize.features.text import dense_item_embeddings

    d = ml100k
    split = make_split(d.interactions, SplitConfig(), 0, d.users, d.items)
    index = IdIndex.build(split.users, split.items, split.train, split.valid, split.test)
    train = InteractionData.build(split.train, index, split.users, split.items)
    profiles = build_profile_table(train, dense_item_embeddings(train.items))
    x = ProfileScaler().fit_transform(profiles)
    labels = pd.Series(KMeans(4, random_state=0, n_init=10).fit_predict(x), index=profiles.table.index)
    return train, profiles, x, labels


def test_ml100k_description_adds_up(ml_segments):
    train, profiles, _, labels = ml_segments
    d = describe_segments(labels, profiles, train)
    assert len(d) == 4
    assert d["size"].sum() == len(labels) == len(profiles.table)
    assert d["share"].sum() == pytest.approx(1.0)
    for _, row in d.iterrows():
        assert sum(x.share for x in row["genders"]) == pytest.approx(1.0)
        assert len(row["genres_by_lift"]) == 3
        assert row["activity"] in ("light", "regular", "heavy")
        assert len(row["typical_titles"]) == 5
    # lifts averaged over segments with the segments' shares of users give 1 for every gender
    for gender in ("F", "M"):
        weighted = sum(
            share * next(x.lift for x in genders if x.value == gender)
            for share, genders in zip(d["share"], d["genders"])
        )
        assert weighted == pytest.approx(1.0)
    names = name_segments(d)
    assert names.is_unique
    assert describe_segments(labels, profiles, train).equals(d)  # deterministic


def test_ml100k_strategy_items_are_catalogue_items(ml_segments):
    train, profiles, _, labels = ml_segments
    cfg = DescribeConfig()
    d = describe_segments(labels, profiles, train, cfg)
    s = content_strategy(labels, train, cfg, description=d)
    titles = train.items.set_index(C.ITEM)[C.TITLE]
    for _, row in s.iterrows():
        for kind in ("top", "distinctive", "new"):
            items, names = row[f"{kind}_items"], row[f"{kind}_titles"]
            assert len(items) == cfg.top_items
            assert set(items) <= set(train.index.items)
            for item, title in zip(items, names):
                assert title.startswith(titles.loc[item])
        assert row["strategy"].startswith(row["name"] + ": lead with ")
    assert content_strategy(labels, train, cfg, description=d).equals(s)  # deterministic


def test_ml100k_new_to_segment_obeys_the_definition(ml_segments):
    train, _, _, labels = ml_segments
    cfg = DescribeConfig()
    s = content_strategy(labels, train, cfg)
    frame = train.frame.assign(
        item=train.index.items[train.frame[C.ITEM_IDX]],
        segment=labels.reindex(train.index.users[train.frame[C.USER_IDX]]).to_numpy(),
    )
    recent = frame[frame[C.TIMESTAMP] > train.cutoff - pd.Timedelta(days=cfg.new_window_days)]
    counts = recent.groupby("item").size()
    pool = sorted(counts.index, key=lambda i: (-counts[i], i))[: cfg.new_pool]
    population = frame["item"].value_counts(normalize=True)
    for segment, row in s.iterrows():
        share = frame.loc[frame["segment"] == segment, "item"].value_counts(normalize=True)
        lift = {i: share.get(i, 0.0) / population[i] for i in pool}
        excluded = set(row["top_items"]) | set(row["distinctive_items"])
        candidates = sorted((i for i in pool if i not in excluded), key=lambda i: (lift[i], -counts[i], i))
        assert row["new_items"] == candidates[: cfg.top_items]
        assert row["new_lift"] == pytest.approx([lift[i] for i in row["new_items"]])
        assert max(row["new_lift"]) <= min(lift[i] for i in candidates[cfg.top_items :])


def _scatter_colours(fig) -> list[np.ndarray]:
    ax = fig.axes[0]
    return [np.unique(c.get_facecolors()[:, :3], axis=0) for c in ax.collections]


def test_ml100k_map_one_colour_per_segment(ml_segments):
    train, profiles, x, labels = ml_segments
    fig = segment_map(x, labels)
    colours = _scatter_colours(fig)
    assert len(colours) == labels.nunique() == 4
    assert all(len(c) == 1 for c in colours)  # each segment one colour
    assert len({tuple(c[0]) for c in colours}) == 4  # and the colours differ
    sizes = [len(c.get_offsets()) for c in fig.axes[0].collections]
    assert sorted(sizes) == sorted(labels.value_counts().tolist())
    again = segment_map(x, labels)
    for a, b in zip(fig.axes[0].collections, again.axes[0].collections):
        np.testing.assert_array_equal(a.get_offsets(), b.get_offsets())
    d = describe_segments(labels, profiles, train)
    profile_fig = plot_segment_profiles(d)
    assert isinstance(profile_fig, matplotlib.figure.Figure)
    assert len(profile_fig.axes[0].get_yticklabels()) == 4


def test_tsne_map_is_seeded_and_checks_shapes():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(c, 0.3, size=(20, 4)) for c in (0.0, 3.0, 6.0)])
    labels = pd.Series(np.repeat([2, 5, 7], 20), index=np.arange(60))
    first = segment_map(x, labels, method="tsne", seed=1)
    second = segment_map(x, labels, method="tsne", seed=1)
    assert len(_scatter_colours(first)) == 3
    for a, b in zip(first.axes[0].collections, second.axes[0].collections):
        np.testing.assert_allclose(a.get_offsets(), b.get_offsets())
    with pytest.raises(DataError, match="a row per label"):
        segment_map(x[:10], labels)
    with pytest.raises(ValueError, match="pca"):
        segment_map(x, labels, method="umap")
