"""The event stream: events published to a Redis stream, applied to the online state by workers.

Keys and state: :mod:`personalize.scoring.online` (the stream ``{ns}:events``, its consumer
group ``{ns}:workers``, the dead-letter stream ``{ns}:dead``).

**Publishing** (:func:`publish`) adds each event as one stream entry with the fields
``user_id``, ``item_id``, ``event``, ``timestamp``, ``event_id`` (text as written; a missing value
is left out, and the worker dead-letters the entry). An event without an ``event_id`` gets one
derived from its fields (:func:`event_id_of`: a hash of user, item, event type and timestamp),
so publishing the same file again adds copies that the workers recognise and skip. Entries are
sent in pipelined chunks, paced to ``rate`` events/s when given. The stream is capped with
``XADD ... MAXLEN ~ stream_max_length``; since the workers trim what they have acknowledged, the
stream's length is the backlog, and publishing refuses (:class:`StreamError`) to add entries that
would push the backlog past the cap instead of letting the cap delete unconsumed events.

**Consent records** travel on the same stream: an entry with ``event: consent`` and the fields
``user_id``, ``purpose``, ``granted`` (true/false, 1/0, yes/no), ``timestamp`` and
``event_id`` (no ``item_id``). ``personalize stream publish consent.csv`` publishes a consent
file (the columns of the consent table, :mod:`personalize.data.consent`, with an optional
``event_id``; IDs as the online store holds them: pseudonyms when ingestion pseudonymises). The
worker validates them with the consent table's rules (purpose one of
``data.privacy.record.purposes``) and applies each to ``{ns}:consent:{user_id}``
(:meth:`OnlineStore.consent`: idempotent by event ID, the latest timestamp wins), so that a
withdrawal of ``personalisation`` changes the served model's next answer for the user.

**Consuming** (:func:`consume`), one loop per worker (several may run at once, each with its own
consumer name):

1. re-read the worker's own pending entries (delivered to this name earlier and not acknowledged:
   a restart, or a lost connection), then
2. claim entries another worker has left pending longer than ``claim_idle_ms`` (``XAUTOCLAIM``:
   that worker is presumed dead), then
3. read new entries (``XREADGROUP ... BLOCK block_ms``).

Each batch is validated with the ingestion rules (:func:`validate_entries`), then written in one
``MULTI``/``EXEC`` transaction: every valid event applied (:meth:`OnlineStore.apply`, a Lua script
that skips an event ID it has seen), every malformed one added to the dead-letter stream with its
raw fields and a reason naming the field, and every entry of the batch acknowledged. The state
and the acknowledgement are written together or not at all, and a batch whose transaction did not
run stays pending and is read again; an event that does come back (a re-published file, a
redelivery) finds its ID and changes nothing. Every entry thus ends applied once or in the
dead-letter stream, and acknowledged.

**Lost connection**: the worker retries (back-off from 0.05 s doubling to 1 s) for up to
``online.reconnect_seconds``, logging each failure, then raises :class:`StreamError`; when the
server answers again it first re-reads its own pending entries (step 1), so a batch caught in
the failure is applied (or found applied) and acknowledged.

**Trimming**: at most once a second a worker deletes the entries its group has acknowledged
(``XTRIM MINID ~`` below the oldest pending and the last delivered entry, read in one
transaction), so the stream holds the backlog only. When other groups read the stream too,
nothing is trimmed (their progress is not this group's to judge) and the cap alone bounds it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from personalize.config.data import DataConfig, TableSource
from personalize.config.online import OnlineConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError, DataError, PersonalizeError
from personalize.core.paths import data_dir
from personalize.data.consent import CONSENT_COLUMNS, GRANTED, PURPOSE, parse_granted, read_consent_file
from personalize.data.readers import ROW, read_table
from personalize.data.validate import INT64_MAX, Issues, canonical_ids, now_utc, parse_timestamps
from personalize.scoring.online import CONSENT_EVENT, OnlineSettings, OnlineStore

log = logging.getLogger(__name__)

FIELDS = (C.USER, C.ITEM, C.EVENT, C.TIMESTAMP, "event_id")
CONSENT_FIELDS = (C.USER, PURPOSE, GRANTED, C.EVENT, C.TIMESTAMP, "event_id")
EVENT_ID = "event_id"
REASON = "reason"
SOURCE_ID = "stream_id"
_SEP = "\x1f"


class StreamError(PersonalizeError):
    """The Redis server cannot be reached, or the stream cannot take more events."""


# ------------------------------------------------------------------------ where the server is


def online_dir() -> Path:
    """``data/online``: the embedded server's data (``redis/``) and its URL (``redis.url``)."""
    return data_dir() / "online"


