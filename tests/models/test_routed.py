import dataclasses

import numpy as np
import pandas as pd
import pytest

from contract import RecommenderContract
from personalize.core import columns as C
from personalize.evaluation.monitor import ValidationMonitor
from personalize.models import create_model
from personalize.models.hybrid.routed import choose_routes


@pytest.fixture(scope="module")
def contract_data(contract_data):
    """The contract's split with a segment per user (three segments by user ID)."""
    split, index, train, valid = contract_data
    users = train.users.assign(**{C.SEGMENT: train.users[C.USER] % 3})
    return split, index, dataclasses.replace(train, users=users), valid


COMPONENTS = [{"type": "popularity"}, {"type": "ease", "params": {"l2": 100}}]


class TestRouted(RecommenderContract):
    model_type = "routed"
    # the cold user (segment 0) is routed to EASE, which leaves cold users to the fallback
    params = {"components": COMPONENTS, "routes": {0: 1, 1: 0, 2: 1}, "default": 1}


def test_routes_by_hand():
    values = pd.DataFrame({0: [0.1, 0.5, 0.2, 0.9, 0.0], 1: [0.3, 0.1, 0.4, 0.1, 0.2]}, index=[0, 1, 2, 3, 4])
    segment = np.array([0, 0, 1, 1, -1])
    routes, default, table = choose_routes(values, segment, min_users=2)
    # segment 0: means 0.30 vs 0.20 -> 0; segment 1: 0.55 vs 0.25 -> 0; overall 0.34 vs 0.22 -> 0
    assert routes == {0: 0, 1: 0} and default == 0
    routes, default, _ = choose_routes(values, segment, min_users=3)  # too few users: the default
    assert routes == {0: 0, 1: 0}
    values[1] = [0.9, 0.9, 0.0, 0.0, 0.0]
    routes, default, table = choose_routes(values, segment, min_users=1)
    assert routes == {0: 1, 1: 0} and table["route"].tolist() == [1, 0]


def test_routed_users_get_their_components_answer(contract_data):
    _, index, train, _ = contract_data
    model = create_model("routed", TestRouted.params).fit(train)
    pop = create_model("popularity", {}).fit(train)
    ease = create_model("ease", {"l2": 100}).fit(train)
    segment = train.users[C.SEGMENT].to_numpy()
    users = np.arange(index.n_users)
    want = np.where((segment == 1)[:, None], pop.score(users), ease.score(users))
    np.testing.assert_allclose(model.score(users), want, rtol=1e-6)


def test_routes_chosen_on_validation_never_lose_to_a_component_per_segment(contract_data):
    _, _, train, valid = contract_data
    monitor = ValidationMonitor(valid, metric="ndcg@10")
    model = create_model("routed", {"components": COMPONENTS, "min_users": 1}).fit(train, monitor)
    per_user = monitor.evaluate_users(model)
    segment = train.users[C.SEGMENT].to_numpy()[per_user.index.to_numpy()]
    for i, comp in enumerate(model.components_):
        theirs = monitor.evaluate_users(comp)
        for s in np.unique(segment):
            mask = segment == s
            assert per_user[mask].mean() >= theirs[mask].mean() - 1e-12, (i, s)
    refit = create_model("routed", model.selected_config().model_dump()).fit(train)
    np.testing.assert_allclose(refit.score(np.arange(20)), model.score(np.arange(20)), rtol=1e-6)
