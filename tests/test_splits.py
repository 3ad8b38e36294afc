"""The protocol's splits and the leakage checks (which must be able to fail)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from personalize.config import SplitConfig
from personalize.core import columns as C
from personalize.data.splits import check_split, half_even, make_split

ALL = ["user_temporal", "global_temporal", "leave_last_out", "user_stratified", "item_stratified"]


@pytest.mark.parametrize("name", ALL)
def test_splits_are_sound_on_movielens(ml100k, name):
    split = make_split(
        ml100k.interactions, SplitConfig(name=name), seed=7, users=ml100k.users, items=ml100k.items
    )
    assert check_split(split, ml100k.interactions) == []
    assert len(split.train) + len(split.valid) + len(split.test) == len(ml100k.interactions)
    assert len(split.valid) > 0 and len(split.test) > 0
    assert len(split.items) == 1682  # the catalogue is the item table, not the train items


def test_user_temporal_sizes(ml100k):
    split = make_split(ml100k.interactions, SplitConfig(), users=ml100k.users, items=ml100k.items)
    n = ml100k.interactions.groupby(C.USER).size()
    test = split.test.groupby(C.USER).size()
    valid = split.valid.groupby(C.USER).size()
    expected = np.maximum(1, half_even(n.to_numpy(), 0.1))
    assert (test.reindex(n.index).to_numpy() == expected).all()
    assert (valid.reindex(n.index).to_numpy() == expected).all()
    # each user's test rows are their last ones in the (timestamp, item_id) order
    for user in n.index[:50]:
        rows = ml100k.interactions[ml100k.interactions[C.USER] == user].sort_values([C.TIMESTAMP, C.ITEM])
        assert set(rows.index[-len(split.test[split.test[C.USER] == user]) :]) == set(
            split.test[split.test[C.USER] == user].index
        )


def test_global_temporal_counts_and_cold_users(ml100k):
    split = make_split(
        ml100k.interactions,
        SplitConfig(name="global_temporal"),
        users=ml100k.users,
        items=ml100k.items,
    )
    s = split.summary()
    assert (s["train_rows"], s["valid_rows"], s["test_rows"]) == (80000, 10000, 10000)
    assert s["test_users"] == 166
    assert s["test_users_cold_vs_train"] == 97  # the protocol's figure: 97 of 166 are new


def test_half_even_rounding():
    assert half_even(np.array([25, 35, 45, 15, 5, 4]), 0.1).tolist() == [2, 4, 4, 2, 0, 0]
    assert half_even(np.array([2, 6, 10]), 0.25).tolist() == [0, 2, 2]


def test_small_users_stay_in_train():
    frame = pd.DataFrame(
        {
            C.USER: [1, 1, 2, 2, 2],
            C.ITEM: [1, 2, 1, 2, 3],
            C.TIMESTAMP: pd.to_datetime([1, 2, 1, 2, 3], unit="s", utc=True),
        }
    )
    split = make_split(frame, SplitConfig())
    assert set(split.train[C.USER]) == {1, 2}
    assert split.test[C.USER].tolist() == [2] and split.test[C.ITEM].tolist() == [3]
    assert split.valid[C.ITEM].tolist() == [2]


def test_ties_in_time_follow_item_order():
    frame = pd.DataFrame(
        {
            C.USER: [1] * 4,
            C.ITEM: [9, 3, 5, 1],
            C.TIMESTAMP: pd.to_datetime([5, 5, 5, 1], unit="s", utc=True),
        }
    )
    split = make_split(frame, SplitConfig(name="leave_last_out"))
    assert split.test[C.ITEM].tolist() == [9]
    assert split.valid[C.ITEM].tolist() == [5]


@pytest.mark.parametrize("name", ["user_stratified", "item_stratified"])
def test_random_splits_are_seeded(ml100k_small, name):
    d = ml100k_small
    a = make_split(d.interactions, SplitConfig(name=name), seed=1)
    b = make_split(d.interactions, SplitConfig(name=name), seed=1)
    c = make_split(d.interactions, SplitConfig(name=name), seed=2)
    assert a.test.index.equals(b.test.index)
    assert not a.test.index.equals(c.test.index)


def test_item_stratified_proportions(ml100k):
    split = make_split(ml100k.interactions, SplitConfig(name="item_stratified"), seed=0)
    per_item = ml100k.interactions.groupby(C.ITEM).size()
    test = split.test.groupby(C.ITEM).size().reindex(per_item.index, fill_value=0)
    assert (test.to_numpy() == half_even(per_item.to_numpy(), 0.25)).all()
    train_part = per_item - test
    valid = split.valid.groupby(C.ITEM).size().reindex(per_item.index, fill_value=0)
    assert (valid.to_numpy() == half_even(train_part.to_numpy(), 0.25)).all()


def test_leakage_checks_can_fail(ml100k_small):
    d = ml100k_small
    split = make_split(d.interactions, SplitConfig(name="global_temporal"))
    assert check_split(split, d.interactions) == []
    # a test row moved into train: order violated and parts overlap
    leaked = split.__class__(**{**split.__dict__, "train": pd.concat([split.train, split.test.iloc[:1]])})
    problems = check_split(leaked, d.interactions)
    assert any("shares" in p for p in problems) and any("after" in p for p in problems)
    # a dropped row
    dropped = split.__class__(**{**split.__dict__, "test": split.test.iloc[1:]})
    assert any("missing" in p for p in check_split(dropped, d.interactions))
    # per-user order: swap one user's last train row and first test row
    ut = make_split(d.interactions, SplitConfig(name="user_temporal"))
    user = ut.test[C.USER].iloc[0]
    train_row = ut.train[ut.train[C.USER] == user].iloc[[0]]
    test_row = ut.test[ut.test[C.USER] == user].iloc[[0]]
    swapped = ut.__class__(
        **{
            **ut.__dict__,
            "train": pd.concat([ut.train.drop(train_row.index), test_row]),
            "test": pd.concat([ut.test.drop(test_row.index), train_row]),
        }
    )
    assert any(f"user {user}" in p for p in check_split(swapped, d.interactions))


def test_bad_fractions_rejected():
    with pytest.raises(ValueError, match="leaves no training data"):
        SplitConfig(name="global_temporal", valid_fraction=0.5, test_fraction=0.5)


def test_every_split_name_has_a_rule():
    """A split is named in the config (its defaults) and defined once in data/splits.py."""
    from typing import get_args

    from personalize.config import SplitName
    from personalize.data.splits import RULES

    assert list(RULES) == list(get_args(SplitName))