def url_file() -> Path:
    return online_dir() / "redis.url"


def resolve_url(config: OnlineConfig, url: str | None = None) -> str:
    """The server to use: ``url`` (``--redis-url``), else ``online.redis_url``, else the URL the
    running ``personalize stream server`` wrote to ``data/online/redis.url``; ConfigError when
    there is none."""
    if url:
        return url
    if config.redis_url:
        return config.redis_url
    path = url_file()
    if path.exists():
        text = path.read_text().strip()
        if text:
            return text
    raise ConfigError(
        "no Redis server: pass --redis-url, set online.redis_url in the experiment file, or start "
        f"the embedded one with `personalize stream server` (it writes its URL to {path})"
    )


def open_store(config: OnlineConfig, url: str) -> OnlineStore:
    """An :class:`OnlineStore` on ``url`` with a client fit for stream work: a socket timeout
    longer than a blocking read (``block_ms`` + 10 s), no silent retries (the worker's own loop
    retries, visibly). StreamError when the server does not answer."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=config.block_ms / 1000 + 10,
        socket_connect_timeout=5,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StreamError(
            f"cannot reach Redis at {url}: {exc} (is it running? `personalize stream server` starts the "
            "embedded one; --redis-url or online.redis_url name another)"
        ) from None
    settings = OnlineSettings(
        url=url,
        namespace=config.namespace,
        max_recent=config.max_recent,
        id_ttl_seconds=config.id_ttl_seconds,
        cache_ttl_seconds=config.cache_ttl_seconds,
    )
    return OnlineStore(settings, client=client)


def serve(folder: str | Path | None = None, port: int | None = None, echo: Callable[[str], Any] = print):
    """Run the embedded Redis (:class:`EmbeddedRedis`, data under ``folder``, default
    ``data/online/redis``) until interrupted; its URL is printed and written to
    ``data/online/redis.url`` (removed on exit) for ``publish`` and ``consume`` to find. SIGINT
    (Ctrl-C) or SIGTERM stops the server and returns."""
    import signal
    import threading

    from personalize.processes.redis import EmbeddedRedis

    if threading.current_thread() is threading.main_thread():  # Ctrl-C and SIGTERM both stop it
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    folder = Path(folder) if folder is not None else online_dir() / "redis"
    server = EmbeddedRedis(folder, port=port).start()
    path = url_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(server.url + "\n")
    echo(f"Redis at {server.url} (data in {folder}; URL written to {path}); Ctrl-C to stop")
    try:
        while server.running:
            time.sleep(0.5)
        raise StreamError(f"the embedded Redis stopped unexpectedly; see {folder / 'redis.log'}")
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if path.exists() and path.read_text().strip() == server.url:
            path.unlink()


# ---------------------------------------------------------------------------------- publish


def event_id_of(user_id: Any, item_id: Any, event: Any, timestamp: Any) -> str:
    """The ID of an event that has none: the first 24 hex digits of the SHA-1 of its user, item,
    event type and timestamp as text (missing: empty), joined by the unit separator. Equal rows
    get equal IDs: a copy of an event is the same event."""
    parts = ["" if _missing(v) else str(v).strip() for v in (user_id, item_id, event, timestamp)]
    return hashlib.sha1(_SEP.join(parts).encode()).hexdigest()[:24]


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def read_events(path: str | Path) -> pd.DataFrame:
    """A CSV/TSV/Parquet events file (columns user_id, item_id, timestamp, optional event and
    event_id) as text columns, read with the ingestion reader (a relative path: from the working
    folder when the file is there, else from the project root, as for ingestion). DataError for a
    missing file or column, or a line that cannot be parsed into fields (named with its line)."""
    path = Path(path).expanduser()
    if not path.is_absolute() and path.exists():  # a command-line argument: relative to the working folder
        path = path.resolve()
    if _is_consent_file(path):  # consent records (module doc)
        return read_consent_file(path).drop(columns=["_row"])
    reader = read_table(TableSource(path=path), "interactions")
    frame = pd.concat(list(reader), ignore_index=True)
    if reader.malformed:
        first = reader.malformed[0]
        raise DataError(
            f"events file {reader.path}: {len(reader.malformed)} malformed record(s); the first, record "
            f"{first.row}: {first.reason} ({first.detail}): {first.raw[:200]!r}"
        )
    return frame.drop(columns=[ROW])


def _is_consent_file(path: Path) -> bool:
    """Whether the file's header is a consent table's (purpose and granted, no item_id)."""
    if not path.exists():
        return False
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            columns = list(pq.read_schema(path).names)
        else:
            sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
            columns = [str(c).strip() for c in pd.read_csv(path, sep=sep, nrows=0).columns]
    except Exception:  # unreadable here: the events reader says why
        return False
    return PURPOSE in columns and GRANTED in columns and C.ITEM not in columns


def _as_text(values: pd.Series) -> list[str | None]:
    """Values as stream text: integers without '.0', datetimes in ISO 8601, missing as None."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return [None if pd.isna(v) else v.isoformat() for v in values]
    if pd.api.types.is_integer_dtype(values):
        return [None if pd.isna(v) else str(int(v)) for v in values]
    return [None if _missing(v) else str(v) for v in values]


