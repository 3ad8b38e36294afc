"""The user_holdout split (strong generalisation) and its evaluation through fold-in: the leakage
checks (which must be able to fail), the fold-in scores, and the refusal of models that cannot
fold in."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from personalize.config import ExperimentConfig, ModelSpec, SplitConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError
from personalize.data.matrix import IdIndex, InteractionData
from personalize.data.splits import check_split, half_even, make_split
from personalize.evaluation.evaluator import Evaluator, make_target
from personalize.models.registry import create_model
from personalize.recipe.steps import fit_and_evaluate, prepare_split
from personalize.scoring import topk

HOLDOUT = SplitConfig(name="user_holdout")


def _split(dataset, seed=3, config=HOLDOUT):
    return make_split(dataset.interactions, config, seed=seed, users=dataset.users, items=dataset.items)


def _config(**split) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {"name": "uh", "split": {"name": "user_holdout", **split}, "models": [{"type": "popularity"}]}
    )


def test_user_holdout_is_sound_on_movielens(ml100k):
    split = _split(ml100k)
    assert check_split(split, ml100k.interactions) == []
    parts = [split.train, split.valid_input, split.valid, split.test_input, split.test]
    assert sum(len(p) for p in parts) == len(ml100k.interactions)
    index = pd.concat(parts).index
    assert index.is_unique and set(index) == set(ml100k.interactions.index)
    valid_users = set(split.valid_input[C.USER]) | set(split.valid[C.USER])
    test_users = set(split.test_input[C.USER]) | set(split.test[C.USER])
    assert len(valid_users) == len(test_users) == round(943 * 0.1) == 94
    assert not (valid_users | test_users) & set(split.train[C.USER])
    assert not valid_users & test_users
    # each held-out user: the first round(0.8 n) rows in the total order are the input
    data = ml100k.interactions.sort_values([C.TIMESTAMP, C.ITEM, C.USER], kind="stable")
    for user in sorted(test_users)[:20]:
        rows = data[data[C.USER] == user]
        n_input = int(half_even(np.array([len(rows)]), 0.8)[0])
        assert set(rows.index[:n_input]) == set(split.test_input[split.test_input[C.USER] == user].index)
        assert set(rows.index[n_input:]) == set(split.test[split.test[C.USER] == user].index)
    assert split.params["input_fraction"] == 0.8 and split.params["seed"] == 3


def test_user_holdout_is_seeded(ml100k_small):
    a, b, c = _split(ml100k_small, 1), _split(ml100k_small, 1), _split(ml100k_small, 2)
    for name in ("train", "valid_input", "valid", "test_input", "test"):
        assert getattr(a, name).index.equals(getattr(b, name).index)
    assert set(a.test[C.USER]) != set(c.test[C.USER])


def test_user_holdout_fractions(ml100k_small):
    split = _split(
        ml100k_small, config=SplitConfig(name="user_holdout", test_fraction=0.25, input_fraction=0.5)
    )
    assert split.test[C.USER].nunique() == 20 and split.valid[C.USER].nunique() == 8  # 80 users
    n_in = split.test_input.groupby(C.USER).size()
    n_out = split.test.groupby(C.USER).size()
    assert (n_in.to_numpy() == half_even((n_in + n_out).to_numpy(), 0.5)).all()


def test_leakage_checks_can_fail(ml100k_small):
    split = _split(ml100k_small)
    data = ml100k_small.interactions
    user = split.test[C.USER].iloc[0]
    # a held-out user's row moved to train
    moved = split.test_input[split.test_input[C.USER] == user].iloc[:1]
    bad = dataclasses.replace(
        split, train=pd.concat([split.train, moved]), test_input=split.test_input.drop(moved.index)
    )
    assert any("test users have a train row" in p for p in check_split(bad, data))
    # input and target swapped for one user: an input row after a target row
    t_rows = split.test[split.test[C.USER] == user]
    i_rows = split.test_input[split.test_input[C.USER] == user]
    swapped = dataclasses.replace(
        split,
        test=pd.concat([split.test.drop(t_rows.index), i_rows.iloc[:1]]),
        test_input=pd.concat([split.test_input.drop(i_rows.index[:1]), t_rows]),
    )
    assert any("input row comes after a target row" in p for p in check_split(swapped, data))
    # a row dropped
    dropped = dataclasses.replace(split, valid_input=split.valid_input.iloc[1:])
    assert any("missing" in p for p in check_split(dropped, data))


def test_refit_data_has_validation_users_never_test_users(ml100k_small):
    prepared = prepare_split(ml100k_small, _config(), 0)
    split = prepared.split
    fitted_tv = set(prepared.train_valid.index.users[np.diff(prepared.train_valid.matrix.indptr) > 0])
    fitted_train = set(prepared.train.index.users[np.diff(prepared.train.matrix.indptr) > 0])
    assert set(split.valid[C.USER]) <= fitted_tv and not set(split.test[C.USER]) & fitted_tv
    assert not (set(split.valid[C.USER]) | set(split.test[C.USER])) & fitted_train
    assert len(split.train_valid()) == len(split.train) + len(split.valid_input) + len(split.valid)
    assert not prepared.test_target.warm.any() and prepared.test_target.foldin is not None


def _tiny() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    rows = []
    for u in range(30):
        items = rng.choice(12, size=8, replace=False)
        rows += [(u, int(i), 1_000 * u + t) for t, i in enumerate(items)]
    frame = pd.DataFrame(rows, columns=[C.USER, C.ITEM, C.TIMESTAMP])
    frame[C.TIMESTAMP] = pd.to_datetime(frame[C.TIMESTAMP], unit="s", utc=True)
    return frame, pd.DataFrame({C.ITEM: np.arange(12)})


def test_fold_in_equals_scoring_the_input_history_for_ease():
    interactions, items = _tiny()
    split = make_split(interactions, SplitConfig(name="user_holdout", test_fraction=0.2), seed=0, items=items)
    index = IdIndex.build(split.users, split.items, split.train, split.valid, split.test)
    train = InteractionData.build(split.train, index, split.users, split.items)
    target = make_target("test", split.test, split.train, index, inputs=split.test_input)
    model = create_model("ease", {"l2": 5.0}, 0).fit(train)
    evaluator = Evaluator()
    items_top, scores_top, _ = evaluator.rank(model, target, k=5)
    # by hand: each test user's input row (binary) times EASE's B, input items masked
    x = np.zeros((len(target.users), 12), dtype=np.float32)
    for r, u in enumerate(target.user_ids):
        x[r, split.test_input.loc[split.test_input[C.USER] == u, C.ITEM].to_numpy()] = 1.0
    expected = x @ model.weights_
    expected[x > 0] = -np.inf
    want_items, want_scores = topk(expected.astype(np.float32), 5)
    assert np.array_equal(items_top, want_items)
    np.testing.assert_allclose(scores_top, want_scores, rtol=1e-5)
    # no list holds an item of the user's input part; a plain score() (no fold-in) would differ
    assert not (x[np.arange(len(x))[:, None], items_top] > 0).any()
    assert not np.allclose(model.score(target.users), expected, equal_nan=True)


def test_no_ranked_list_holds_an_input_item(ml100k_small):
    config = _config()
    prepared = prepare_split(ml100k_small, config, 0)
    outcome, _ = fit_and_evaluate(ModelSpec(type="itemknn", params={"neighbours": 20}), 0, prepared, config)
    for result, inputs in (
        (outcome.valid, prepared.split.valid_input),
        (outcome.test, prepared.split.test_input),
    ):
        recs = result.recommendations
        assert len(recs) and set(recs[C.USER]) == set(result.per_user.index)
        pairs = recs.merge(inputs[[C.USER, C.ITEM]], on=[C.USER, C.ITEM])
        assert pairs.empty
        assert not result.per_user["warm"].any()
    assert 0 < outcome.test.summary["ndcg@10"] <= 1


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(type="bpr"),
        ModelSpec(type="neumf"),
        ModelSpec(type="fusion", params={"components": [{"type": "ease"}, {"type": "bpr"}]}),
    ],
)
def test_models_that_cannot_fold_in_are_refused_before_fitting(ml100k_small, monkeypatch, spec):
    from personalize.models.base import Recommender

    def no_fit(self, *args, **kwargs):
        raise AssertionError("fitted before the refusal")

    monkeypatch.setattr(Recommender, "fit", no_fit)
    config = _config()
    prepared = prepare_split(ml100k_small, config, 0)
    with pytest.raises(
        ConfigError, match=r"cannot be evaluated on split 'user_holdout'.*held-out users have none"
    ):
        fit_and_evaluate(spec, 0, prepared, config)


def test_evaluator_refuses_a_fitted_scorer_without_fold_in(ml100k_small):
    prepared = prepare_split(ml100k_small, _config(), 0)
    model = create_model("bpr", {"factors": 8, "iterations": 2}, 0).fit(prepared.train)
    with pytest.raises(ConfigError, match="'bpr' cannot score held-out users on valid through fold-in"):
        Evaluator().evaluate(model, prepared.valid_target)
