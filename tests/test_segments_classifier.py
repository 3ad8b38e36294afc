"""The segment classifier: temporal evaluation, first-N features, baselines, the exported trees
and their NumPy evaluator, request encoding, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from personalize.config import SplitConfig
from personalize.config.segments import ClassifierConfig
from personalize.core import columns as C
from personalize.core.errors import DataError
from personalize.data.matrix import IdIndex, InteractionData
from personalize.data.splits import make_split
from personalize.features.profile_table import AGE_BUCKETS, ProfileScaler, build_profile_table
from personalize.scoring import trees
from personalize.segments.classifier import (
    SegmentClassifier,
    evaluate_classifier,
    expected_calibration_error,
    plot_confusion,
    plot_reliability,
    plot_scores,
    temporal_users,
)

CONFIG = ClassifierConfig(first_n=[10])


@pytest.fixture(scope="module")
def setup(ml100k):
    """ML-100K user_temporal train part, a seeded 12-d item embedding (exercises the PCA
    features), and K-Means (k=4) segment labels on the scaled full training profile."""
    from sklearn.cluster import KMeans

    split = make_split(ml100k.interactions, SplitConfig(), 0, ml100k.users, ml100k.items)
    index = IdIndex.build(split.users, split.items, split.train, split.valid, split.test)
    train = InteractionData.build(split.train, index, split.users, split.items)
    emb = np.random.default_rng(0).normal(size=(train.n_items, 12)).astype(np.float32)
    profile = build_profile_table(train, emb)
    x = ProfileScaler().fit_transform(profile)
    labels = pd.Series(KMeans(4, random_state=0, n_init=4).fit_predict(x), index=profile.table.index)
    return ml100k, train, emb, labels


@pytest.fixture(scope="module")
def evaluation(setup):
    _, train, emb, labels = setup
    return evaluate_classifier(train, labels, emb, CONFIG, seed=0)


def test_temporal_split_trains_on_users_who_joined_earlier(setup, evaluation):
    _, train, _, _ = setup
    users = temporal_users(train, 0.7)
    assert len(users) == train.frame[C.USER_IDX].nunique() == 943
    assert (users["role"] == "train").sum() == round(943 * 0.7)
    first = train.frame.groupby(C.USER_IDX)[C.TIMESTAMP].min()
    expected = pd.Series(first.to_numpy(), index=train.index.users[first.index])
    assert (users.set_index(C.USER)["first_interaction"] == expected.loc[users[C.USER]]).all()
    train_part, test_part = users[users["role"] == "train"], users[users["role"] == "test"]
    assert train_part["first_interaction"].max() <= test_part["first_interaction"].min()
    order = list(zip(users["first_interaction"], users[C.USER]))
    assert order == sorted(order)  # ties by user ID
    # the evaluation used exactly this split: its N = 0 rows see every test user
    n0 = evaluation.summary[evaluation.summary["first_n"] == 0]
    assert set(n0["test_users"]) == {len(test_part)} and set(n0["train_users"]) == {len(train_part)}
    assert evaluation.users.equals(users)


def test_temporal_split_breaks_ties_by_user_id():
    stamp = pd.Timestamp("2020-01-01", tz="UTC")
    frame = pd.DataFrame({C.USER: [30, 10, 20, 10], C.ITEM: [1, 1, 2, 2],
                          C.TIMESTAMP: [stamp, stamp, stamp, stamp + pd.Timedelta(1, "s")]})  # fmt: skip
    index = IdIndex.build(pd.DataFrame({C.USER: [10, 20, 30]}), pd.DataFrame({C.ITEM: [1, 2]}), frame)
    data = InteractionData.build(
        frame, index, pd.DataFrame({C.USER: [10, 20, 30]}), pd.DataFrame({C.ITEM: [1, 2]})
    )
    users = temporal_users(data, 0.5)
    assert users[C.USER].tolist() == [10, 20, 30]
    assert users["role"].tolist() == ["train", "train", "test"]  # round(1.5) = 2 (half to even)
    assert users["interactions"].tolist() == [2, 1, 1]


def test_features_for_n_use_only_the_first_n_interactions(setup, evaluation):
    _, train, emb, labels = setup
    n = 10
    frame = train.frame.copy()
    later = frame.groupby(C.USER_IDX, sort=False).cumcount().to_numpy() >= n
    frame.loc[later, C.ITEM_IDX] = (frame.loc[later, C.ITEM_IDX] + 7) % train.n_items
    frame.loc[later, C.RATING] = 6.0 - frame.loc[later, C.RATING]
    changed = dataclasses.replace(train, frame=frame)
    model = evaluation.classifiers[n]
    before = model.features(build_profile_table(train, emb, first_n=n))
    after = model.features(build_profile_table(changed, emb, first_n=n))
    np.testing.assert_array_equal(before, after)
    full_before = build_profile_table(train, emb).table
    full_after = build_profile_table(changed, emb).table
    assert not np.allclose(full_before["rating_mean"], full_after["rating_mean"])  # the change is real
    # the whole evaluation at N is unchanged when only later interactions change
    again = evaluate_classifier(changed, labels, emb, CONFIG, seed=0)
    cols = ["first_n", "model", "train_users", "test_users", "accuracy", "macro_f1", "ece"]
    pd.testing.assert_frame_equal(again.summary[cols], evaluation.summary[cols])


def test_users_with_fewer_than_n_interactions_are_counted_out(setup):
    _, train, emb, labels = setup
    ev = evaluate_classifier(train, labels, emb, ClassifierConfig(first_n=[25]), seed=0)
    users = ev.users
    short = users["interactions"] < 25
    row = ev.summary[(ev.summary["first_n"] == 25) & (ev.summary["model"] == "classifier")].iloc[0]
    assert row["excluded_train"] == (short & (users["role"] == "train")).sum() > 0
    assert row["excluded_test"] == (short & (users["role"] == "test")).sum() > 0
    assert row["test_users"] + row["excluded_test"] == (users["role"] == "test").sum()


def test_baselines_are_computed_on_the_same_users(setup, evaluation):
    _, _, _, labels = setup
    s = evaluation.summary.set_index(["first_n", "model"])
    assert set(s.index) == {(0, "majority"), (0, "demographics"), (10, "classifier"), (10, "majority"),
                            (10, "demographics")}  # fmt: skip
    users = evaluation.users
    train_ids = users.loc[users["role"] == "train", C.USER]
    test_ids = users.loc[users["role"] == "test", C.USER]
    counts = labels.loc[train_ids].value_counts()
    assert evaluation.majority == counts.index[counts.to_numpy() == counts.max()].min()
    share = (labels.loc[test_ids] == evaluation.majority).mean()
    assert s.loc[(0, "majority"), "accuracy"] == pytest.approx(share)
    assert s.loc[(10, "majority"), "test_users"] == s.loc[(10, "classifier"), "test_users"]
    # the demographics-only model reads nothing of the interactions
    names = evaluation.demographics.feature_names
    assert names[0] == "age_bucket" and all("=" in n for n in names[1:])
    assert {n.split("=")[0] for n in names[1:]} == {"gender", "occupation", "region"}
    assert set(evaluation.classifiers[10].feature_names) > set(names)
    for model in ("classifier", "majority", "demographics"):
        row = s.loc[(10, model)]
        assert 0 <= row["macro_f1"] <= 1 and 0 <= row["accuracy"] <= 1 and 0 <= row["ece"] <= 1
        assert evaluation.confusion[(model, 10)].to_numpy().sum() == row["test_users"]
    assert s.loc[(10, "classifier"), "accuracy"] > s.loc[(10, "majority"), "accuracy"]


def test_expected_calibration_error_by_hand():
    confidence = np.array([0.95, 0.92, 0.55, 0.51, 1.0, 0.3])
    correct = np.array([1, 0, 1, 1, 1, 0])
    ece, table = expected_calibration_error(confidence, correct, bins=10)
    # bin 9: 0.95, 0.92, 1.0 -> conf 0.9567, acc 2/3; bin 5: 0.55, 0.51 -> 0.53 vs 1; bin 3: 0.3 vs 0
    expected = (3 * abs(2 / 3 - (0.95 + 0.92 + 1.0) / 3) + 2 * abs(1 - 0.53) + 1 * 0.3) / 6
    assert ece == pytest.approx(expected)
    assert table["users"].tolist() == [0, 0, 0, 1, 0, 2, 0, 0, 0, 3]
    assert np.isnan(table.loc[0, "confidence"])


def _check_equal(model: SegmentClassifier, x: np.ndarray) -> None:
    arrays, params = model.to_arrays()
    ours = trees.predict_proba(arrays, params, x)
    theirs = model.model_.predict_proba(x)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(trees.predict(arrays, params, x), model.model_.predict(x))


def test_numpy_trees_equal_sklearn_with_missing_values_and_unknown_categories(setup, tmp_path):
    _, train, emb, labels = setup
    profile = build_profile_table(train, emb, first_n=10).table
    rows = profile.copy()
    rng = np.random.default_rng(1)
    unknown = rng.random(len(rows)) < 0.2  # a fifth of the training users without age and gender
    rows.loc[unknown, "age_bucket"] = "unknown"
    rows.loc[unknown, C.GENDER] = "unknown"
    model = SegmentClassifier(ClassifierConfig(early_stopping=False, max_iter=30), first_n=10).fit(
        rows, labels
    )
    arrays, params = model.to_arrays()
    assert params["loss"] == "multinomial" and len(arrays["baseline"]) == 4
    assert len(arrays["tree_start"]) == 4 * params["n_iterations"]
    # requests the training never saw: unseen categories, missing values in every kind of column
    probe = profile.sample(120, random_state=2).copy()
    probe.iloc[:30, probe.columns.get_loc(C.OCCUPATION)] = "astronaut"
    probe.iloc[20:50, probe.columns.get_loc("region")] = "zip ?"
    probe.iloc[40:70, probe.columns.get_loc("age_bucket")] = "unknown"
    probe.iloc[60:90, probe.columns.get_loc("rating_mean")] = np.nan
    probe.iloc[80:100, probe.columns.get_loc("embedding:3")] = np.nan
    x = model.features(pd.concat([profile, probe]))
    assert np.isnan(x).any()
    _check_equal(model, x)
    # round trip through files
    loaded_arrays, loaded_params = trees.load_trees(trees.save_trees(tmp_path / "trees", arrays, params))
    np.testing.assert_array_equal(
        trees.predict_proba(loaded_arrays, loaded_params, x), trees.predict_proba(arrays, params, x)
    )
    assert (
        model.assign_segment(probe).tolist() == trees.predict(arrays, params, model.features(probe)).tolist()
    )


def test_numpy_trees_equal_sklearn_for_two_segments(setup):
    _, train, emb, labels = setup
    profile = build_profile_table(train, emb, first_n=5).table
    binary = (labels == labels.mode().iloc[0]).astype(int)
    model = SegmentClassifier(ClassifierConfig(max_iter=40), first_n=5).fit(profile, binary)
    assert model.to_arrays()[1]["loss"] == "binomial"
    _check_equal(model, model.features(profile))


def test_request_encoding_matches_the_profile(setup, evaluation):
    data, train, _, _ = setup
    demo = evaluation.demographics
    arrays, params = demo.to_arrays()
    users = data.users.set_index(C.USER).loc[train.index.users]
    rows = users.reset_index()[[C.AGE, C.GENDER, C.OCCUPATION, C.ZIP]].to_dict("records")
    x = trees.encode_request(rows, arrays, params)
    profile = build_profile_table(train, None).table
    np.testing.assert_array_equal(x, demo.features(profile.loc[train.index.users]))
    _check_equal(demo, x)

    occupation = params["categorical"]["occupation"]
    odd = [
        {"age": 30, "gender": "F", "occupation": occupation[0], "zip_code": "94043"},
        {"age": None, "gender": "X", "occupation": "astronaut", "zip_code": None},
        {"age": float("nan"), "gender": None, "zip_code": "K1A 0B1"},
        {"age": "17", "gender": "M", "occupation": occupation[1], "zip_code": " 02139"},
        {"age": 300},
    ]
    x = trees.encode_request(odd, arrays, params)
    names = params["feature_names"]
    col = {n: j for j, n in enumerate(names)}
    labels = [label for _, _, label in AGE_BUCKETS]
    assert x[0, col["age_bucket"]] == labels.index("25-34")
    assert x[3, col["age_bucket"]] == labels.index("<18")
    assert np.isnan(x[[1, 2, 4], col["age_bucket"]]).all()
    assert x[0, col["gender=F"]] == 1 and x[0, col[f"occupation={occupation[0]}"]] == 1
    assert x[0, col["region=zip 9"]] == 1 and x[3, col["region=zip 0"]] == 1
    assert x[2, col["region=other"]] == 1
    one_hot = [j for n, j in col.items() if n != "age_bucket"]
    assert x[1, one_hot].sum() == 0 and x[4, one_hot].sum() == 0  # unseen or missing: all zeros
    assert (x[np.ix_([0, 3], one_hot)].sum(axis=1) == 3).all()
    _check_equal(demo, x)
    with pytest.raises(ValueError, match="row 0: age 'old'"):
        trees.encode_request([{"age": "old"}], arrays, params)
    with pytest.raises(ValueError, match="demographics-only"):
        trees.encode_request(rows[:2], *evaluation.classifiers[10].to_arrays())


def test_determinism_by_seed(setup, evaluation):
    _, train, emb, labels = setup
    again = evaluate_classifier(train, labels, emb, CONFIG, seed=0)
    cols = ["first_n", "model", "accuracy", "macro_f1", "ece", "iterations"]
    pd.testing.assert_frame_equal(again.summary[cols], evaluation.summary[cols])
    a, pa = again.classifiers[10].to_arrays()
    b, pb = evaluation.classifiers[10].to_arrays()
    assert pa == pb and all(np.array_equal(a[k], b[k]) for k in trees.ARRAYS)
    other = SegmentClassifier(CONFIG, first_n=10, seed=1).fit(
        build_profile_table(train, emb, first_n=10).table.loc[labels.index], labels
    )
    c, _ = other.to_arrays()
    assert not all(np.array_equal(a[k], c[k]) for k in ("threshold", "value", "pca_components"))


def test_bad_labels_and_rows_are_named(setup, evaluation):
    _, train, emb, labels = setup
    with pytest.raises(DataError, match="no segment label for 1 users"):
        evaluate_classifier(train, labels.drop(labels.index[0]), emb, CONFIG)
    bad = labels.astype(float)
    bad.iloc[3] = 1.5
    with pytest.raises(DataError, match="integers >= 0"):
        evaluate_classifier(train, bad, emb, CONFIG)
    with pytest.raises(DataError, match="without training interactions"):
        evaluate_classifier(train, pd.concat([labels, pd.Series([0], index=[99999])]), emb, CONFIG)
    profile = build_profile_table(train, emb, first_n=10).table
    with pytest.raises(DataError, match=r"lack the columns.*occupation"):
        evaluation.classifiers[10].features(profile.drop(columns=[C.OCCUPATION]))


def test_figures(evaluation):
    import io

    import matplotlib.pyplot as plt

    for fig in (plot_scores(evaluation), plot_reliability(evaluation), plot_confusion(evaluation, 10)):
        assert isinstance(fig, plt.Figure) and fig.axes
        fig.savefig(io.BytesIO(), format="png")  # draws (layout, legends) without writing a file
    with pytest.raises(ValueError, match="no confusion matrix"):
        plot_confusion(evaluation, 7)
