"""The exported model folds in each request user's recent events from the online store (Redis):
the next answer reflects an event, a new user is personalised by their first one, answers are
cached per user version, and a store that is down, slow or back never fails a request."""

from __future__ import annotations

import contextlib
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
import requests

from personalize.config.serving import ExportConfig, ServedOnlineConfig
from personalize.scoring.online import OnlineSettings, OnlineStore, user_cache_key
from personalize.serving import Candidate, export_champion
from personalize.serving.state import pip_requirements
from servers import model_server

NAME = "online-recommender"
NEW_USER = 987_654_321  # a user the model never saw
SECRET = "c4" * 32  # the answer cache's serving secret (PERSONALIZE_CACHE_SECRET)


@pytest.fixture(scope="module")
def champion(tmp_path_factory, _mlflow_template, ml100k_small):
    """EASE refit on the 80-user sample, exported with the online client (no URL recorded)."""
    db = tmp_path_factory.mktemp("online") / "mlflow.db"
    shutil.copy(_mlflow_template, db)
    uri = f"sqlite:///{db}"
    result = export_champion(
        [Candidate("ease", "ease", {"l2": 100.0}, 0.1)],
        dataset=ml100k_small,
        config=ExportConfig(registered_model=NAME, online=ServedOnlineConfig(enabled=True)),
        experiment="online-test",
        tracking_uri=uri,
        progress=False,
        echo=None,
    )
    return uri, result


def _load(champion, **model_config):
    uri, result = champion
    mlflow.set_tracking_uri(uri)
    return mlflow.pyfunc.load_model(result.logged_model_uri, model_config=model_config or None)


@pytest.fixture
def online(champion, redis_server, monkeypatch):
    """The exported model reading the test's own Redis (its answer cache keyed under a serving
    secret), and a store to write events with."""
    monkeypatch.setenv("PERSONALIZE_CACHE_SECRET", SECRET)
    model = _load(champion, online_url=redis_server.url, online_namespace="t")
    store = OnlineStore(OnlineSettings(url=redis_server.url, namespace="t", timeout_seconds=2.0))
    return model, store, redis_server


_EVENT_IDS = iter(range(10**9))


def _event(store: OnlineStore, user, item) -> int:
    return store.apply(
        {"user_id": user, "item_id": item, "event": None, "timestamp": 0, "event_id": next(_EVENT_IDS)}
    )


def _answer(model, user, k=10, **row):
    return [r.model_dump() for r in model.predict([{"user_id": user, "k": k, **row}])]


def _known_user(result) -> int:
    model = result.model
    return int(model.index_.users[int((model.user_history_ > 0).argmax())])


def test_an_event_changes_the_next_answer(online, champion):
    model, store, _ = online
    _, result = champion
    user = _known_user(result)
    before = _answer(model, user, k=50)
    assert before and all(r["fresh"] for r in before) and all(r["personalised"] for r in before)
    consumed = before[0]["item_id"]
    # the items most similar to another item: what a user who only had that item gets
    anchor = before[30]["item_id"]
    _event(store, NEW_USER + 1, anchor)
    similar = [r["item_id"] for r in _answer(model, NEW_USER + 1, k=5)]

    assert _event(store, user, consumed) == 1
    after = _answer(model, user, k=50)
    assert consumed not in [r["item_id"] for r in after]
    assert all(r["fresh"] for r in after)
    scorer = model.unwrap_python_model().scorer
    folded = scorer.recommend([user], k=50, recent=[[(consumed, None)]])
    assert [r["item_id"] for r in after] == folded["item_id"].tolist()

    _event(store, user, anchor)
    risen = [r["item_id"] for r in _answer(model, user, k=50)]
    assert anchor not in risen
    old_rank = {r["item_id"]: r["rank"] for r in after}
    new_rank = {item: i + 1 for i, item in enumerate(risen)}
    moved = [item for item in similar if item in new_rank]
    assert moved, (similar, risen)
    assert all(new_rank[item] < old_rank.get(item, 51) for item in moved if old_rank.get(item) != 1)


