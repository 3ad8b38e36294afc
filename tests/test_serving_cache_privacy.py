"""The served model's answer cache, tried as an attacker would: after requests with raw user IDs,
no Redis key, no value and no byte of the append-only file holds one (entries are keyed by an
HMAC of the ID under a serving secret, their rows carry no ID), the shipped model holds no
secret, a model served without a secret caches nothing (one warning), and erasure removes the
user's cached answers, with the secret or without it."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import mlflow
import pytest

from personalize.config.data import DataConfig
from personalize.config.serving import ExportConfig
from personalize.data.ingest import ingest
from personalize.privacy.erasure import erase_online
from personalize.privacy.subject import Subject
from personalize.scoring.online import OnlineSettings, OnlineStore, cache_secret, user_cache_key
from personalize.serving import Candidate, export_champion
from test_privacy_subject import OTHER, TARGET, _raw_files

NS = "shop"
SECRET = "9e" * 32
UNKNOWN = "cust-0bad-777777"  # a raw ID the model never saw: answered (and cached) all the same


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, _mlflow_template):
    """EASE on the shop's distinctive string IDs (not pseudonymised: callers send raw IDs),
    exported with the online client while the serving secret is set in this process."""
    tmp = tmp_path_factory.mktemp("cache")
    raw = _raw_files(tmp / "raw")
    data = DataConfig(
        source="files",
        name="shop",
        interactions={"path": str(raw["interactions"])},
        users={"path": str(raw["users"])},
        rating_range=(1, 5),
        write_processed=False,
    )
    shutil.copy(_mlflow_template, tmp / "mlflow.db")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("PERSONALIZE_CACHE_SECRET", SECRET)  # present at export: it must not be captured
    try:
        result = export_champion(
            [Candidate("ease", "ease", {"l2": 50.0}, 0.1)],
            ingest(data),
            config=ExportConfig(registered_model="shop-cache", online={"enabled": True}),
            experiment="cache-privacy",
            tracking_uri=uri,
            progress=False,
            echo=None,
        )
    finally:
        mp.undo()
    return uri, result, tmp


def _load(shipped, redis_url):
    uri, result, _ = shipped
    mlflow.set_tracking_uri(uri)
    return mlflow.pyfunc.load_model(
        result.logged_model_uri, model_config={"online_url": redis_url, "online_namespace": NS}
    )


def _ask(model, user):
    return [r.model_dump() for r in model.predict([{"user_id": user, "k": 5}])]


def _everything(client) -> list[str]:
    """Every key of the server and every value it holds, as text."""
    out = []
    for key in client.scan_iter("*"):
        out.append(key)
        kind = client.type(key)
        if kind == "string":
            out.append(client.get(key))
        elif kind == "list":
            out += client.lrange(key, 0, -1)
        elif kind == "hash":
            out.append(json.dumps(client.hgetall(key)))
        elif kind == "set":
            out += sorted(client.smembers(key))
        elif kind == "zset":
            out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            out += [json.dumps(f) for _, f in client.xrange(key)]
    return out


def _append_only_file(folder: Path, must_hold: str) -> bytes:
    """The server's append-only file once it holds ``must_hold`` (written each second)."""
    deadline = time.monotonic() + 10
    while True:
        data = b"".join(p.read_bytes() for p in folder.rglob("*.aof"))
        if must_hold.encode() in data or time.monotonic() > deadline:
            return data
        time.sleep(0.1)


