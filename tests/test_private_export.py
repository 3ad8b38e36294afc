"""The private export: a user-level private champion ships no training user ID, history or
per-user array and answers each request from the history it sends; an event-level one ships its
users' DP-SGD vectors and no history; the export records its whole guarantee (selection
included); a model fitted under the test switch of reproducible noise is never registered."""

from __future__ import annotations

import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest

from personalize import scoring
from personalize.config.serving import ExportConfig
from personalize.core import columns as C
from personalize.data.matrix import IdIndex, InteractionData
from personalize.models import create_model
from personalize.models.privacy.noise import reproducible_noise
from personalize.recipe import load_experiment, run_experiment
from personalize.serving import Candidate, ExportError
from personalize.serving.state import guarantee, write_state

PREFIX = "subject-7f3a9c-"


@pytest.fixture(scope="module")
def data(ml100k_small) -> InteractionData:
    """The 80-user sample with distinctive string user IDs, so that a scan can find any of them."""
    d = ml100k_small
    rename = {u: f"{PREFIX}{u:04d}" for u in d.users[C.USER]}
    users = d.users.assign(**{C.USER: d.users[C.USER].map(rename)})
    frame = d.interactions.assign(**{C.USER: d.interactions[C.USER].map(rename)})
    index = IdIndex.build(users, d.items, frame)
    return InteractionData.build(frame, index, users, d.items)


def scan(folder, ids) -> list[str]:
    """Every training user ID found in any file of ``folder`` (raw bytes, Parquet included)."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            found += [str(u) for u in ids if str(u).encode() in blob]
    return found


def per_user_files(folder, n_users: int) -> list[str]:
    """Arrays of the state with one row per training user."""
    out = []
    for path in folder.rglob("*.npy"):
        array = np.load(path, allow_pickle=False)
        if array.ndim >= 1 and array.shape[0] in (n_users, n_users + 1) and "items" not in path.name:
            out.append(str(path.relative_to(folder)))
    return out


@pytest.mark.parametrize(
    "model_type, params",
    [
        ("dp_ease", {"epsilon": 8.0, "max_units": 1000, "l2": 50.0}),
        ("dp_als", {"epsilon": 8.0, "max_units": 1000, "factors": 8}),
        ("dp_multvae", {"epsilon": 8.0, "max_units": 1000, "epochs": 1, "hidden": 16, "latent": 8}),
        ("dp_popularity", {"epsilon": 8.0, "max_units": 1000}),
    ],
)
def test_a_user_level_private_export_holds_no_user(data, tmp_path, model_type, params):
    model = create_model(model_type, params).fit(data)
    ids = list(data.index.users)
    full = write_state(model, tmp_path / "full", ExportConfig(private=False))
    assert scan(full, ids), "the scan finds the IDs where they are shipped"
    folder = write_state(model, tmp_path / "private", ExportConfig())
    assert scan(folder, ids) == []
    assert per_user_files(folder, len(ids)) == []
    state = scoring.load_state(folder)
    assert len(state.users) == 0 and state.context.seen.shape == (0, data.n_items)
    assert scoring.user_arrays_of(state.scorer) == []
    record = state.info["privacy"]
    assert record["unit"] == "user" and record["private"] is True and "history" in record["ships"]
    assert record["epsilon_total"] == pytest.approx(8.0) and record["delta_total"] == pytest.approx(1e-6)


def test_a_private_export_answers_from_the_history_a_request_sends(data, tmp_path):
    """A stranger sending a training user's history gets what the model folds in for it; without
    a history the private fallback; the history's items are left out."""
    model = create_model("dp_als", {"epsilon": 8.0, "max_units": 1000, "factors": 8}).fit(data)
    served = scoring.TopKScorer.load(write_state(model, tmp_path / "s", ExportConfig()))
    user = data.index.users[0]
    history = list(data.index.items[data.matrix[0].indices])
    answer = served.recommend(["a stranger", "another"], k=5, recent=[[(i, None) for i in history], None])
    mine = answer[answer[C.USER] == "a stranger"]
    assert mine[C.PERSONALISED].all() and not set(mine[C.ITEM]) & set(history)
    expect = model.recommend([user], k=5)  # the model folds in the same history (billboard user step)
    assert mine[C.ITEM].tolist() == expect[C.ITEM].tolist()
    other = answer[answer[C.USER] == "another"]
    top = np.argsort(-model.popularity_, kind="stable")[:5]
    assert not other[C.PERSONALISED].any() and other[C.ITEM].tolist() == list(data.index.items[top])


def test_an_event_level_private_export_ships_its_users_vectors_and_no_history(data, tmp_path):
    params = {"epsilon": 8.0, "max_units": 100_000, "epochs": 1, "factors": 8, "mlp_embedding": 8}
    model = create_model("dp_neumf", {**params, "mlp_layers": [8]}).fit(data)
    folder = write_state(model, tmp_path / "s", ExportConfig())
    state = scoring.load_state(folder)
    assert list(state.users) == list(data.index.users) and state.context.seen.nnz == 0
    assert (state.context.history == 1).all()  # known from the users table, not counted
    record = state.info["privacy"]
    assert (
        record["unit"] == "event"
        and "embeddings" in record["ships"]
        and "whole history" in record["not_covered"]
    )
    served = scoring.TopKScorer.load(folder)
    users = list(data.index.users[:3])
    np.testing.assert_array_equal(
        served.recommend(users, k=5, exclude_seen=False)[C.ITEM].to_numpy(),
        model.recommend(users, k=5, exclude_seen=False)[C.ITEM].to_numpy(),
    )


