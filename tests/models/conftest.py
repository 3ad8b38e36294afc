"""Fixtures for the model contract tests."""

from __future__ import annotations

import pandas as pd
import pytest

from contract import COLD_USER
from personalize.config import SplitConfig
from personalize.core import columns as C
from personalize.data.matrix import IdIndex, InteractionData
from personalize.data.splits import make_split
from personalize.evaluation import make_target


@pytest.fixture(scope="session")
def contract_data(ml100k_small):
    """A small user_temporal split plus one known user without interactions (cold)."""
    d = ml100k_small
    users = pd.concat([d.users, pd.DataFrame({C.USER: [COLD_USER]})], ignore_index=True)
    split = make_split(d.interactions, SplitConfig(), 0, users, d.items)
    index = IdIndex.build(split.users, split.items, split.train, split.valid, split.test)
    train = InteractionData.build(split.train, index, split.users, split.items)
    valid = make_target("valid", split.valid, split.train, index)
    return split, index, train, valid