@dataclass
class PublishResult:
    published: int
    generated_ids: int  # events that had no event_id (given one from their fields)
    repeated_ids: int  # events whose ID another event of the same call already had
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else float("inf")


def publish(
    store: OnlineStore,
    events: pd.DataFrame | str | Path,
    rate: float | None = None,
    config: OnlineConfig | None = None,
    progress: bool = False,
) -> PublishResult:
    """Add every event of ``events`` (a frame, or a file for :func:`read_events`) to the stream,
    in order, at ``rate`` events/s (None: as fast as pipelining allows). Returns the counts.
    StreamError when the backlog would exceed ``online.stream_max_length``."""
    from tqdm.auto import tqdm

    config = config or OnlineConfig()
    frame = read_events(events) if isinstance(events, (str, Path)) else events
    consent = PURPOSE in frame.columns and GRANTED in frame.columns and C.ITEM not in frame.columns
    fields = CONSENT_FIELDS if consent else FIELDS
    if consent:
        frame = frame.assign(**{C.EVENT: CONSENT_EVENT})
    for col in CONSENT_COLUMNS if consent else (C.USER, C.ITEM, C.TIMESTAMP):
        if col not in frame.columns:
            raise DataError(f"events: required column '{col}' is missing; columns are {list(frame.columns)}")
    if rate is not None and rate <= 0:
        raise ConfigError(f"rate must be positive events/s, got {rate}")
    n = len(frame)
    cols = {c: _as_text(frame[c]) if c in frame.columns else [None] * n for c in fields}
    generated = 0
    for i, given in enumerate(cols[EVENT_ID]):
        if given is None or not given.strip():
            cols[EVENT_ID][i] = _id_of({c: cols[c][i] for c in fields})
            generated += 1
    repeated = n - len(set(cols[EVENT_ID]))
    chunk = config.batch_size if rate is None else max(1, min(config.batch_size, int(rate / 20)))
    bar = tqdm(total=n, desc="publish", unit="event", disable=not progress)
    start = time.perf_counter()
    try:
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            backlog = store.client.xlen(store.stream)
            if backlog + (hi - lo) > config.stream_max_length:
                raise StreamError(
                    f"the stream {store.stream} holds {backlog} entries (the backlog, plus at most a few "
                    f"hundred acknowledged ones not yet trimmed); adding {hi - lo} "
                    f"more would pass online.stream_max_length ({config.stream_max_length}) and trim "
                    f"unconsumed events: start a consumer (personalize stream consume) or raise the cap "
                    f"({lo} of {n} events published so far)"
                )
            pipe = store.client.pipeline(transaction=False)
            for i in range(lo, hi):
                entry = {c: cols[c][i] for c in fields if cols[c][i] is not None}
                pipe.xadd(store.stream, entry, maxlen=config.stream_max_length, approximate=True)
            pipe.execute()
            bar.update(hi - lo)
            if rate is not None:
                wait = start + hi / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
    finally:
        bar.close()
    return PublishResult(n, generated, repeated, time.perf_counter() - start)


