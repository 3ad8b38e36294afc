"""Segments in the recipe: labels from the data each model is fitted on (never test rows), the
per-segment leaderboard and the routed hybrid, `personalize segment` tracked in MLflow, and the
exported champion that names a user's segment and falls back on segment popularity."""

from __future__ import annotations

import dataclasses
import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from personalize import scoring
from personalize.config.serving import ExportConfig
from personalize.core import columns as C
from personalize.data.matrix import InteractionData
from personalize.recipe import load_experiment, prepare_split, run_experiment
from personalize.recipe.segments import run_segmentation
from personalize.serving.state import all_data, segment_data, write_state

SMALL = ["data.sample_users=120", "data.write_processed=false", "segments.clustering.k=3"]
MODELS = [
    "models=[{type: popularity}, {type: segment_popularity}, {type: ease, params: {l2: 100}}, "
    "{type: routed, params: {components: [{type: ease, params: {l2: 100}}, {type: popularity}], min_users: 5}}]"
]


@pytest.fixture(scope="module")
def config():
    return load_experiment("experiments/ml100k_segments.yaml", SMALL + MODELS)


@pytest.fixture(scope="module")
def prepared(config, ml100k):
    from personalize.recipe.steps import load_data

    dataset = load_data(config)
    return dataset, prepare_split(dataset, config, 0)


def test_labels_come_from_the_data_each_model_is_fitted_on(prepared, config):
    dataset, ready = prepared
    seg = ready.segmentation
    assert seg is not None and seg.k == 3
    valid_labels = seg.labels(ready.train)
    test_labels = seg.labels(ready.train_valid)
    by_user = pd.Series(ready.valid_target.segments, index=ready.valid_target.user_ids)
    assert (by_user == valid_labels.reindex(by_user.index)).all()
    by_user = pd.Series(ready.test_target.segments, index=ready.test_target.user_ids)
    assert (by_user == test_labels.reindex(by_user.index)).all()
    # the models read the same labels as a user attribute
    assert (
        ready.train.users[C.SEGMENT].to_numpy() == valid_labels.reindex(ready.index.users).to_numpy()
    ).all()
    # test rows never enter: removing them leaves every label unchanged
    split = ready.split
    cut = dataclasses.replace(split, test=split.test.iloc[:0])
    tv = InteractionData.build(cut.train_valid(), ready.index, split.users, split.items, dataset.events)
    pd.testing.assert_series_equal(seg.labels(tv), test_labels)


def test_users_without_history_are_labelled_by_their_demographics(prepared):
    _, ready = prepared
    seg = ready.segmentation
    train = ready.train
    cold = pd.DataFrame(
        {C.USER: [10**6], C.AGE: [25], C.GENDER: ["M"], C.OCCUPATION: ["student"], C.ZIP: ["55455"]}
    )
    users = pd.concat([train.users.drop(columns=[C.SEGMENT]), cold], ignore_index=True)
    index = dataclasses.replace(train.index, users=pd.Index([*train.index.users, 10**6]))
    data = InteractionData.build(ready.split.train, index, users, ready.split.items)
    labels = seg.labels(data)
    assert labels.loc[10**6] == int(seg.labeller.assign_segment(_demographics(cold)).iloc[0])
    assert (labels >= 0).all()


def _demographics(users):
    from personalize.features.profile_table import demographic_rows

    return demographic_rows(users)


def test_per_segment_leaderboard_and_routing(config, tracking_store):
    result = run_experiment(config, progress=False, echo=None)
    table = result.by_segment
    assert set(table["model"]) == {o.label for o in result.outcomes}
    evaluated = result.best.per_user("test")
    for _, rows in table.groupby("model"):
        assert rows["users"].sum() == len(evaluated)  # every evaluated user in one segment
    best = result.leaderboard.iloc[0]["model"]
    assert table.loc[table["model"] == best, "p vs best"].isna().all()
    others = table[table["model"] != best]
    assert others["p vs best (Holm)"].ge(others["p vs best"]).all()
    routing = result.routing
    assert routing.iloc[0]["name"] == "all users" and len(routing) == 1 + table["segment"].nunique()
    per_user = {o.label: o.per_user("test") for o in result.outcomes}
    single = routing.iloc[0]["best single model"]
    diff = (per_user["routed"]["ndcg@10"] - per_user[single]["ndcg@10"]).mean()
    assert routing.iloc[0]["difference"] == pytest.approx(diff)
    client = mlflow.MlflowClient(tracking_uri=tracking_store)
    names = {a.path for a in client.list_artifacts(result.parent_run_id, "by_segment")}
    assert {
        "by_segment/leaderboard.csv",
        "by_segment/routing.md",
        "by_segment/models_by_segment.png",
    } <= names
    run = client.get_run(next(o.run_id for o in result.outcomes if o.label == "ease"))
    assert "test_segment0_ndcg_at_10" in run.data.metrics