def test_a_new_user_is_personalised_after_the_first_event(online, champion):
    model, store, _ = online
    cold = _answer(model, NEW_USER, k=5)
    assert not any(r["personalised"] for r in cold) and all(r["fresh"] for r in cold)
    item = cold[0]["item_id"]
    _event(store, NEW_USER, item)
    warm = _answer(model, NEW_USER, k=5)
    assert all(r["personalised"] and r["fresh"] for r in warm)
    assert item not in [r["item_id"] for r in warm]
    assert [r["item_id"] for r in warm] != [r["item_id"] for r in cold]


def test_answers_are_cached_until_the_users_next_event(online, champion):
    model, store, _ = online
    user = _known_user(champion[1])
    first = _answer(model, user, k=4, exclude_items=[1])
    keys = store.client.keys("t:cache:*")
    hashed = user_cache_key(bytes.fromhex(SECRET), user)
    assert len(keys) == 1 and f":{hashed}:0:" in keys[0]
    assert 0 < store.client.ttl(keys[0]) <= OnlineSettings(url="").cache_ttl_seconds
    # a hit returns what the cache holds: mark the entry and read it back
    marked = store.client.get(keys[0]).replace(f'"score": {first[0]["score"]}', '"score": 12345.0')
    store.client.set(keys[0], marked)
    assert _answer(model, user, k=4, exclude_items=[1])[0]["score"] == 12345.0
    assert _answer(model, user, k=3, exclude_items=[1])[0]["score"] != 12345.0  # another request row
    assert len(store.client.keys("t:cache:*")) == 2
    # the user's next event raises their version: the marked entry is never read again
    _event(store, user, first[0]["item_id"])
    after = _answer(model, user, k=4, exclude_items=[1])
    assert after[0]["score"] != 12345.0 and first[0]["item_id"] not in [r["item_id"] for r in after]
    assert any(f":{hashed}:1:" in key for key in store.client.keys("t:cache:*"))


def test_a_stopped_store_answers_from_the_export_and_a_restarted_one_is_read_again(online, champion, caplog):
    model, store, server = online
    user = _known_user(champion[1])
    plain = _load(champion)  # no store anywhere: the exported state alone
    exported = _answer(plain, user)
    assert not any(r["fresh"] for r in exported)
    _event(store, user, exported[0]["item_id"])
    store.client.bgrewriteaof()  # the event is on disk before the server is killed
    time.sleep(0.3)
    fresh = _answer(model, user)
    assert all(r["fresh"] for r in fresh) and fresh != exported

    server.stop()
    for _ in range(3):
        t0 = time.perf_counter()
        down = _answer(model, user)
        assert time.perf_counter() - t0 < 0.5
        assert down == exported  # fresh false, the export's answer
    messages = [r.getMessage() for r in caplog.records if r.name == "recsys_pyfunc"]
    assert messages and all(m.startswith("online store") for m in messages)  # no user IDs
    server.start()
    assert not any(r["fresh"] for r in _answer(model, user))  # still paused after the failure
    time.sleep(1.1)
    back = _answer(model, user)
    assert back == fresh  # the same model object: nothing reloaded