def _id_of(fields: dict[str, Any]) -> str:
    """The derived ID of an event (:func:`event_id_of`) or of a consent record (its purpose and
    granted in the item's place)."""
    if fields.get(C.EVENT) is not None and str(fields[C.EVENT]).strip() == CONSENT_EVENT:
        what = f"{fields.get(PURPOSE)}={fields.get(GRANTED)}"
        return event_id_of(fields.get(C.USER), what, CONSENT_EVENT, fields.get(C.TIMESTAMP))
    return event_id_of(fields.get(C.USER), fields.get(C.ITEM), fields.get(C.EVENT), fields.get(C.TIMESTAMP))


# ---------------------------------------------------------------------------------- validate


@dataclass
class Rejected:
    """A stream entry that is not a valid event: its ID, raw fields and why."""

    stream_id: str
    fields: dict[str, str]
    reason: str


def _stream_id_value(text: str) -> int | str:
    """An ID for the stored event: an int when it is a canonical integer that fits int64 (what
    the served model's ID lookup matches either way), else the text."""
    if text.lstrip("-").isdigit() and -(2**63) <= int(text) <= INT64_MAX:
        return int(text)
    return text


def validate_entries(
    entries: list[tuple[str, dict[str, str] | None]],
    data: DataConfig | None = None,
    now: pd.Timestamp | None = None,
) -> tuple[list[tuple[str, dict[str, Any]]], list[Rejected]]:
    """Split stream entries into valid events (stream ID, event ready for
    :meth:`OnlineStore.apply`) and rejected ones, with the ingestion rules:

    - ``user_id``, ``item_id``: present (:func:`canonical_ids`: surrounding spaces dropped,
      ``'007'`` is ``'7'``); stored as int64 when a canonical integer that fits, else text;
    - ``timestamp``: epoch number in ``data.timestamp.epoch_unit`` or ISO 8601 with an offset
      (or ``assume_timezone``), inside the plausible window (``data.timestamp.earliest`` to now
      when ``reject_future``) (:func:`parse_timestamps`); stored as ISO 8601 UTC;
    - ``event``: when ``data.events`` configures types, present and one of them; else free;
    - ``event_id``: derived from the fields (:func:`event_id_of`) when absent.

    A rejected entry's reason lists every failure as ``field: what`` (e.g. ``user_id: user_id is
    missing``). An entry with no fields (deleted before it was read) is rejected as such.

    An entry with ``event: consent`` is a consent record (module doc), checked by
    :func:`validate_consent_entries` instead; results keep the entries' order.
    """
    data = data or DataConfig()
    now = now if now is not None else now_utc()
    is_consent = [bool(f) and str(f.get(C.EVENT) or "").strip() == CONSENT_EVENT for _, f in entries]
    if not any(is_consent):
        return _validate_events(entries, data, now)
    order = {sid: pos for pos, (sid, _) in enumerate(entries)}
    v1, r1 = _validate_events([e for e, c in zip(entries, is_consent) if not c], data, now)
    v2, r2 = validate_consent_entries([e for e, c in zip(entries, is_consent) if c], data, now)
    valid = sorted(v1 + v2, key=lambda v: order[v[0]])
    rejected = sorted(r1 + r2, key=lambda r: order[r.stream_id])
    return valid, rejected