def test_private_export_settings_are_checked(data, tmp_path):
    plain = create_model("ease", {"l2": 50.0}).fit(data)
    with pytest.raises(ExportError, match="not a private model"):
        write_state(plain, tmp_path / "a", ExportConfig(private=True))
    assert not scoring.load_state(write_state(plain, tmp_path / "b", ExportConfig())).info.get("privacy")


def test_the_guarantee_adds_the_selection_and_the_fallback(data):
    model = create_model("dp_ease", {"epsilon": 2.0, "max_units": 1000}).fit(data)
    candidates = [
        Candidate("dp_ease", "dp_ease", {"epsilon": 2.0, "max_units": 1000}, 0.1, fits=6 * 3),
        Candidate("dp_als", "dp_als", {"epsilon": 2.0, "max_units": 1000, "delta": 1e-7}, 0.09, fits=3 * 3),
    ]
    fallback = create_model("dp_popularity", {"epsilon": 0.5, "max_units": 1000}).fit(data).dp_
    record = guarantee(model, True, fallback, candidates)
    assert record["epsilon_selection"] == pytest.approx(2.0 * 27)
    assert record["delta_selection"] == pytest.approx(18e-6 + 9e-7)
    assert record["epsilon_total"] == pytest.approx(2.0 + 54 + 0.5)
    assert "choice" not in record["not_covered"]
    with_plain = guarantee(model, True, None, [*candidates, Candidate("ease", "ease", {}, 0.2)])
    assert "not private at the user level (ease)" in with_plain["not_covered"]
    # an erasure re-export reuses its version's params: it carries that version's choice and its cost
    earlier = {"selection_fits": 27, "epsilon_selection": 54.0, "delta_selection": 2.7e-5}
    again = Candidate("dp_ease", "dp_ease", {"epsilon": 2.0, "max_units": 1000}, 0.1, selection=earlier)
    record = guarantee(model, True, None, [again])
    assert record["selection_fits"] == 27 and record["epsilon_total"] == pytest.approx(56.0)


TINY = {
    "name": "tiny_private_export",
    "seeds": [0],
    "data": {"sample_users": 60, "write_processed": False},
    "split": {"name": "user_holdout"},
    "training": {"refit": False},
    "models": [{"type": "dp_ease", "params": {"epsilon": 8.0, "max_units": 1000}, "grid": {"l2": [50, 500]}}],
    "export": {"enabled": True, "registered_model": "tiny-private"},
}


@pytest.fixture
def store(tmp_path, _mlflow_template, monkeypatch):
    db = tmp_path / "mlflow.db"
    shutil.copy(_mlflow_template, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return uri


def test_the_served_private_model_answers_a_request_history_end_to_end(store):
    result = run_experiment(load_experiment(data=TINY), progress=False, echo=None)
    export = result.extras["export"]
    model = mlflow.pyfunc.load_model("models:/tiny-private@champion")
    items = [int(i) for i in export.model.index_.items[:4]]
    rows = [{"user_id": 123456, "k": 5, "history": items}, {"user_id": 654321, "k": 5}]
    answer = pd.DataFrame([r.model_dump() for r in model.predict(rows)])
    first, second = answer[answer["user_id"] == 123456], answer[answer["user_id"] == 654321]
    assert first["personalised"].all() and not set(first["item_id"]) & set(items)
    assert not second["personalised"].any()
    info = mlflow.pyfunc.load_model("models:/tiny-private@champion").metadata.metadata
    record = info["privacy"]
    assert record["private"] and record["selection_fits"] == 2  # two grid points x one seed
    assert record["epsilon_total"] == pytest.approx(8.0 + 2 * 8.0)


def test_a_model_fitted_with_reproducible_noise_is_never_registered(store):
    config = load_experiment(data={**TINY, "name": "tiny_reproducible"})
    with (
        reproducible_noise(1),
        pytest.raises(ExportError, match="registering it as a model version is refused"),
    ):
        run_experiment(config, progress=False, echo=None)
    client = mlflow.MlflowClient(store)
    assert not client.search_registered_models(f"name = '{TINY['export']['registered_model']}'")


def test_a_private_fallback_drawn_with_reproducible_noise_is_never_registered(store):
    fallback = {"epsilon": 1.0, "max_units": 1000}
    export = {**TINY["export"], "registered_model": "tiny-fallback", "private_fallback": fallback}
    data = {
        **TINY,
        "name": "tiny_fallback",
        "models": [{"type": "ease", "params": {"l2": 50}}],
        "export": export,
    }
    with (
        reproducible_noise(1),
        pytest.raises(
            ExportError, match=r"private_fallback: .* registering it as a model version is refused"
        ),
    ):
        run_experiment(load_experiment(data=data), progress=False, echo=None)
    assert not mlflow.MlflowClient(store).search_registered_models("name = 'tiny-fallback'")
