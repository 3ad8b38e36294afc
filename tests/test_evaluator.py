"""The evaluator ranks in memory-bounded blocks, and the block size does not change results."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

from personalize.config import EvaluationConfig, SplitConfig
from personalize.core import columns as C
from personalize.data.matrix import IdIndex, InteractionData
from personalize.data.splits import make_split
from personalize.evaluation import Evaluator, make_target
from personalize.evaluation import evaluator as evaluator_module
from personalize.models import create_model


def test_block_size_does_not_change_results(ml100k_small, monkeypatch):
    d = ml100k_small
    split = make_split(d.interactions, SplitConfig(), 0, d.users, d.items)
    index = IdIndex.build(split.users, split.items, split.train, split.valid, split.test)
    model = create_model("ease", {"l2": 50}).fit(
        InteractionData.build(split.train, index, split.users, split.items)
    )
    target = make_target("valid", split.valid, split.train, index)
    whole = Evaluator().evaluate(model, target)
    monkeypatch.setattr(evaluator_module, "block_size", lambda n_items, budget: 7)
    blocked = Evaluator().evaluate(model, target)
    pd.testing.assert_frame_equal(whole.per_user, blocked.per_user)
    pd.testing.assert_frame_equal(whole.recommendations, blocked.recommendations)


class _RandomScorer:
    def __init__(self, n_items: int):
        self.n_items = n_items

    def score(self, users):
        rng = np.random.default_rng(int(users[0]))
        return rng.random((len(users), self.n_items), dtype=np.float32)


def test_memory_stays_bounded_for_a_large_catalogue():
    """500 users x 200,000 items would be 400 MB of float32 scores at once; a 32 MB budget keeps
    the evaluator's peak far below that."""
    n_users, n_items = 500, 200_000
    users = pd.DataFrame({C.USER: np.arange(n_users)})
    items = pd.DataFrame({C.ITEM: np.arange(n_items)})
    ts = pd.Timestamp("2020-01-01", tz="UTC")
    rng = np.random.default_rng(0)
    test = pd.DataFrame(
        {
            C.USER: np.repeat(np.arange(n_users), 3),
            C.ITEM: rng.integers(0, n_items, 3 * n_users),
            C.TIMESTAMP: ts,
        }
    )
    seen = pd.DataFrame(
        {
            C.USER: np.repeat(np.arange(n_users), 5),
            C.ITEM: rng.integers(0, n_items, 5 * n_users),
            C.TIMESTAMP: ts,
        }
    )
    index = IdIndex.build(users, items)
    target = make_target("test", test, seen, index)
    ev = Evaluator(EvaluationConfig(ks=[10], primary_metric="ndcg@10", memory_budget_mb=32))
    tracemalloc.start()
    result = ev.evaluate(_RandomScorer(n_items), target)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(result.per_user) == n_users
    assert peak < 120 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert result.summary["ndcg@10"] == pytest.approx(0.0, abs=0.01)  # random scores: almost no hits
