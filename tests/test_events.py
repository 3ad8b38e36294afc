"""Several sources, one profile: event types train with their weights, relevance and the 'seen'
exclusion follow the protocol, IDs are reconciled across sources, and the ID-consistency report
says what matched and what did not (on a multi-source sample made from MovieLens-100K)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from personalize import scoring
from personalize.config.data import DataConfig, EventType, InteractionSource, TableSource
from personalize.core import columns as C
from personalize.core.errors import DataError
from personalize.data import ingest
from personalize.data.events import EventPolicy
from personalize.data.matrix import IdIndex, InteractionData
from personalize.data.samples import ANONYMOUS_START, write_events_sample
from personalize.evaluation.evaluator import make_target
from personalize.models.registry import create_model
from personalize.recipe import run_experiment
from samples import events_experiment

T0 = 1_600_000_000


# ------------------------------------------------------------------ the policy's rules


def _frame(events: list[str]) -> pd.DataFrame:
    return pd.DataFrame({C.EVENT: pd.Series(events, dtype="string")})


def test_relevant_types_default_to_the_heaviest_present():
    cfg = DataConfig(events={"view": EventType(weight=0.2), "purchase": EventType(weight=1.0)})
    policy = EventPolicy.build(cfg, _frame(["view", "purchase", "click"]))
    assert policy.weights == {"click": 1.0, "purchase": 1.0, "view": 0.2}  # unlisted types weigh 1
    assert policy.relevant == {"click", "purchase"}
    cfg = DataConfig(events={"view": EventType(weight=0.2), "click": EventType(weight=1.0, relevant=False)})
    assert EventPolicy.build(cfg, _frame(["view", "purchase", "click"])).relevant == {"purchase"}
    cfg = DataConfig(events={"view": EventType(weight=0.2, relevant=True)})
    assert EventPolicy.build(cfg, _frame(["view", "purchase"])).relevant == {"view"}


def test_event_config_that_matches_no_data_is_an_error():
    with pytest.raises(DataError, match=r"configures \['purchse'\], which no accepted interaction has"):
        EventPolicy.build(DataConfig(events={"purchse": EventType()}), _frame(["view", "purchase"]))
    with pytest.raises(DataError, match="have no event type"):
        EventPolicy.build(DataConfig(events={"view": EventType()}), pd.DataFrame({C.USER: [1]}))
    assert EventPolicy.build(DataConfig(), pd.DataFrame({C.USER: [1]})) is None


# --------------------------------------------------- a hand-made two-source dataset


@pytest.fixture
def shop(tmp_path) -> DataConfig:
    """Two users, three items; user 1 viewed items 10 and 20 and bought 10; user 2 bought 20
    and 30 and viewed 30 (a view and a purchase in the same second are two events)."""
    (tmp_path / "purchases.csv").write_text(
        f"customer,sku,at\n1,10,{T0 + 100}\n2,20,{T0 + 50}\n2,30,{T0 + 300}\n2,10,{T0 + 400}\n"
    )
    (tmp_path / "views.csv").write_text(
        f"visitor,sku,at\n0001,10,{T0}\n 1,20,{T0 + 10}\n2,30,{T0 + 300}\n"
        f"1,20,{T0 + 10}\n"  # fired twice: an exact duplicate
        f"777,10,{T0 + 5}\n"  # an anonymous visitor
    )
    (tmp_path / "customers.csv").write_text("customer\n1\n2\n3\n")
    return DataConfig(
        source="files",
        name="shop",
        users=TableSource(path=tmp_path / "customers.csv", columns={C.USER: "customer"}),
        interactions=[
            InteractionSource(
                path=tmp_path / "purchases.csv",
                event="purchase",
                columns={C.USER: "customer", C.ITEM: "sku", C.TIMESTAMP: "at"},
            ),
            InteractionSource(
                path=tmp_path / "views.csv",
                event="view",
                unknown_users="accept",
                columns={C.USER: "visitor", C.ITEM: "sku", C.TIMESTAMP: "at"},
            ),
        ],
        events={"view": EventType(weight=0.25)},
        write_processed=False,
    )


def test_sources_are_validated_on_their_own_and_ids_reconciled(shop):
    data = ingest(shop)
    tables = data.report.tables
    assert set(tables) == {"users", "interactions.purchases", "interactions.views"}
    assert (tables["interactions.views"].accepted, tables["interactions.views"].quarantined) == (4, 1)
    assert tables["interactions.views"].reasons == {"exact duplicate": 1}
    ids = data.report.ids
    assert ids.merged_spellings["user"] == [["0001", "1"], [" 1", "1"]] or ids.merged_spellings["user"] == [
        [" 1", "0001", "1"]
    ]
    assert ids.users_with_events_not_in_users_table == 1 and ids.users_not_in_users_table_accepted == 1
    assert ids.users_without_events == 1  # customer 3
    assert data.interactions[C.USER].dtype == "int64"
    assert sorted(data.users[C.USER]) == [1, 2, 3, 777]
    # the same second, a view and a purchase: two events, not a conflict
    same = data.interactions[(data.interactions[C.USER] == 2) & (data.interactions[C.ITEM] == 30)]
    assert sorted(same[C.EVENT]) == ["purchase", "view"]
    assert data.events.relevant == {"purchase"} and data.events.weights == {"purchase": 1.0, "view": 0.25}


def test_unknown_users_are_quarantined_by_default(shop):
    strict = shop.model_copy(
        update={"interactions": [s.model_copy(update={"unknown_users": "quarantine"}) for s in shop.sources]}
    )
    data = ingest(strict)
    assert data.report.tables["interactions.views"].reasons["user_id: not in users table"] == 1
    assert data.report.ids.users_with_events_not_in_users_table == 1
    assert data.report.ids.users_not_in_users_table_accepted == 0
    assert 777 not in set(data.users[C.USER])


def test_weights_train_and_only_relevant_events_exclude(shop):
    data = ingest(shop)
    index = IdIndex.build(data.users, data.items, data.interactions)
    train = InteractionData.build(data.interactions, index, data.users, data.items, data.events)
    u1, u2 = index.user_index([1, 2])
    i10, i20, i30 = index.item_index([10, 20, 30])
    m = train.matrix.toarray()
    assert m[u1, i10] == 1.0  # viewed and bought: the purchase's weight (the maximum)
    assert m[u1, i20] == 0.25  # only viewed
    assert m[u2, i30] == 1.0 and m[u2, i20] == 1.0
    excluded = train.exclusion.toarray()
    assert excluded[u1, i10] and not excluded[u1, i20]  # a viewed item stays recommendable
    np.testing.assert_allclose(train.item_popularity[[i10, i20, i30]], [1 + 1 + 0.25 + 0.25, 1 + 0.25, 1.25])
    model = create_model("popularity", {}, 0).fit(train)
    top = model.recommend([1], k=3)
    assert 20 in set(top[C.ITEM]) and 10 not in set(top[C.ITEM])
    # 'any': every event excludes its item
    anyseen = ingest(shop.model_copy(update={"seen": "any"}))
    again = InteractionData.build(anyseen.interactions, index, anyseen.users, anyseen.items, anyseen.events)
    assert again.exclusion is None
    assert set(create_model("popularity", {}, 0).fit(again).recommend([1], k=3)[C.ITEM]) == {30}


def test_relevance_is_applied_to_the_held_out_part(shop):
    data = ingest(shop)
    inter = data.interactions
    index = IdIndex.build(data.users, data.items, inter)
    history = inter[inter[C.TIMESTAMP] < pd.Timestamp(T0 + 60, unit="s", tz="UTC")]
    part = inter[inter[C.TIMESTAMP] >= pd.Timestamp(T0 + 60, unit="s", tz="UTC")]
    target = make_target("test", part, history, index, events=data.events)
    relevant = target.relevant.toarray()
    u2 = int(np.searchsorted(target.users, index.user_index([2])[0]))
    assert relevant[u2, index.item_index([30])[0]] == 1  # bought (and viewed): relevant
    assert relevant[u2, index.item_index([10])[0]] == 1
    # user 1's held-out rows are a purchase of 10; their viewed 10 / 20 are not excluded
    u1 = int(np.searchsorted(target.users, index.user_index([1])[0]))
    assert target.seen[u1].nnz == 0 and target.warm[u1]


def test_exported_model_answers_with_the_weights_and_exclusions(shop, tmp_path):
    data = ingest(shop)
    index = IdIndex.build(data.users, data.items, data.interactions)
    train = InteractionData.build(data.interactions, index, data.users, data.items, data.events)
    model = create_model("itemknn", {"neighbours": 5, "shrink": 0}, 0).fit(train)
    folder = scoring.save_state(
        tmp_path / "state",
        model.scorer(),
        index.users,
        index.items,
        model.seen_,
        model.popularity_,
        exclude=model.exclude_,
    )
    shipped = scoring.TopKScorer.load(folder)
    users = index.user_index([1, 2, 3, 777])
    np.testing.assert_array_equal(shipped.score(users), model.score(users))
    assert (shipped.ctx.seen != model.seen_).nnz == 0 and (shipped.seen != model.exclude_).nnz == 0
    saved = model.save(tmp_path / "model")
    again = type(model).load(saved)
    pd.testing.assert_frame_equal(again.recommend([1, 2], k=2), model.recommend([1, 2], k=2))


# --------------------------------------------------- the multi-source sample, end to end


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_events_sample(tmp_path_factory.mktemp("events"), users=40, seed=3)


def _sample_config(sample, overrides: list[str] | None = None):
    return events_experiment(sample.folder, overrides)


def test_sample_is_what_its_docstring_says(sample):
    views = pd.read_csv(sample.files["views"], dtype=str)
    purchases = pd.read_csv(sample.files["purchases"])
    assert len(views) == sample.planted["views"] and len(purchases) == sample.planted["purchases"]
    assert views["visitor"].str.len().eq(6).sum() > 0  # zero-padded customer IDs
    assert views["viewed_at"].str.endswith("Z").all()
    seconds = (pd.to_datetime(views["viewed_at"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(
        seconds=1
    )
    person = views["visitor"].astype(int)
    viewed = pd.DataFrame({"u": person, "t": seconds}).drop_duplicates()  # double-fired rows once
    bought = pd.DataFrame({"u": purchases["customer_id"], "t": purchases["purchased_at"]}).drop_duplicates()
    # a view never shares a second with another event of the same person (purchases may: ML-100K's do)
    assert not pd.concat([viewed, bought]).duplicated(["u", "t"]).any()
    first_view = (
        pd.DataFrame({"u": person, "i": views["sku"].astype(int), "t": seconds})
        .groupby(["u", "i"])["t"]
        .min()
    )
    bought_at = purchases.rename(columns={"customer_id": "u", "sku": "i"}).set_index(["u", "i"])[
        "purchased_at"
    ]
    joined = first_view.to_frame().join(bought_at.rename("p"), how="inner")
    assert len(joined) > 0 and (joined["t"] < joined["p"]).all()  # views of a purchase come before it


def test_run_on_the_sample_trains_with_event_weights_and_reports_ids(sample, tracking_store):
    config = _sample_config(sample)
    config = config.model_copy(
        update={"models": [m for m in config.models if m.type in ("popularity", "ease")]}
    )
    result = run_experiment(config, progress=False, echo=None)
    data = result.dataset
    planted = sample.planted
    ids = data.report.ids
    assert ids.users_with_events_not_in_users_table == planted["anonymous_visitors"]
    assert ids.users_not_in_users_table_accepted == planted["anonymous_visitors"]
    assert ids.users_without_events == planted["prospects"]
    assert ids.items_outside_catalogue == planted["retired_skus"]
    assert len(ids.merged_spellings["user"]) == planted["padded_visitors"]
    views = data.report.tables["interactions.views"]
    assert views.reasons == {
        "exact duplicate": planted["double_fired_views"],
        "item_id: not in items table": planted["views_of_retired_skus"],
    }
    assert data.report.tables["interactions.purchases"].accepted == planted["purchases"]
    anonymous = data.interactions[data.interactions[C.USER] >= ANONYMOUS_START]
    assert set(anonymous[C.EVENT]) == {"view"}

    client = mlflow.MlflowClient(tracking_uri=tracking_store)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["data.relevant_events"] == '["purchase"]'
    assert parent.data.params["data.event_weights.view"] == "0.25"
    assert parent.data.metrics["data_ids_users_without_events"] == planted["prospects"]
    assert parent.data.metrics["data_interactions.views_quarantined"] == views.quarantined
    folder = Path(client.download_artifacts(result.parent_run_id, "data/id_consistency.md"))
    assert "users with events but no users-table row" in folder.read_text()
    assert result.leaderboard.set_index("model").loc["ease", "ndcg@10"] > 0


def test_view_weight_changes_what_the_models_learn(sample):
    from personalize.recipe.steps import load_data, prepare_split

    light = _sample_config(sample)
    heavy = _sample_config(sample, ["data.events.view.weight=1.0"])
    p_light = prepare_split(load_data(light), light, 0)
    p_heavy = prepare_split(load_data(heavy), heavy, 0)
    assert set(np.unique(p_light.train.matrix.data)) == {0.25, 1.0}
    assert set(np.unique(p_heavy.train.matrix.data)) == {1.0}
    assert (p_light.train.matrix != 0).nnz == (p_heavy.train.matrix != 0).nnz  # same pairs
    ease_light = create_model("ease", {"l2": 250}, 0).fit(p_light.train)
    ease_heavy = create_model("ease", {"l2": 250}, 0).fit(p_heavy.train)
    assert not np.allclose(ease_light.weights_, ease_heavy.weights_)
    # relevance: purchases only, under either weight
    assert p_light.test_target.relevant.nnz == p_heavy.test_target.relevant.nnz


def test_cli_writes_the_sample(tmp_path):
    from typer.testing import CliRunner

    from personalize.cli import app

    out = CliRunner().invoke(app, ["sample-events", str(tmp_path / "s"), "--users", "5", "--seed", "1"])
    assert out.exit_code == 0, out.output
    assert "planted: customers 30" in out.output and "buyers 5" in out.output
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "customers.csv",
        "products.csv",
        "purchases.csv",
        "views.csv",
    ]
