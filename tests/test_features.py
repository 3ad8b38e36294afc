"""Item content vectors, user profiles, the embedding cache and the FAISS index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from personalize.core import columns as C
from personalize.data.matrix import IdIndex, InteractionData
from personalize.features import text
from personalize.features.index import VectorIndex
from personalize.features.items import (
    genre_one_hot,
    item_vectors,
    structured_item_vectors,
    tfidf_item_vectors,
    year_buckets,
)
from personalize.features.profiles import interaction_weights, last_n_mask, user_profiles

ITEMS = pd.DataFrame(
    {
        C.ITEM: [1, 2, 3, 4],
        C.TITLE: ["Star Wars", "The Empire Strikes Back", "Star Trek", None],
        C.YEAR: [1977.0, 1980.0, 1979.0, np.nan],
        C.GENRES: [["Action", "Sci-Fi"], ["Action", "Sci-Fi"], ["Sci-Fi"], None],
    }
)


def _data(rows: list[tuple], items: pd.DataFrame = ITEMS) -> InteractionData:
    """InteractionData from (user, item, rating, 'YYYY-MM-DD') rows."""
    frame = pd.DataFrame(rows, columns=[C.USER, C.ITEM, C.RATING, C.TIMESTAMP])
    frame[C.TIMESTAMP] = pd.to_datetime(frame[C.TIMESTAMP], utc=True)
    frame[C.RATING] = frame[C.RATING].astype(float)
    users = pd.DataFrame({C.USER: sorted(set(frame[C.USER]) | {99})})
    index = IdIndex.build(users, items, frame)
    return InteractionData.build(frame, index, users, items)


def test_genre_one_hot_and_year_buckets_by_hand():
    genres, vocab = genre_one_hot(ITEMS)
    assert vocab == ["Action", "Sci-Fi"]
    np.testing.assert_array_equal(genres, [[1, 1], [1, 1], [0, 1], [0, 0]])
    years, labels = year_buckets(ITEMS, 10)
    assert labels == ["1970-1979", "1980-1989"]
    np.testing.assert_array_equal(years, [[1, 0], [0, 1], [1, 0], [0, 0]])  # no year: no bucket
    five, labels5 = year_buckets(ITEMS, 5)
    assert labels5 == ["1975-1979", "1980-1984"]
    np.testing.assert_array_equal(five.argmax(axis=1)[:3], [0, 1, 0])
    structured = structured_item_vectors(ITEMS, 10, year_weight=0.5)
    np.testing.assert_allclose(structured[0], [1, 1, 0.5, 0])


def test_tfidf_blocks_and_normalised_vectors():
    m = tfidf_item_vectors(ITEMS)
    assert m.shape[0] == 4
    vectors = item_vectors(ITEMS, "tfidf")
    norms = np.linalg.norm(vectors, axis=1)
    np.testing.assert_allclose(norms, [1, 1, 1, 0], atol=1e-6)  # item 4 has no content: a zero row
    sims = vectors @ vectors.T
    # Star Wars shares both genres with Empire and a title word with Star Trek
    assert sims[0, 1] > 0 and sims[0, 2] > 0
    genres_only = item_vectors(ITEMS, "tfidf", title_weight=0)
    np.testing.assert_allclose(genres_only[0], genres_only[1], atol=1e-6)
    assert (genres_only @ genres_only.T)[0, 1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown item vector source 'bag'"):
        item_vectors(ITEMS, "bag")
    with pytest.raises(ValueError, match="found no content"):
        item_vectors(pd.DataFrame({C.ITEM: [1, 2]}), "genres")


def test_profile_is_the_decayed_rating_weighted_mean():
    # the cut-off is 2020-01-11 (latest row); user 1 rated item 1 ten days earlier
    data = _data([(1, 1, 4, "2020-01-01"), (1, 3, 2, "2020-01-11"), (2, 2, 5, "2020-01-11")])
    v = np.eye(4, dtype=np.float32)
    w = interaction_weights(data, half_life_days=10, use_ratings=True)
    np.testing.assert_allclose(w, [4 * 0.5, 2 * 1.0, 5 * 1.0])
    p = user_profiles(data, v, half_life_days=10, use_ratings=True)
    u1 = data.index.user_index([1])[0]
    np.testing.assert_allclose(p[u1], [2 / 4, 0, 2 / 4, 0])
    # no decay, no ratings: the plain mean
    np.testing.assert_allclose(user_profiles(data, v, None, False)[u1], [0.5, 0, 0.5, 0])
    # offset 3: the rating-2 item drops out
    np.testing.assert_allclose(user_profiles(data, v, None, True, rating_offset=3)[u1], [1, 0, 0, 0])
    # a user without interactions has a zero profile
    assert not p[data.index.user_index([99])[0]].any()


def test_all_zero_rating_weights_fall_back_to_the_decay_alone():
    data = _data([(1, 1, 1, "2020-01-01"), (1, 2, 2, "2020-01-01")])
    p = user_profiles(data, np.eye(4, dtype=np.float32), None, True, rating_offset=3)
    np.testing.assert_allclose(p[data.index.user_index([1])[0]], [0.5, 0.5, 0, 0])


def test_max_history_keeps_the_last_rows_in_the_total_order():
    # two rows share a timestamp: the total order puts the higher item id last
    data = _data(
        [(1, 3, 5, "2020-01-02"), (1, 1, 5, "2020-01-01"), (1, 4, 5, "2020-01-02"), (2, 2, 5, "2020-01-01")]
    )
    keep = last_n_mask(data, 2)
    kept = set(data.frame.loc[keep & (data.frame[C.USER_IDX] == 0), C.ITEM_IDX])
    assert kept == {2, 3}  # items 3 and 4 (indices 2 and 3)
    assert last_n_mask(data, 1)[data.frame[C.USER_IDX] == 1].all()
    p = user_profiles(data, np.eye(4, dtype=np.float32), max_history=1)
    np.testing.assert_allclose(p[0], [0, 0, 0, 1])


def test_embeddings_are_cached_by_text_and_model(monkeypatch, tmp_path):
    """A second run reads the cache instead of encoding; other texts are encoded again."""
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path))
    calls = []

    class FakeEncoder:
        def __init__(self, device: str = "cpu"):
            self.device = device

        def encode(self, texts, **kwargs):
            calls.append(list(texts))
            return np.tile(np.arange(1, 4, dtype=np.float32), (len(texts), 1))

    monkeypatch.setattr(text, "load_encoder", FakeEncoder)
    first = text.embed_texts(["a", "b"])
    again = text.embed_texts(["a", "b"])
    np.testing.assert_array_equal(first, again)
    assert calls == [["a", "b"]]
    files = list((tmp_path / "cache" / "embeddings").glob("*.npy"))
    assert len(files) == 1 and files[0].name.startswith(text.MODEL_NAME)
    text.embed_texts(["a", "c"])
    assert calls[-1] == ["a", "c"] and len(calls) == 2
    monkeypatch.setattr(text, "MODEL_NAME", "another-model")
    text.embed_texts(["a", "b"])
    assert len(calls) == 3  # the model name is part of the key
    text.embed_texts(["a", "b"], cache=False)
    assert len(calls) == 4


def test_the_packaged_sentence_model_embeds_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path))
    texts = [
        "Star Wars (1977). Genres: Action, Adventure, Sci-Fi",
        "Return of the Jedi (1983). Genres: Action, Adventure, Sci-Fi",
        "Sense and Sensibility (1995). Genres: Drama, Romance",
    ]
    v = text.embed_texts(texts)
    assert v.shape == (3, text.EMBEDDING_DIM) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2]


def test_index_more_like_this_and_profile_search():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    ids = pd.Index(np.arange(100, 150))
    index = VectorIndex(vectors, ids)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    brute = unit @ unit.T
    pos, sims = index.more_like_this([3, 7], k=5)
    for row, item in enumerate([3, 7]):
        expected = [j for j in np.argsort(-brute[item], kind="stable") if j != item][:5]
        assert pos[row].tolist() == expected
        np.testing.assert_allclose(sims[row], brute[item, expected], atol=1e-5)
    # a profile query with 30 excluded items still returns k items, none of them excluded
    query = unit[:4].mean(axis=0)
    exclude = [set(range(30))]
    got, _ = index.search(query, 10, exclude=exclude)
    assert (got >= 30).all() and len(set(got[0])) == 10
    q = query / np.linalg.norm(query)
    expected = [j for j in np.argsort(-(unit @ q), kind="stable") if j >= 30][:10]
    assert got[0].tolist() == expected
    # asking for more than remains pads with -1 / -inf
    got, sims = index.search(query, 25, exclude=exclude)
    assert (got[0, 20:] == -1).all() and np.isneginf(sims[0, 20:]).all()
    table = index.similar_items([103], k=3)
    assert table["similar_item_id"].tolist() == [int(ids[j]) for j in brute[3].argsort()[::-1][1:4]]
    with pytest.raises(KeyError, match="not in the index"):
        index.similar_items([999])