def validate_consent_entries(
    entries: list[tuple[str, dict[str, str]]], data: DataConfig, now: pd.Timestamp
) -> tuple[list[tuple[str, dict[str, Any]]], list[Rejected]]:
    """Consent records from the stream, checked with the consent table's rules
    (:mod:`personalize.data.consent`): ``user_id`` present (canonical), ``purpose`` one of
    ``data.privacy.record.purposes``, ``granted`` a boolean, ``timestamp`` as for events. Valid
    ones are ready for :meth:`OnlineStore.consent` (``granted`` a bool, ``timestamp`` ISO 8601 UTC)."""
    n = len(entries)
    raw = [fields or {} for _, fields in entries]
    frame = pd.DataFrame(
        {c: pd.array([r.get(c) for r in raw], dtype="string") for c in CONSENT_FIELDS}, index=range(n)
    )
    for c in CONSENT_FIELDS:
        frame[c] = frame[c].mask(frame[c].str.strip() == "")
    issues = Issues(n)
    users = canonical_ids(frame[C.USER], C.USER, issues)
    purposes = frame[PURPOSE].str.strip()
    known = sorted(data.privacy.record.purposes)
    issues.add(purposes.isna().to_numpy(dtype=bool), "purpose: missing", "purpose is missing")
    issues.add(
        (purposes.notna() & ~purposes.isin(known)).to_numpy(dtype=bool),
        "purpose: unknown",
        lambda pos: [
            f"purpose '{purposes.iloc[p]}' is not one of data.privacy.record.purposes {known}" for p in pos
        ],
    )
    granted, ok = parse_granted(frame[GRANTED])
    issues.add(
        ~ok,
        "granted: not a boolean",
        lambda pos: [f"granted '{frame[GRANTED].iloc[p]}' is not true/false, 1/0 or yes/no" for p in pos],
    )
    stamps = parse_timestamps(frame[C.TIMESTAMP], data.timestamp, issues, now)
    bad = issues.bad()
    valid, rejected = [], []
    for pos, (sid, _) in enumerate(entries):
        if bad[pos]:
            reason = "; ".join(
                f"{kind.split(':')[0]}: {detail}"
                for kind, detail in zip(issues.kinds(pos), issues.details(pos), strict=True)
            )
            rejected.append(Rejected(sid, raw[pos], reason))
            continue
        eid = frame[EVENT_ID].iloc[pos]
        eid = _id_of(raw[pos]) if _missing(eid) else str(eid).strip()
        record = {
            C.USER: str(users.iloc[pos]),
            C.EVENT: CONSENT_EVENT,
            PURPOSE: str(purposes.iloc[pos]),
            GRANTED: bool(granted[pos]),
            C.TIMESTAMP: stamps.iloc[pos].isoformat(),
            EVENT_ID: eid,
        }
        valid.append((sid, record))
    return valid, rejected


def _validate_events(
    entries: list[tuple[str, dict[str, str] | None]], data: DataConfig, now: pd.Timestamp
) -> tuple[list[tuple[str, dict[str, Any]]], list[Rejected]]:
    """:func:`validate_entries` of entries that are not consent records."""
    now = now if now is not None else now_utc()
    n = len(entries)
    raw = [fields or {} for _, fields in entries]
    frame = pd.DataFrame(
        {c: pd.array([r.get(c) for r in raw], dtype="string") for c in FIELDS}, index=range(n)
    )
    for c in FIELDS:
        frame[c] = frame[c].mask(frame[c].str.strip() == "")
    issues = Issues(n)
    deleted = np.array([fields is None or not fields for _, fields in entries], dtype=bool)
    issues.add(deleted, "entry: deleted", "entry was deleted from the stream before it was processed")
    users = canonical_ids(frame[C.USER], C.USER, issues)
    items = canonical_ids(frame[C.ITEM], C.ITEM, issues)
    stamps = parse_timestamps(frame[C.TIMESTAMP], data.timestamp, issues, now)
    events = frame[C.EVENT].str.strip()
    if data.events:
        known = sorted(data.events)
        issues.add(
            (events.isna() & ~deleted).to_numpy(dtype=bool),
            "event: missing",
            f"event is missing (data.events configures {known})",
        )
        unknown = (events.notna() & ~events.isin(known)).to_numpy(dtype=bool)
        issues.add(
            unknown,
            "event: unknown type",
            lambda pos: [f"event '{events.iloc[p]}' is not one of data.events {known}" for p in pos],
        )
    bad = issues.bad()
    user_list, item_list, event_list = users.tolist(), items.tolist(), events.tolist()
    id_list, stamp_list = frame[EVENT_ID].tolist(), stamps.tolist()
    valid, rejected = [], []
    for pos, (sid, _) in enumerate(entries):
        if bad[pos]:
            reason = "; ".join(
                f"{kind.split(':')[0]}: {detail}"
                for kind, detail in zip(issues.kinds(pos), issues.details(pos), strict=True)
            )
            rejected.append(Rejected(sid, raw[pos], reason))
            continue
        event = None if _missing(event_list[pos]) else str(event_list[pos])
        eid = id_list[pos]
        if _missing(eid):
            r = raw[pos]
            eid = event_id_of(r.get(C.USER), r.get(C.ITEM), r.get(C.EVENT), r.get(C.TIMESTAMP))
        event_fields = {
            C.USER: str(user_list[pos]),
            C.ITEM: _stream_id_value(str(item_list[pos])),
            C.EVENT: event,
            C.TIMESTAMP: stamp_list[pos].isoformat(),
            EVENT_ID: str(eid).strip(),
        }
        valid.append((sid, event_fields))
    return valid, rejected


