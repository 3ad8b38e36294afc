import dataclasses

import numpy as np
import pytest

from contract import RecommenderContract
from personalize.core import columns as C
from personalize.core.errors import ConfigError
from personalize.models import create_model


@pytest.fixture(scope="module")
def contract_data(contract_data):
    """The contract's split with a segment per user (three segments by user ID)."""
    split, index, train, valid = contract_data
    users = train.users.assign(**{C.SEGMENT: train.users[C.USER] % 3})
    return split, index, dataclasses.replace(train, users=users), valid


class TestSegmentPopularity(RecommenderContract):
    model_type = "segment_popularity"


def test_scores_are_each_segments_popularity(contract_data):
    _, index, train, _ = contract_data
    model = create_model("segment_popularity", {}).fit(train)
    segment = train.users[C.SEGMENT].to_numpy()
    frame = train.frame
    for s in range(3):
        rows = segment[frame[C.USER_IDX].to_numpy()] == s
        want = np.bincount(frame[C.ITEM_IDX].to_numpy()[rows], minlength=index.n_items)
        user = int(np.flatnonzero(segment == s)[0])
        np.testing.assert_array_equal(model.score(np.array([user]))[0], want)
    unknown = model.score(np.array([-1]))[0]
    np.testing.assert_array_equal(unknown, train.item_popularity.astype(np.float32))


def test_without_segments_it_says_how_to_get_them(contract_data, ml100k_small):
    _, _, train, _ = contract_data
    plain = dataclasses.replace(train, users=train.users.drop(columns=[C.SEGMENT]))
    with pytest.raises(ConfigError, match=r"segments\.enabled: true"):
        create_model("segment_popularity", {}).fit(plain)