def test_a_store_slower_than_the_budget_is_not_waited_for(champion):
    """A server that accepts connections and never answers: every request answers on time."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        model = _load(champion, online_url=f"redis://127.0.0.1:{port}/0")
        model.unwrap_python_model().online.retry_after = 0.0  # try the store on every request
        user = _known_user(champion[1])
        for _ in range(3):
            t0 = time.perf_counter()
            rows = _answer(model, user)
            assert time.perf_counter() - t0 < 0.5
            assert rows and not any(r["fresh"] for r in rows)
        assert accepted  # the store was tried, and given up on
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_the_store_comes_from_load_config_then_environment_then_export(champion, redis_server, monkeypatch):
    from personalize.serving.export import model_config

    _, result = champion
    recorded = model_config(
        result.model,
        ExportConfig(online=ServedOnlineConfig(enabled=True, url="redis://export:1/0", namespace="ex")),
        "abc",
    )
    assert recorded["export_online_url"] == "redis://export:1/0" and recorded["online_url"] is None
    pyfunc = sys.modules[type(_load(champion).unwrap_python_model()).__module__]
    env = {"PERSONALIZE_ONLINE_URL": "redis://env:2/0", "PERSONALIZE_ONLINE_NAMESPACE": "en"}
    assert pyfunc.online_source(recorded, {}) == ("redis://export:1/0", "ex")
    assert pyfunc.online_source(recorded, env) == ("redis://env:2/0", "en")
    loaded = {**recorded, "online_url": "redis://load:3/0", "online_namespace": "lo"}
    assert pyfunc.online_source(loaded, env) == ("redis://load:3/0", "lo")
    assert pyfunc.online_source({}, {}) == (None, "personalize")

    # the environment variable, end to end
    monkeypatch.setenv("PERSONALIZE_ONLINE_URL", redis_server.url)
    monkeypatch.setenv("PERSONALIZE_ONLINE_NAMESPACE", "envns")
    store = OnlineStore(OnlineSettings(url=redis_server.url, namespace="envns"))
    user = _known_user(result)
    model = _load(champion)
    top = _answer(model, user)[0]
    assert top["fresh"]
    _event(store, user, top["item_id"])
    assert top["item_id"] not in [r["item_id"] for r in _answer(model, user)]


def test_online_export_pins_the_redis_client_and_records_no_url_by_default(champion):
    _, result = champion
    scorer = result.model.scorer()
    assert not any(r.startswith("redis==") for r in pip_requirements(scorer))
    from importlib import metadata

    assert f"redis=={metadata.version('redis')}" in pip_requirements(scorer, online=True)
    requirements = Path(mlflow.pyfunc.get_model_dependencies(result.logged_model_uri)).read_text()
    assert f"redis=={metadata.version('redis')}" in requirements
    with pytest.raises(ValueError, match=r"online\.enabled is false"):
        ServedOnlineConfig(url="redis://h:1/0")
    with pytest.raises(ValueError, match="namespace"):
        ServedOnlineConfig(enabled=True, namespace="a:b")
    with pytest.raises(ValueError, match="not a Redis URL"):
        ServedOnlineConfig(enabled=True, url="http://h")


# ------------------------------------------------------------------------------------ REST


def test_both_rest_workers_reflect_an_event_within_one_request(champion, redis_server, tmp_path):
    uri, result = champion
    env = {"PERSONALIZE_ONLINE_URL": redis_server.url, "PERSONALIZE_ONLINE_NAMESPACE": "rest"}
    server = model_server(result.logged_model_uri, uri, tmp_path / "server.log", workers=2, env=env)
    user = _known_user(result)

    def ask() -> list[dict]:
        with requests.Session() as s:  # a new connection per request: either worker may answer
            response = s.post(
                f"{base}/invocations",
                json={"inputs": [{"user_id": user, "k": 10}]},
                headers={"Connection": "close"},
                timeout=30,
            )
        assert response.status_code == 200, response.text
        return response.json()["predictions"]

    with server as base:
        before = [ask() for _ in range(6)]
        assert all(b == before[0] and all(r["fresh"] for r in b) for b in before)
        consumed = before[0][0]["item_id"]
        store = OnlineStore(OnlineSettings(url=redis_server.url, namespace="rest", timeout_seconds=2.0))
        _event(store, user, consumed)
        for _ in range(8):
            rows = ask()
            assert consumed not in [r["item_id"] for r in rows] and all(r["fresh"] for r in rows)


def test_the_experiments_online_block_is_the_exported_models_default_store():
    from personalize.config.online import OnlineConfig
    from personalize.config.serving import ExportConfig
    from personalize.recipe.export import with_online_defaults

    online = OnlineConfig(redis_url="redis://127.0.0.1:6390/0", namespace="shop")
    shipped = with_online_defaults(ExportConfig(online={"enabled": True}), online).online
    assert (shipped.url, shipped.namespace) == ("redis://127.0.0.1:6390/0", "shop")
    own = ExportConfig(online={"enabled": True, "url": "redis://10.0.0.1:6379/0", "namespace": "served"})
    assert with_online_defaults(own, online).online == own.online  # the export block's own store wins
    assert with_online_defaults(ExportConfig(), online).online.url is None  # not shipped: nothing recorded
