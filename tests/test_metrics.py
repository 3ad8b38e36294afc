"""Hand-computed metric cases (the protocol's definitions)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from personalize.config import EvaluationConfig
from personalize.core import columns as C
from personalize.data.matrix import IdIndex
from personalize.evaluation import Evaluator, make_target
from personalize.evaluation import metrics as M
from personalize.scoring import topk

LOG3 = math.log2(3)
N_ITEMS = 10


def _rel(rows: list[set[int]], graded: list[dict[int, float]] | None = None) -> sp.csr_matrix:
    data, r, c = [], [], []
    for u, items in enumerate(rows):
        for i in sorted(items):
            r.append(u)
            c.append(i)
            data.append(graded[u][i] if graded else 1.0)
    return sp.csr_matrix((data, (r, c)), shape=(len(rows), N_ITEMS))


def _compute(lists, relevant, ks=(1, 5), **kw):
    top = np.array(lists)
    rel = _rel(relevant)
    hits = M.lookup(top, rel) > 0
    n_rel = np.array([len(r) for r in relevant])
    return M.accuracy_metrics(hits, n_rel, list(ks), **kw)


def test_two_hits_out_of_two_relevant():
    m = _compute([[3, 0, 1, 4, 5]], [{1, 3}])
    assert m["precision@5"][0] == pytest.approx(2 / 5)
    assert m["precision@1"][0] == pytest.approx(1.0)
    assert m["recall@5"][0] == pytest.approx(1.0)
    assert m["recall@1"][0] == pytest.approx(0.5)
    assert m["hit@1"][0] == 1.0
    assert m["mrr@5"][0] == pytest.approx(1.0)
    assert m["ndcg@5"][0] == pytest.approx((1 + 0.5) / (1 + 1 / LOG3))
    assert m["ndcg@1"][0] == pytest.approx(1.0)
    assert m["map@5"][0] == pytest.approx((1 + 2 / 3) / 2)
    assert m["map@1"][0] == pytest.approx(1.0)


def test_no_hits_with_fewer_relevant_than_k():
    m = _compute([[0, 1, 3, 4, 5]], [{2}])
    for name in ("precision@5", "recall@5", "hit@5", "mrr@5", "ndcg@5", "map@5"):
        assert m[name][0] == 0.0


def test_perfect_ranking():
    m = _compute([[0, 1, 2, 3, 4]], [{0, 1}])
    assert m["ndcg@5"][0] == pytest.approx(1.0)
    assert m["map@5"][0] == pytest.approx(1.0)
    assert m["recall@5"][0] == pytest.approx(1.0)
    assert m["precision@5"][0] == pytest.approx(2 / 5)
    assert m["mrr@1"][0] == 1.0


def test_fewer_than_k_items_returned_count_as_misses():
    m = _compute([[4, -1, -1, -1, -1]], [{4, 5}])
    assert m["precision@5"][0] == pytest.approx(1 / 5)  # always divides by K
    assert m["recall@5"][0] == pytest.approx(0.5)
    assert m["ndcg@5"][0] == pytest.approx(1 / (1 + 1 / LOG3))
    assert m["map@5"][0] == pytest.approx(0.5)


def test_later_hit_mrr_and_map():
    m = _compute([[6, 7, 2, 8, 9]], [{2, 5}])
    assert m["mrr@5"][0] == pytest.approx(1 / 3)
    assert m["mrr@1"][0] == 0.0
    assert m["map@5"][0] == pytest.approx((1 / 3) / 2)
    assert m["ndcg@5"][0] == pytest.approx(0.5 / (1 + 1 / LOG3))


def test_map_denominator_min_vs_relevant():
    lists, relevant = [[0, 6, 1, 7, 8]], [{0, 1, 2, 3, 4, 5}]
    protocol = _compute(lists, relevant)
    peer = _compute(lists, relevant, map_denominator="relevant")
    assert protocol["map@5"][0] == pytest.approx((1 + 2 / 3) / 5)
    assert peer["map@5"][0] == pytest.approx((1 + 2 / 3) / 6)
    # NDCG's ideal is capped at K places as well
    ideal = sum(1 / math.log2(i + 1) for i in range(1, 6))
    assert protocol["ndcg@5"][0] == pytest.approx((1 + 0.5) / ideal)


def test_graded_ndcg():
    top = np.array([[3, 0, 1]])
    rel = _rel([{1, 3}], [{1: 5.0, 3: 3.0}])
    gains = M.lookup(top, rel)
    ideal = np.array([[5.0, 3.0, 0.0]])
    m = M.accuracy_metrics(gains > 0, np.array([2]), [3], gains=gains, ideal_gains=ideal)
    assert m["ndcg@3"][0] == pytest.approx((3 + 5 / 2) / (5 + 3 / LOG3))


def test_user_without_relevant_items_scores_zero_not_nan():
    m = _compute([[0, 1, 2, 3, 4]], [set()])
    assert all(np.isfinite(v[0]) and v[0] == 0 for v in m.values())


def test_ties_in_score_broken_by_item_index():
    items, values = topk(np.array([[0.5, 0.9, 0.9, 0.1], [0.9, 0.5, 0.5, 0.5]], dtype=np.float32), 2)
    assert items.tolist() == [[1, 2], [0, 1]]
    assert values[0].tolist() == pytest.approx([0.9, 0.9])
    # all tied: lowest indices first
    items, _ = topk(np.zeros((1, 5), dtype=np.float32), 3)
    assert items.tolist() == [[0, 1, 2]]


def test_minus_inf_is_not_recommended():
    scores = np.array([[-np.inf, 0.2, -np.inf, 0.1]], dtype=np.float32)
    items, values = topk(scores, 3)
    assert items.tolist() == [[1, 3, -1]]
    assert values[0, 2] == -np.inf


def test_topk_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        topk(np.array([[np.nan, 1.0]], dtype=np.float32), 1)


def test_topk_matches_full_sort_on_random_scores():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(50, 40)).astype(np.float32)  # many ties
    items, _ = topk(scores, 7)
    for row in range(50):
        expected = sorted(range(40), key=lambda j: (-scores[row, j], j))[:7]
        assert items[row].tolist() == expected


def test_beyond_accuracy_metrics():
    top = np.array([[0, 1, 2], [1, 2, -1]])
    counts = np.zeros(N_ITEMS, dtype=np.int64)
    counts[:3] = [3, 1, 0]
    assert M.coverage(top, 3, N_ITEMS) == pytest.approx(3 / 10)
    assert M.coverage(top, 1, N_ITEMS) == pytest.approx(2 / 10)
    info = [-math.log2((c + 1) / (4 + N_ITEMS)) for c in (3, 1, 0)]
    nov = M.novelty(top, 3, counts, n_train_rows=4)
    assert nov[0] == pytest.approx(np.mean(info))
    assert nov[1] == pytest.approx(np.mean(info[1:]))  # the empty place is not an item
    pop = M.popularity(top, 3, counts)
    assert pop.tolist() == pytest.approx([4 / 3, 0.5])
    genres = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]] + [[0, 0, 0]] * 7, dtype=np.float32))
    div = M.diversity(np.array([[0, 1, 2], [1, 5, -1]]), 3, genres)
    assert div[0] == pytest.approx((0.5 + 1 + 1) / 3)
    assert np.isnan(div[1])  # item 5 has no genres: no pair to compare


# ------------------------------------------------------------- through the evaluator


class _FixedScores:
    """A 'model' with given scores per user index."""

    def __init__(self, scores: dict[int, list[float]], n_items: int):
        self.scores = scores
        self.n_items = n_items

    def score(self, users):
        return np.array([self.scores.get(int(u), [0.0] * self.n_items) for u in users], dtype=np.float32)


def _frame(rows):
    return pd.DataFrame(
        [
            {C.USER: u, C.ITEM: i, C.TIMESTAMP: pd.Timestamp(t, unit="s", tz="UTC"), C.RATING: r}
            for u, i, t, r in rows
        ]
    )


def test_evaluator_end_to_end_hand_case():
    """Duplicate test rows count once, seen items are excluded, a user with no test items is
    not evaluated, and the mean is the plain mean over evaluated users."""
    items = pd.DataFrame({C.ITEM: list(range(6))})
    users = pd.DataFrame({C.USER: [10, 11, 12]})
    train = _frame([(10, 0, 1, 5), (11, 1, 1, 4), (12, 2, 1, 3)])
    test = _frame([(10, 3, 2, 5), (10, 3, 3, 4), (10, 4, 2, 2), (11, 5, 2, 1)])  # user 12: no test rows
    index = IdIndex.build(users, items, train, test)
    target = make_target("test", test, train, index)
    scores = {
        0: [9, 8, 7, 6, 5, 4],  # user 10: item 0 seen -> list [1, 2, 3, 4, 5]
        1: [0, 9, 0, 0, 0, 8],  # user 11: item 1 seen -> item 5 first
        2: [1, 1, 1, 1, 1, 1],
    }
    ev = Evaluator(EvaluationConfig(ks=[2, 5], primary_metric="ndcg@5"))
    result = ev.evaluate(_FixedScores(scores, 6), target)
    per = result.per_user
    assert list(per.index) == [10, 11]
    assert per.loc[10, "n_relevant"] == 2  # item 3 twice -> once
    # user 10: list [1, 2, 3, 4, 5], relevant {3, 4}: hits at ranks 3 and 4
    dcg = 1 / math.log2(4) + 1 / math.log2(5)
    assert per.loc[10, "ndcg@5"] == pytest.approx(dcg / (1 + 1 / LOG3))
    assert per.loc[10, "map@5"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert per.loc[10, "precision@2"] == 0.0
    assert per.loc[11, "mrr@5"] == 1.0
    assert result.summary["ndcg@5"] == pytest.approx((per.loc[10, "ndcg@5"] + 1.0) / 2)
    recs = result.recommendations
    assert 0 not in set(recs[recs[C.USER] == 10][C.ITEM])  # seen item never ranked
    assert result.catalogue_metrics["coverage@2"] == pytest.approx(4 / 6)  # {1, 2} and {5, 0}


def test_rating_threshold_and_msr_row_counts():
    items = pd.DataFrame({C.ITEM: list(range(4))})
    users = pd.DataFrame({C.USER: [1]})
    train = _frame([(1, 0, 1, 5)])
    test = _frame([(1, 1, 2, 5), (1, 2, 2, 2), (1, 2, 3, 2)])
    index = IdIndex.build(users, items, train, test)
    model = _FixedScores({0: [0, 3, 2, 1]}, 4)
    thresholded = make_target("test", test, train, index, min_rating=4)
    assert thresholded.n_relevant.tolist() == [1]
    plain = make_target("test", test, train, index)
    assert plain.n_relevant.tolist() == [2] and plain.n_rows.tolist() == [3]
    msr = Evaluator(EvaluationConfig(ks=[2], mode="msr", primary_metric="ndcg@2")).evaluate(model, plain)
    assert msr.summary["recall@2"] == pytest.approx(2 / 3)  # MSR counts test rows in |R|
    proto = Evaluator(EvaluationConfig(ks=[2], primary_metric="ndcg@2")).evaluate(model, plain)
    assert proto.summary["recall@2"] == pytest.approx(1.0)