def test_cached_answers_hold_no_raw_id_in_redis_or_its_append_only_file(
    shipped, redis_server, monkeypatch, caplog
):
    monkeypatch.setenv("PERSONALIZE_CACHE_SECRET", SECRET)
    with caplog.at_level(logging.WARNING, logger="recsys_pyfunc"):
        model = _load(shipped, redis_server.url)
    assert not [r for r in caplog.records if "answer cache off" in r.getMessage()]
    first = {u: _ask(model, u) for u in (TARGET, OTHER, UNKNOWN)}
    store = OnlineStore(OnlineSettings(url=redis_server.url, namespace=NS, timeout_seconds=2.0))
    keys = sorted(store.client.scan_iter(f"{NS}:cache:*"))
    assert len(keys) == 3  # one cached answer per request row
    again = {u: _ask(model, u) for u in (TARGET, OTHER, UNKNOWN)}
    assert again == first and sorted(store.client.scan_iter(f"{NS}:cache:*")) == keys  # hits
    assert first[TARGET][0]["user_id"] == TARGET and first[TARGET][0]["personalised"]

    # the attacker reads every key and value, and the append-only file
    hashed = user_cache_key(bytes.fromhex(SECRET), TARGET)
    text = "\n".join(_everything(store.client))
    assert hashed in text
    aof = _append_only_file(redis_server.folder, hashed)
    assert hashed.encode() in aof  # the file was written, cache entries included
    for raw in (TARGET, OTHER, UNKNOWN):
        assert raw not in text and raw.encode() not in aof, raw
        # a guess hashed without the secret does not find the entry either
        assert hashlib.sha256(raw.encode()).hexdigest()[:32] not in text

    # erasure, with the serving secret here: the target's cached answer goes, the others stay
    erased = erase_online(store, Subject(TARGET), cache_secret())
    left = sorted(store.client.scan_iter(f"{NS}:cache:*"))
    assert len(left) == 2 and not any(hashed in k for k in left)
    assert "user's" in erased["cached_answers"]
    # without it the user's entries cannot be told apart: every cached answer goes
    monkeypatch.delenv("PERSONALIZE_CACHE_SECRET")
    erased = erase_online(store, Subject(OTHER), cache_secret())
    assert list(store.client.scan_iter(f"{NS}:cache:*")) == [] and "every entry" in erased["cached_answers"]


def test_without_a_serving_secret_nothing_is_cached_and_one_warning_says_so(
    shipped, redis_server, monkeypatch, caplog
):
    monkeypatch.delenv("PERSONALIZE_CACHE_SECRET", raising=False)
    monkeypatch.delenv("PERSONALIZE_CACHE_SECRET_FILE", raising=False)
    with caplog.at_level(logging.WARNING, logger="recsys_pyfunc"):
        model = _load(shipped, redis_server.url)
        answers = [_ask(model, TARGET) for _ in range(3)]
    assert answers[0] == answers[1] == answers[2] and all(r["fresh"] for r in answers[0])
    warned = [r.getMessage() for r in caplog.records if "answer cache off" in r.getMessage()]
    assert len(warned) == 1 and "PERSONALIZE_CACHE_SECRET" in warned[0]
    store = OnlineStore(OnlineSettings(url=redis_server.url, namespace=NS, timeout_seconds=2.0))
    assert list(store.client.scan_iter(f"{NS}:cache:*")) == []
    assert not any(TARGET in t for t in _everything(store.client))


def test_the_shipped_model_holds_no_serving_secret(shipped, tmp_path):
    _, result, _ = shipped
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=result.logged_model_uri, dst_path=str(tmp_path))
    )
    files = [p for p in local.rglob("*") if p.is_file()]
    assert any(p.name == "MLmodel" for p in files) and any("state" in p.parts for p in files)
    secret = bytes.fromhex(SECRET)
    for path in files:
        data = path.read_bytes()
        assert SECRET.encode() not in data and secret not in data, path
    assert not any("secret" in str(k).lower() for k in result.model_config)
    assert SECRET not in json.dumps(result.model_config)


def test_the_secret_comes_from_the_environment_or_a_private_key_file(tmp_path):
    assert cache_secret({}) is None
    assert cache_secret({"PERSONALIZE_CACHE_SECRET": SECRET}) == bytes.fromhex(SECRET)
    with pytest.raises(ValueError, match="shorter than 16 bytes") as short:
        cache_secret({"PERSONALIZE_CACHE_SECRET": "abc"})
    assert "abc" not in str(short.value)  # the error never shows the value
    key = tmp_path / "cache_secret.key"
    key.write_text(SECRET + "\n")
    key.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        cache_secret({"PERSONALIZE_CACHE_SECRET_FILE": str(key)})
    key.chmod(0o600)
    assert cache_secret({"PERSONALIZE_CACHE_SECRET_FILE": str(key)}) == bytes.fromhex(SECRET)
    with pytest.raises(ValueError, match="cannot be read"):
        cache_secret({"PERSONALIZE_CACHE_SECRET_FILE": str(tmp_path / "missing.key")})
    # the key does not depend on how an integer ID is typed, and differs per secret
    a, b = bytes.fromhex(SECRET), bytes.fromhex("1f" * 32)
    assert user_cache_key(a, 196) == user_cache_key(a, "196") == user_cache_key(a, 196.0)
    assert user_cache_key(a, 196) != user_cache_key(b, 196)
