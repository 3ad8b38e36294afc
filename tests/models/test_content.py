"""The content-based model: the contract, new catalogue items, vector search."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from contract import RecommenderContract
from personalize.config import SplitConfig
from personalize.core import columns as C
from personalize.data.matrix import IdIndex, InteractionData
from personalize.data.splits import make_split
from personalize.models import create_model


class TestContentTfidf(RecommenderContract):
    model_type = "content"
    params = {"vectors": "tfidf", "half_life_days": 30.0, "max_history": 50}


class TestContentGenres(RecommenderContract):
    model_type = "content"
    params = {"vectors": "genres", "rating_offset": 2.0}


@pytest.fixture(scope="module")
def with_new_item(ml100k_small):
    """The small split plus one catalogue item nobody has interacted with: a re-release of the
    film user ``fan`` watched last (rated 5), with the same title words and genres."""
    d = ml100k_small
    split = make_split(d.interactions, SplitConfig(), 0, d.users, d.items)
    train = split.train
    last = train.groupby(C.USER).tail(1)  # train is in the total order
    loved = last[last[C.RATING] == 5].iloc[0]
    fan, original = loved[C.USER], loved[C.ITEM]
    source = d.items.set_index(C.ITEM).loc[original]
    new_id = int(d.items[C.ITEM].max()) + 1
    items = pd.concat(
        [
            d.items,
            pd.DataFrame(
                {
                    C.ITEM: [new_id],
                    C.TITLE: [f"{source[C.TITLE]} (Special Edition)"],
                    C.YEAR: [1997.0],
                    C.GENRES: [list(source[C.GENRES])],
                }
            ),
        ],
        ignore_index=True,
    )
    index = IdIndex.build(split.users, items, train)
    data = InteractionData.build(train, index, split.users, items)
    assert data.item_counts[index.item_index([new_id])[0]] == 0
    return data, fan, new_id


def test_recommends_items_without_interactions(with_new_item):
    data, fan, new_id = with_new_item
    # a profile of the last film alone: its re-release is the most similar unseen item
    latest = create_model("content", {"vectors": "tfidf", "max_history": 1}).fit(data)
    recs = latest.recommend([fan], k=10)
    assert recs[C.ITEM].iloc[0] == new_id and recs[C.PERSONALISED].all()
    content = create_model("content", {"vectors": "tfidf"}).fit(data)
    # items with no training interactions reach many users' lists, unlike a collaborative model
    users = data.index.users[: data.n_users]
    content_items = content.recommend(users, k=10)[C.ITEM]
    ease_items = create_model("ease", {"l2": 50.0}).fit(data).recommend(users, k=10)[C.ITEM]
    unseen = set(data.index.items[data.item_counts == 0])
    assert len(set(content_items) & unseen) > 10
    assert not set(ease_items) & unseen


def test_faiss_retrieval_matches_full_ranking(contract_data):
    _, index, train, _ = contract_data
    model = create_model("content", {"vectors": "tfidf"}).fit(train)
    users = list(index.users[:15])
    full = model.recommend(users, k=10)
    fast = model.retrieve(users, k=10)
    assert len(fast) == len(full)
    np.testing.assert_allclose(fast[C.SCORE].to_numpy(), full[C.SCORE].to_numpy(), atol=1e-5)
    # the same scores at every rank; items may differ only within exact ties (TF-IDF has many)
    scores = model.score(index.user_index(users))
    rows = np.searchsorted(np.asarray(users), fast[C.USER].to_numpy())
    true = scores[rows, index.item_index(fast[C.ITEM])]
    np.testing.assert_allclose(true, fast[C.SCORE].to_numpy(), atol=1e-5)
    assert (fast[C.ITEM].to_numpy() == full[C.ITEM].to_numpy()).mean() > 0.5
    seen = train.frame.groupby(C.USER_IDX)[C.ITEM_IDX].apply(set)
    for uid, rows in fast.groupby(C.USER):
        assert not set(index.item_index(rows[C.ITEM])) & seen[int(index.user_index([uid])[0])]


def test_more_like_this_by_content(ml100k_small):
    d = ml100k_small
    split = make_split(d.interactions, SplitConfig(), 0, d.users, d.items)
    index = IdIndex.build(split.users, split.items, split.train)
    data = InteractionData.build(split.train, index, split.users, split.items)
    model = create_model("content", {"vectors": "genres", "year_weight": 0.0}).fit(data)
    star_wars = 50  # Star Wars (1977): Action, Adventure, Romance, Sci-Fi, War
    similar = model.similar_items([star_wars], k=5)
    assert len(similar) == 5 and star_wars not in similar["similar_item_id"].tolist()
    genres = d.items.set_index(C.ITEM)[C.GENRES]
    for item in similar["similar_item_id"]:
        assert set(genres[item]) & set(genres[star_wars])
    assert similar["similarity"].is_monotonic_decreasing
