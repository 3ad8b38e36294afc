"""Consent: the consent table (latest record wins, bad rows named), training consent at
ingestion, personalisation consent in the exported model (a withdrawal makes a new registry
version) and on the online path (a withdrawal in Redis changes the very next answer)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from personalize.config.data import DataConfig
from personalize.config.online import OnlineConfig
from personalize.config.serving import ExportConfig
from personalize.core.errors import DataError
from personalize.data.consent import load_consent
from personalize.data.ingest import ingest
from personalize.online import stream as S
from personalize.scoring import TopKScorer
from personalize.scoring.online import OnlineSettings, OnlineStore
from personalize.serving import Candidate, export_champion
from personalize.serving.state import all_data, refit_on_all_data, write_state

T = "2020-01-01T00:00:00Z"
LATER = "2021-06-01T00:00:00Z"


def _table(path: Path, rows: list[tuple]) -> Path:
    pd.DataFrame(rows, columns=["user_id", "purpose", "granted", "timestamp"]).to_csv(path, index=False)
    return path


def _consent_for(users, path: Path, withdrawn: dict[str, list] | None = None) -> Path:
    """Every user grants both purposes; ``withdrawn`` purpose -> users who later withdraw it."""
    rows = [(u, p, "yes", T) for u in users for p in ("training", "personalisation")]
    for purpose, who in (withdrawn or {}).items():
        rows += [(u, purpose, "no", LATER) for u in who]
    return _table(path, rows)


def _config(path: Path | None, **kw) -> DataConfig:
    return DataConfig(write_processed=False, sample_users=80, privacy={"consent": path}, **kw)


def test_the_latest_record_wins_and_a_bad_row_is_named(tmp_path):
    path = _table(
        tmp_path / "consent.csv",
        [
            ("007", "training", "yes", T),
            ("7", "training", "NO", LATER),  # the same user (canonical '7'), later: withdrawn
            ("8", "personalisation", "false", LATER),
            ("8", "personalisation", "1", T),  # earlier, though a later row: the withdrawal stands
            ("9", "training", "true", T),
            ("9", "training", "0", T),  # same time: the later row wins
        ],
    )
    got = load_consent(DataConfig(privacy={"consent": path}))
    granted = {(r.user_id, r.purpose): r.granted for r in got.itertuples()}
    assert granted == {("7", "training"): False, ("8", "personalisation"): False, ("9", "training"): False}
    assert len(got) == 3

    bad = _table(tmp_path / "bad.csv", [("1", "training", "yes", T), ("2", "personalization", "maybe", T)])
    with pytest.raises(DataError) as err:
        load_consent(DataConfig(privacy={"consent": bad}))
    message = str(err.value)
    assert "bad.csv" in message and "row 2" in message
    assert "'personalization' is not one of" in message and "'maybe' is not true/false" in message


def test_users_without_training_consent_are_left_out_and_counted(ml100k_small, tmp_path):
    users = sorted(ml100k_small.interactions.user_id.unique())
    out_user, no_record = users[0], users[1]
    rows = [(u, "training", "yes", T) for u in users if u != no_record]
    rows.append((out_user, "training", "no", LATER))
    dataset = ingest(_config(_table(tmp_path / "consent.csv", rows)))

    inter = ml100k_small.interactions
    expected = int(inter.user_id.isin([out_user, no_record]).sum())
    assert len(dataset.interactions) == len(inter) - expected
    assert not dataset.interactions.user_id.isin([out_user, no_record]).any()
    assert not dataset.users.user_id.isin([out_user, no_record]).any()
    assert dataset.report.tables["interactions"].no_consent == expected
    assert dataset.report.tables["users"].no_consent == 2
    assert (
        dataset.report.tables["interactions"].quarantined
        == ml100k_small.report.tables["interactions"].quarantined
    )
    assert dataset.consent.user_id.dtype == np.int64
    assert set(dataset.consent.purpose) == {"training"}


@pytest.fixture(scope="module")
def consent_dataset(ml100k_small, tmp_path_factory):
    """The 80-user sample with a consent table: the first user withdrew personalisation."""
    users = sorted(ml100k_small.interactions.user_id.unique())
    path = tmp_path_factory.mktemp("consent") / "consent.csv"
    dataset = ingest(_config(_consent_for(users, path, {"personalisation": [users[0]]})))
    return dataset, users


def _export(dataset, uri: str, name: str = "consent-recommender"):
    return export_champion(
        [Candidate("ease", "ease", {"l2": 100.0}, 0.1)],
        dataset=dataset,
        config=ExportConfig(registered_model=name),
        experiment="consent-test",
        tracking_uri=uri,
        progress=False,
        echo=None,
    )


def _answer(model, user, k=5):
    return [r.model_dump() for r in model.predict([{"user_id": int(user), "k": k}])]


def test_export_answers_users_without_personalisation_consent_non_personalised(
    consent_dataset, tracking_store, redis_server, tmp_path
):
    dataset, users = consent_dataset
    withdrawn, other = users[0], users[1]
    first = _export(dataset, tracking_store)
    mlflow.set_tracking_uri(tracking_store)
    model = mlflow.pyfunc.load_model(first.logged_model_uri)
    popular = [r["item_id"] for r in _answer(model, 10**9)]  # an unknown user: overall popularity

    rows = _answer(model, withdrawn)
    assert rows and not any(r["personalised"] or r["consent"] for r in rows)
    assert [r["item_id"] for r in rows] == popular  # nothing of their history, not even seen items
    kept = _answer(model, other)
    assert all(r["personalised"] and r["consent"] for r in kept)
    assert "consent" in str(model.metadata.get_output_schema())

    # a withdrawal between two exports: a new state hash, a new registry version
    path = tmp_path / "consent2.csv"
    again = ingest(_config(_consent_for(users, path, {"personalisation": [withdrawn, other]})))
    assert again.fingerprint == dataset.fingerprint  # the training data did not change
    second = _export(again, tracking_store)
    assert not second.unchanged and second.version != first.version
    assert second.state_hash != first.state_hash
    model2 = mlflow.pyfunc.load_model(second.logged_model_uri)
    assert not any(r["personalised"] or r["consent"] for r in _answer(model2, other))
    # the same consent again: nothing new to register
    assert _export(again, tracking_store).unchanged

    # online: a withdrawal recorded in Redis changes the very next answer of the served model
    served = mlflow.pyfunc.load_model(
        first.logged_model_uri, model_config={"online_url": redis_server.url, "online_namespace": "c"}
    )
    third = users[2]
    before = _answer(served, third)
    assert all(r["personalised"] and r["consent"] and r["fresh"] for r in before)
    assert _answer(served, third) == before  # cached now
    store = OnlineStore(OnlineSettings(url=redis_server.url, namespace="c", timeout_seconds=2.0))
    assert store.set_consent(int(third), "personalisation", False) == 1
    after = _answer(served, third)
    assert (
        after and not any(r["personalised"] or r["consent"] for r in after) and all(r["fresh"] for r in after)
    )
    assert [r["item_id"] for r in after] == popular


@pytest.fixture(scope="module")
def scorer(consent_dataset, tmp_path_factory):
    """The exported state of EASE on the consent dataset, read by the shipped scorer."""
    dataset, _ = consent_dataset
    model = refit_on_all_data(Candidate("ease", "ease", {"l2": 100.0}, 0.1), all_data(dataset))
    folder = tmp_path_factory.mktemp("state") / "state"
    write_state(model, folder, ExportConfig(), consent=dataset.consent)
    return TopKScorer.load(folder)


def test_a_consent_event_on_the_stream_changes_the_next_answer(
    consent_dataset, scorer, redis_server, tmp_path
):
    _, users = consent_dataset
    user, item = int(users[3]), int(scorer.items[0])
    cfg = OnlineConfig(block_ms=50, claim_idle_ms=60_000, reconnect_seconds=5)
    store = S.open_store(cfg, redis_server.url)
    S.publish(
        store, pd.DataFrame({"user_id": [user], "item_id": [item], "timestamp": [1_000_000_000]}), config=cfg
    )
    S.consume(store, "w", cfg, until_idle=True)

    def answer():
        recent, _, consent = store.recent_and_consent([user])
        return scorer.recommend([user], k=5, recent=recent, consent=consent)

    before = answer()
    assert before.personalised.all() and before.consent.all()
    path = _table(tmp_path / "withdraw.csv", [(user, "personalisation", "no", LATER)])
    S.publish(store, path, config=cfg)
    S.publish(store, path, config=cfg)  # published twice: applied once
    bad = pd.DataFrame({"user_id": [user], "purpose": ["marketing"], "granted": ["no"], "timestamp": [LATER]})
    S.publish(store, bad, config=cfg)
    result = S.consume(store, "w", cfg, until_idle=True)
    assert (result.applied, result.duplicates, result.dead_lettered) == (1, 1, 1)
    assert "purpose" in S.dead_letters(store)[0][1]["reason"]

    after = answer()
    assert not after.personalised.any() and not after.consent.any()
    assert after.item_id.tolist() == scorer.recommend([10**9], k=5).item_id.tolist()  # popularity, no fold-in
    # an older grant arriving late does not undo the withdrawal; a newer one does (the user is known
    # and granted at export)
    assert store.set_consent(user, "personalisation", True, timestamp=T) == 0
    assert not answer().consent.any()
    assert store.set_consent(user, "personalisation", True, timestamp="2022-01-01T00:00:00+00:00") > 0
    assert answer().consent.all()


def test_the_state_lists_users_without_personalisation_consent(consent_dataset, scorer):
    _, users = consent_dataset
    assert scorer.users[scorer.no_personalisation].tolist() == [users[0]]
    # an unknown user under a consent table has no record: not personalised, even with events
    unknown = scorer.recommend([10**9], k=3, recent=[[(scorer.items[0], None)]])
    assert not unknown.personalised.any() and not unknown.consent.any()
    granted = scorer.recommend(
        [10**9], k=3, recent=[[(scorer.items[0], None)]], consent=[{"personalisation": True}]
    )
    assert granted.personalised.all() and granted.consent.all()


def test_the_processed_consent_table_is_written(consent_dataset, tmp_path):
    from personalize.data.ingest import write_processed

    dataset, _ = consent_dataset
    out = write_processed(dataset, tmp_path)
    written = pd.read_parquet(out.processed_path / "consent.parquet")
    pd.testing.assert_frame_equal(written, dataset.consent.reset_index(drop=True), check_dtype=False)


def test_a_table_without_the_consent_columns_is_refused(tmp_path):
    path = tmp_path / "c.csv"
    pd.DataFrame({"user_id": [1], "granted": ["yes"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="required column"):
        load_consent(DataConfig(privacy={"consent": path}))