def _dead_fields(rejected: Rejected) -> dict[str, str]:
    """The dead-letter entry: the raw fields (a raw field named like one of ours is kept as
    ``raw:<name>``), the reason and the original stream ID."""
    out = {(f"raw:{k}" if k in (REASON, SOURCE_ID) else k): v for k, v in rejected.fields.items()}
    out[REASON] = rejected.reason
    out[SOURCE_ID] = rejected.stream_id
    return out


# ---------------------------------------------------------------------------------- consume


@dataclass
class ConsumeResult:
    """What a worker did. ``applied + duplicates + dead_lettered`` entries were acknowledged;
    ``claimed`` of them came from other workers' pending entries, ``redelivered`` from this
    worker's own (a restart or a lost connection)."""

    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    claimed: int = 0
    redelivered: int = 0
    batches: int = 0
    reconnects: int = 0
    seconds: float = 0.0

    @property
    def processed(self) -> int:
        return self.applied + self.duplicates + self.dead_lettered

    @property
    def events_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_second": round(self.events_per_second, 1)}


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def ensure_group(store: OnlineStore) -> None:
    """Create the consumer group (reading from the stream's start; the stream too when missing)."""
    import redis

    try:
        store.client.xgroup_create(store.stream, store.group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _entries(reply: Any) -> list[tuple[str, dict[str, str] | None]]:
    """XREADGROUP's reply for one stream as [(ID, fields)]."""
    if not reply:
        return []
    return [(sid, fields) for sid, fields in reply[0][1]]


def consume(
    store: OnlineStore,
    consumer_name: str | None = None,
    config: OnlineConfig | None = None,
    data: DataConfig | None = None,
    stop_after: int | None = None,
    until_idle: bool = False,
    on_batch: Callable[[list[tuple[str, dict[str, str] | None]]], Any] | None = None,
    progress: bool = False,
) -> ConsumeResult:
    """Run one worker (module doc) until ``stop_after`` entries are processed, or (``until_idle``)
    until a read finds nothing new and nothing to claim, or until interrupted (the counts so far
    are returned). ``on_batch`` sees each batch before it is written (progress, tests). Raises
    StreamError when the server stays unreachable longer than ``online.reconnect_seconds``."""
    import redis
    from tqdm.auto import tqdm

    config = config or OnlineConfig()
    data = data or DataConfig()
    name = consumer_name or default_consumer_name()
    result = ConsumeResult()
    start = time.perf_counter()
    bar = tqdm(desc=f"consume ({name})", unit="event", disable=not progress)
    own_pending = True  # re-read this name's pending entries first
    group_ready = False
    failing_since: float | None = None
    backoff = 0.05
    last_trim = 0.0
    try:
        while stop_after is None or result.processed < stop_after:
            count = config.batch_size
            if stop_after is not None:
                count = min(count, stop_after - result.processed)
            try:
                if not group_ready:
                    ensure_group(store)
                    group_ready = True
                batch, source = [], "new"
                if own_pending:
                    batch = _entries(
                        store.client.xreadgroup(store.group, name, {store.stream: "0"}, count=count)
                    )
                    source = "own"
                    own_pending = bool(batch)
                if not batch:
                    reply = store.client.xautoclaim(
                        store.stream, store.group, name, min_idle_time=config.claim_idle_ms,
                        start_id="0-0", count=count,
                    )  # fmt: skip
                    batch, source = list(reply[1]), "claimed"
                if not batch:
                    batch, source = (
                        _entries(
                            store.client.xreadgroup(
                                store.group, name, {store.stream: ">"}, count=count, block=config.block_ms
                            )
                        ),
                        "new",
                    )
                    if not batch:
                        if until_idle:
                            break
                        continue
                if on_batch is not None:
                    on_batch(batch)
                _write_batch(store, batch, data, result)
                result.batches += 1
                if source == "claimed":
                    result.claimed += len(batch)
                elif source == "own":
                    result.redelivered += len(batch)
                bar.update(len(batch))
                if time.monotonic() - last_trim > 1.0:
                    trim_acknowledged(store)
                    last_trim = time.monotonic()
                failing_since, backoff = None, 0.05
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > config.reconnect_seconds:
                    raise StreamError(
                        f"Redis at {store.settings.url} unreachable for {now - failing_since:.1f} s "
                        f"(online.reconnect_seconds = {config.reconnect_seconds:g}): {exc}"
                    ) from exc
                log.warning("worker %s: Redis unreachable (%s); retrying in %.2f s", name, exc, backoff)
                result.reconnects += 1
                own_pending, group_ready = True, False  # the batch in flight may be pending: read it again
                time.sleep(backoff)
                backoff = min(1.0, backoff * 2)
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # the stream or group was deleted (or a server lost its data)
                    group_ready = False
                    continue
                raise
    except KeyboardInterrupt:
        pass
    finally:
        bar.close()
        result.seconds = time.perf_counter() - start
    return result


def _write_batch(
    store: OnlineStore,
    batch: list[tuple[str, dict[str, str] | None]],
    data: DataConfig,
    result: ConsumeResult,
) -> None:
    """Validate, then in one MULTI/EXEC: apply the valid events, dead-letter the rest, XACK all."""
    valid, rejected = validate_entries(batch, data)
    pipe = store.client.pipeline(transaction=True)
    for _, event in valid:
        if event.get(C.EVENT) == CONSENT_EVENT:
            store.consent(event, pipe)
        else:
            store.apply(event, pipe)
    for item in rejected:
        pipe.xadd(store.dead, _dead_fields(item))
    pipe.xack(store.stream, store.group, *[sid for sid, _ in batch])
    replies = pipe.execute()
    applied = sum(1 for r in replies[: len(valid)] if int(r) > 0)
    result.applied += applied
    result.duplicates += len(valid) - applied
    result.dead_lettered += len(rejected)


def trim_acknowledged(store: OnlineStore) -> None:
    """Delete the stream entries every group has acknowledged: ``XTRIM MINID ~`` the smallest of
    each group's oldest pending entry and last delivered entry (read in one transaction, so no
    delivery can slip in between)."""
    pipe = store.client.pipeline(transaction=True)
    pipe.xinfo_groups(store.stream)
    pipe.xpending(store.stream, store.group)
    groups, summary = pipe.execute()
    if len(groups) != 1 or groups[0]["name"] != store.group:
        return  # other groups read this stream: their progress is theirs to track; trim nothing
    floor = [_id_key(groups[0]["last-delivered-id"])]
    if summary["pending"] and summary["min"]:
        floor.append(_id_key(summary["min"]))
    low = min(floor)
    if low > (0, 0):
        store.client.xtrim(store.stream, minid=f"{low[0]}-{low[1]}", approximate=True)


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def dead_letters(store: OnlineStore, count: int | None = None) -> list[tuple[str, dict[str, str]]]:
    """The dead-letter stream's entries, oldest first (ID, fields with ``reason``)."""
    return [(sid, fields) for sid, fields in store.client.xrange(store.dead, count=count)]


def pending_count(store: OnlineStore) -> int:
    """Entries delivered to a worker of the group and not acknowledged."""
    return int(store.client.xpending(store.stream, store.group)["pending"])


def describe(result: PublishResult | ConsumeResult) -> Iterable[str]:
    """Lines summing up a publish or consume result."""
    if isinstance(result, PublishResult):
        yield (
            f"published {result.published} events in {result.seconds:.2f} s "
            f"({result.events_per_second:,.0f} events/s); {result.generated_ids} given an ID from their "
            f"fields, {result.repeated_ids} repeating an ID of this file"
        )
        return
    yield (
        f"applied {result.applied}, duplicates {result.duplicates}, dead-lettered {result.dead_lettered} "
        f"(claimed {result.claimed}, redelivered {result.redelivered}, reconnects {result.reconnects}) "
        f"in {result.seconds:.2f} s ({result.events_per_second:,.0f} events/s)"
    )