def test_segment_command_logs_the_study(tracking_store, tmp_path):
    config = load_experiment(
        "experiments/ml100k_segments.yaml",
        [
            "data.sample_users=150",
            "segments.clustering.ks=[2, 3, 4]",
            "segments.clustering.choose_from=[2, 4]",
            "segments.clustering.bootstrap=3",
            "segments.clustering.seeds=[0, 1]",
            "segments.autoencoder.epochs=2",
            "models=[{type: popularity}]",
        ],
    )
    result = run_segmentation(config, progress=False, echo=None)
    assert result.profile_path is not None and result.profile_path.exists()
    client = mlflow.MlflowClient(tracking_uri=tracking_store)
    run = client.get_run(result.run_id)
    assert run.data.tags["personalize.kind"] == "segmentation"
    assert run.data.params["chosen.k"] == str(result.study.segmentation.k)
    assert run.data.tags["profile_fingerprint"] == result.study.segmentation.profiles.fingerprint
    assert {"silhouette", "bootstrap_ari", "classifier_n5_macro_f1"} <= set(run.data.metrics)
    paths = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {"plots/selection.png", "plots/map.png", "plots/classifier_scores.png"} <= paths
    assert result.experiment is not None and result.experiment.by_segment is not None


def test_the_shipped_scorer_names_segments_and_falls_back_on_them(prepared, tmp_path):
    dataset, _ = prepared
    config = load_experiment("experiments/ml100k_segments.yaml", SMALL).segments
    data, fallback = segment_data(all_data(dataset), config, dataset.fingerprint)
    from personalize.models import create_model

    model = create_model("ease", {"l2": 100}).fit(data)
    folder = write_state(model, tmp_path / "state", ExportConfig(segments=True), segments=fallback)
    served = scoring.TopKScorer.load(folder)
    known = int(data.index.users[0])
    request = [known, 10**7, 10**7 + 1]
    attributes = [None, {"age": 25, "gender": "M", "occupation": "student", "zip_code": "55455"}, None]
    out = served.recommend(request, k=5, attributes=attributes)
    segment = out.groupby(C.USER, sort=False)["segment"].first()
    assert segment[known] == fallback.user_segment[0]
    arrays, params = fallback.labeller
    x = scoring.trees.encode_request([attributes[1]], arrays, params)
    expected = int(scoring.trees.predict(arrays, params, x)[0])
    assert segment[10**7] == expected and pd.isna(segment[10**7 + 1])
    top = np.argsort(-fallback.scores[expected], kind="stable")[:5]
    assert out[out[C.USER] == 10**7][C.ITEM].tolist() == data.index.items[top].tolist()
    popular = np.argsort(-model.popularity_, kind="stable")[:5]
    assert out[out[C.USER] == 10**7 + 1][C.ITEM].tolist() == data.index.items[popular].tolist()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["segments"]["names"] == fallback.names


def test_export_with_segments_needs_segments(config, tracking_store):
    from personalize.recipe import export_result
    from personalize.serving.champion import ExportError

    plain = config.model_copy(
        update={
            "segments": config.segments.model_copy(update={"enabled": False}),
            "evaluation": config.evaluation.model_copy(update={"by": None}),
            "models": [m for m in config.models if m.type == "popularity"],
            "export": ExportConfig(segments=True),
        }
    )
    result = run_experiment(plain, progress=False, echo=None)
    with pytest.raises(ExportError, match=r"export\.segments needs segments\.enabled"):
        export_result(result, progress=False, echo=None)


def test_the_exported_champion_labels_segments_over_mlflow(config, tracking_store):
    from personalize.recipe import export_result

    with_export = config.model_copy(
        update={
            "models": [m for m in config.models if m.type in ("popularity", "ease")],
            "export": ExportConfig(segments=True),
        }
    )
    result = run_experiment(with_export, progress=False, echo=None)
    exported = export_result(result, progress=False, echo=None)
    model = mlflow.pyfunc.load_model(exported.model_uri)
    known = int(result.dataset.users[C.USER].iloc[0])
    rows = [
        {"user_id": known},
        {"user_id": 10**7, "age": 30, "gender": "F", "occupation": "writer", "zip_code": "10001"},
        {"user_id": 10**7 + 1},
    ]
    answer = pd.DataFrame([r.model_dump() if hasattr(r, "model_dump") else r for r in model.predict(rows)])
    segment = answer.groupby(C.USER, sort=False)["segment"].first()
    assert segment[known] >= 0 and segment[10**7] >= 0 and pd.isna(segment[10**7 + 1])
    assert not answer.loc[answer[C.USER] == 10**7, C.PERSONALISED].any()


def test_segments_that_change_with_the_seed_are_not_averaged(tracking_store):
    """A random split's training part changes with the seed, and so do the segments: averaging a
    user's values over seeds within one segment would mix segments, so the breakdown is refused."""
    config = load_experiment(
        "experiments/ml100k_segments.yaml",
        [*SMALL, "seeds=[0,1]", "split.name=user_stratified", "models=[{type: popularity}]"],
    )
    with pytest.raises(ValueError, match="segment differs between seeds"):
        run_experiment(config, track=False, progress=False, echo=None)
