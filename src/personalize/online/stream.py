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
   a restart, a lost connection, an entry whose write failed), then
2. claim entries another worker has left pending longer than ``claim_idle_ms`` (``XAUTOCLAIM``:
   that worker is presumed dead), then
3. read new entries (``XREADGROUP ... BLOCK block_ms``).

Entries are read as bytes (:mod:`personalize.online.entries`) and each batch is validated with
the ingestion rules (:func:`validate_entries`, :mod:`personalize.online.validate`), entry by
entry: a field that is not UTF-8 or is given twice, an ID of 5,000 digits or of Unicode digits
(text, by ingestion's rule :func:`personalize.data.validate.integer_id`) concerns that entry
alone. The batch is then written in one ``MULTI``/``EXEC`` transaction: every valid event applied
and its entry acknowledged in one Lua script (:meth:`OnlineStore.apply`: it skips an event ID it
has seen, and checks the kinds of the user's keys before writing anything), every malformed entry
added to the dead-letter stream with its raw fields (bytes kept, recoverably) and a reason naming
the field, and acknowledged. An event is thus applied and acknowledged together or not at all; a
batch whose transaction did not run stays pending and is read again, and an event that does come
back (a re-published file, a redelivery) finds its ID and changes nothing.

**Poison entries**: an entry whose write fails all the same (the store refuses it: a key of the
user holding another type, an error raised for it) stays pending alone, the rest of its batch is
written, and the worker retries it (step 1); the delivery on which its delivery count
(``XPENDING``'s times-delivered) reaches ``online.max_deliveries`` and fails dead-letters it with
the error, and an entry delivered more often than that (the workers that held it died on it) is
dead-lettered without another attempt. Every entry thus ends applied once or in the dead-letter
stream, and acknowledged; no entry stops a worker.

**Until idle** (``until_idle``, ``personalize stream consume --until-idle``): the worker stops
when nothing new arrives and nothing is pending in the group. Entries another worker holds are
waited for: acknowledged by it, or claimed once idle ``claim_idle_ms``; with ``deadline_seconds``
(``--deadline``) a run not drained by then reports what is left pending, per consumer, and the
command exits 1.

**Lost connection**: the worker retries (back-off from 0.05 s doubling to 1 s) for up to
``online.reconnect_seconds``, logging each failure, then raises :class:`StreamError`; when the
server answers again it first re-reads its own pending entries (step 1), so a batch caught in
the failure is applied (or found applied) and acknowledged.

**Trimming**: at most once a second a worker deletes the entries its group has acknowledged
(``XTRIM MINID ~`` below the oldest pending and the last delivered entry, read in one
transaction), so the stream holds the backlog only. When other groups read the stream too,
nothing is trimmed (their progress is not this group's to judge) and the cap alone bounds it.

One module for publishing and consuming (over 400 lines): both sides of the stream's contract
(its fields, the event IDs, the backlog cap and the trimming that keeps it honest) are read and
changed together; the entries' byte-level handling and their validation have modules of their own.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from personalize.config.data import DataConfig, TableSource
from personalize.config.online import OnlineConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError, DataError, PersonalizeError
from personalize.core.paths import data_dir
from personalize.data.consent import CONSENT_COLUMNS, GRANTED, PURPOSE, read_consent_file
from personalize.data.readers import ROW, read_table
from personalize.online import entries as E
from personalize.online.validate import (
    CONSENT_FIELDS,
    EVENT_ID,
    FIELDS,
    Rejected,
    derived_id,
    event_id_of,
    missing,
    validate_entries,
)
from personalize.scoring.online import CONSENT_EVENT, OnlineSettings, OnlineStore

log = logging.getLogger(__name__)

__all__ = [  # the stream's API, validation included (from personalize.online.validate)
    "ConsumeResult",
    "PublishResult",
    "Rejected",
    "StreamError",
    "consume",
    "dead_letter_pairs",
    "dead_letters",
    "describe",
    "ensure_group",
    "event_id_of",
    "open_store",
    "pending_count",
    "publish",
    "read_events",
    "resolve_url",
    "serve",
    "trim_acknowledged",
    "validate_entries",
]

_RETRY_PAUSE = 0.05  # seconds before an entry whose write failed is retried


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
    return [None if missing(v) else str(v) for v in values]


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
            cols[EVENT_ID][i] = derived_id({c: cols[c][i] for c in fields})
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


# ---------------------------------------------------------------------------------- consume


@dataclass
class ConsumeResult:
    """What a worker did. ``applied + duplicates + dead_lettered`` entries were acknowledged;
    ``claimed`` of them came from other workers' pending entries, ``redelivered`` from this
    worker's own (a restart, a lost connection, a retry). ``poisoned`` of the dead-lettered
    entries failed to apply until their delivery count reached ``online.max_deliveries``;
    ``failed_attempts`` counts the attempts that failed and were left pending to retry.
    ``stopped``: ``idle`` (``until_idle``: nothing new, nothing pending anywhere in the group),
    ``deadline`` (then ``pending_left`` entries were still pending, by consumer in
    ``pending_by``, and ``unread_left`` says whether entries no worker had read remained),
    ``stop_after`` or ``interrupted``."""

    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    poisoned: int = 0
    failed_attempts: int = 0
    claimed: int = 0
    redelivered: int = 0
    batches: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    stopped: str = ""
    pending_left: int = 0
    pending_by: dict[str, int] = field(default_factory=dict)
    unread_left: bool = False

    @property
    def processed(self) -> int:
        return self.applied + self.duplicates + self.dead_lettered

    @property
    def drained(self) -> bool:
        """Whether the run stopped because the group had nothing left (``until_idle``)."""
        return self.stopped == "idle"

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


def consume(
    store: OnlineStore,
    consumer_name: str | None = None,
    config: OnlineConfig | None = None,
    data: DataConfig | None = None,
    stop_after: int | None = None,
    until_idle: bool = False,
    on_batch: Callable[[list[E.RawEntry]], Any] | None = None,
    progress: bool = False,
    deadline_seconds: float | None = None,
) -> ConsumeResult:
    """Run one worker (module doc) until ``stop_after`` entries are processed, or
    (``until_idle``) until a read finds nothing new and nothing is pending in the group (entries
    another worker holds are waited for: acknowledged by it, or claimed once idle
    ``claim_idle_ms``), or until ``deadline_seconds`` have passed (the result then says what was
    left: ``stopped == "deadline"``), or until interrupted (the counts so far are returned).
    ``on_batch`` sees each batch, (stream ID, raw field pairs) as read, before it is written
    (progress, tests). Raises StreamError when the server stays unreachable longer than
    ``online.reconnect_seconds``; no entry makes it raise."""
    import redis
    from tqdm.auto import tqdm

    config = config or OnlineConfig()
    data = data or DataConfig()
    name = consumer_name or default_consumer_name()
    result = ConsumeResult()
    start = time.perf_counter()
    deadline = None if deadline_seconds is None else time.monotonic() + deadline_seconds
    reader = E.reader_client(store.settings.url, socket_timeout=config.block_ms / 1000 + 10)
    bar = tqdm(desc=f"consume ({name})", unit="event", disable=not progress)
    own_pending = True  # re-read this name's pending entries first
    group_ready = False
    failing_since: float | None = None
    backoff = 0.05
    last_trim = 0.0
    waiting_logged = False
    try:
        while True:
            if stop_after is not None and result.processed >= stop_after:
                result.stopped = "stop_after"
                break
            if deadline is not None and time.monotonic() >= deadline:
                _left(store, reader, result)
                drained = until_idle and not result.pending_left and not result.unread_left
                result.stopped = "idle" if drained else "deadline"
                break
            count = config.batch_size
            if stop_after is not None:
                count = min(count, stop_after - result.processed)
            try:
                if not group_ready:
                    ensure_group(store)
                    group_ready = True
                batch, source = [], "new"
                if own_pending:
                    batch = E.read_reply(
                        reader.xreadgroup(store.group, name, {store.stream: "0"}, count=count)
                    )
                    source = "own"
                    own_pending = bool(batch)
                if not batch:
                    reply = reader.xautoclaim(
                        store.stream, store.group, name, min_idle_time=config.claim_idle_ms,
                        start_id="0-0", count=count,
                    )  # fmt: skip
                    batch, source = E.claim_reply(reply), "claimed"
                if not batch:
                    block = config.block_ms
                    if deadline is not None:
                        block = max(1, min(block, int((deadline - time.monotonic()) * 1000)))
                    reply = reader.xreadgroup(
                        store.group, name, {store.stream: ">"}, count=count, block=block
                    )
                    batch, source = E.read_reply(reply), "new"
                    if not batch:
                        if until_idle:
                            held = _pending_by_consumer(store, reader)
                            if not held:
                                result.stopped = "idle"
                                break
                            if not waiting_logged:  # another worker holds entries: wait for them
                                log.info(
                                    "worker %s: waiting for %d pending entries of %s (acknowledged by their "
                                    "worker, or claimed once idle %d ms: online.claim_idle_ms)",
                                    name, sum(held.values()), held, config.claim_idle_ms,
                                )  # fmt: skip
                                waiting_logged = True
                        continue
                if on_batch is not None:
                    on_batch(batch)
                retry = _write_batch(store, reader, batch, source, config, data, result)
                own_pending = own_pending or retry
                result.batches += 1
                if source == "claimed":
                    result.claimed += len(batch)
                elif source == "own":
                    result.redelivered += len(batch)
                bar.update(len(batch))
                if time.monotonic() - last_trim > 1.0:
                    trim_acknowledged(store, reader)
                    last_trim = time.monotonic()
                failing_since, backoff = None, 0.05
                if retry:  # an entry's write failed: it is re-read (step 1) after a pause, not in a spin
                    time.sleep(_RETRY_PAUSE)
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
        result.stopped = "interrupted"
    finally:
        bar.close()
        reader.close()
        result.seconds = time.perf_counter() - start
    return result


def _pending_by_consumer(store: OnlineStore, reader: Any) -> dict[str, int]:
    """The group's pending entries per consumer (``XPENDING`` summary; names as text)."""
    summary = reader.xpending(store.stream, store.group)
    if not summary or not summary.get("pending"):
        return {}
    return {E.text(c["name"]): int(c["pending"]) for c in summary.get("consumers") or []}


def _left(store: OnlineStore, reader: Any, result: ConsumeResult) -> None:
    """What a run stopped at its deadline leaves: the pending entries by consumer, and whether
    the stream holds entries past the group's last delivered one (never read)."""
    import redis

    try:
        result.pending_by = _pending_by_consumer(store, reader)
        result.pending_left = sum(result.pending_by.values())
        last = reader.xrevrange(store.stream, count=1)
        groups = [g for g in reader.xinfo_groups(store.stream) if E.text(g["name"]) == store.group]
        delivered = E.text(groups[0]["last-delivered-id"]) if groups else "0-0"
        result.unread_left = bool(last) and _id_key(E.text(last[0][0])) > _id_key(delivered)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("cannot read what is left pending (%s)", exc)
        result.unread_left = True


@dataclass
class _Op:
    """One entry's write: ``apply`` a valid event (or consent record) and acknowledge it in the
    same script, or ``dead``-letter a rejected entry and acknowledge it."""

    kind: str
    stream_id: str
    event: dict[str, Any] | None = None
    rejected: Rejected | None = None
    poison: bool = False  # dead-lettered for failing until online.max_deliveries


def _write_batch(
    store: OnlineStore,
    reader: Any,
    batch: list[E.RawEntry],
    source: str,
    config: OnlineConfig,
    data: DataConfig,
    result: ConsumeResult,
) -> bool:
    """Validate the batch, then in one MULTI/EXEC: apply each valid event and acknowledge its
    entry (one script per event: both or neither), dead-letter and acknowledge each rejected
    entry. An entry whose write fails stays pending and is retried (True is returned: re-read
    this worker's pending entries), until its delivery count reaches ``online.max_deliveries``:
    then it is dead-lettered with the error. An entry delivered more than that many times (its
    workers died on it) is dead-lettered without another attempt."""
    valid, rejected = validate_entries(batch, data)
    limit = config.max_deliveries
    counts = dict.fromkeys((sid for sid, _ in batch), 1)
    if source != "new":
        counts.update(_delivery_counts(store, reader, list(counts)))
    raw = dict(batch)
    ops = [_Op("dead", r.stream_id, rejected=r) for r in rejected]
    for sid, event in valid:
        if counts[sid] > limit:
            reason = (
                f"entry: delivered {counts[sid]} times, more than online.max_deliveries ({limit}), without "
                "being applied or dead-lettered (the workers that held it died or failed on it)"
            )
            ops.append(_Op("dead", sid, rejected=Rejected(sid, raw[sid], reason), poison=True))
        else:
            ops.append(_Op("apply", sid, event=event))
    retry = False
    while ops:
        outcome = _execute(store, ops)
        poison = []
        for op in ops:
            reply = outcome[op.stream_id]
            if isinstance(reply, Exception):
                if op.kind == "apply" and counts[op.stream_id] >= limit:
                    reason = (
                        f"entry: applying it failed on delivery {counts[op.stream_id]} "
                        f"(online.max_deliveries = {limit}): {type(reply).__name__}: {reply}"
                    )
                    rejected_op = Rejected(op.stream_id, raw[op.stream_id], reason)
                    poison.append(_Op("dead", op.stream_id, rejected=rejected_op, poison=True))
                    continue
                log.warning(
                    "entry %s (delivery %d, online.max_deliveries %d): %s failed, left pending: %s",
                    op.stream_id, counts[op.stream_id], limit, op.kind, reply,
                )  # fmt: skip
                result.failed_attempts += 1
                retry = True
            elif op.kind == "dead":
                result.dead_lettered += 1
                result.poisoned += op.poison
            elif int(reply) > 0:
                result.applied += 1
            else:
                result.duplicates += 1
        ops = poison  # dead-letter what failed on its last allowed delivery (a failure here: retried)
    return retry


def _delivery_counts(store: OnlineStore, reader: Any, stream_ids: list[str]) -> dict[str, int]:
    """Each pending entry's delivery count (``XPENDING``'s times-delivered, this delivery
    included); an entry no longer pending (another worker acknowledged it meanwhile) is left out."""
    pipe = reader.pipeline(transaction=False)
    for sid in stream_ids:
        pipe.xpending_range(store.stream, store.group, min=sid, max=sid, count=1)
    out = {}
    for rows in pipe.execute():
        for row in rows or []:
            out[E.text(row["message_id"])] = int(row["times_delivered"])
    return out


def _execute(store: OnlineStore, ops: list[_Op]) -> dict[str, Any]:
    """Write ``ops`` in one MULTI/EXEC; each entry's reply (an apply script's count, the
    dead letter's ID) or the exception that kept it from being written. Connection failures
    propagate (the worker's reconnect loop); a transaction refused as a whole is written again
    one entry per transaction, to find the entry at fault."""
    import redis

    out: dict[str, Any] = {}
    pipe = store.client.pipeline(transaction=True)
    queued = []
    for op in ops:
        try:
            if op.kind == "apply":
                write = store.consent if op.event.get(C.EVENT) == CONSENT_EVENT else store.apply
                write(op.event, pipe, ack=op.stream_id)
            else:
                dead = E.dead_fields(op.stream_id, op.rejected.fields, op.rejected.reason)
                pipe.execute_command("XADD", store.dead, "*", *[x for pair in dead for x in pair])
                pipe.xack(store.stream, store.group, op.stream_id)
            queued.append(op)
        except Exception as exc:  # the store refused the entry before anything was sent
            out[op.stream_id] = exc
    if not queued:
        return out
    try:
        replies = pipe.execute(raise_on_error=False)
    except (redis.ConnectionError, redis.TimeoutError):
        raise
    except Exception as exc:
        if len(queued) == 1:
            out[queued[0].stream_id] = exc
            return out
        for op in queued:
            out.update(_execute(store, [op]))
        return out
    pos = 0
    for op in queued:
        size = 1 if op.kind == "apply" else 2
        part = replies[pos : pos + size]
        pos += size
        failed = [r for r in part if isinstance(r, Exception)]
        out[op.stream_id] = failed[0] if failed else part[0]
    return out


def trim_acknowledged(store: OnlineStore, client: Any | None = None) -> None:
    """Delete the stream entries every group has acknowledged: ``XTRIM MINID ~`` the smallest of
    each group's oldest pending entry and last delivered entry (read in one transaction, so no
    delivery can slip in between). ``client``: the one to read with (default the store's; the
    workers pass their bytes reader, so that another group's name that is not UTF-8 cannot
    stop them)."""
    client = client if client is not None else store.client
    pipe = client.pipeline(transaction=True)
    pipe.xinfo_groups(store.stream)
    pipe.xpending(store.stream, store.group)
    groups, summary = pipe.execute()
    if len(groups) != 1 or E.text(groups[0]["name"]) != store.group:
        return  # other groups read this stream: their progress is theirs to track; trim nothing
    floor = [_id_key(E.text(groups[0]["last-delivered-id"]))]
    if summary["pending"] and summary["min"]:
        floor.append(_id_key(E.text(summary["min"])))
    low = min(floor)
    if low > (0, 0):
        store.client.xtrim(store.stream, minid=f"{low[0]}-{low[1]}", approximate=True)


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def dead_letters(store: OnlineStore, count: int | None = None) -> list[tuple[str, dict[str, str]]]:
    """The dead-letter stream's entries, oldest first (ID, fields with ``reason`` and
    ``stream_id``; :func:`personalize.online.entries.raw_fields` gives back the raw entry's
    exact bytes)."""
    return [(sid, fields) for sid, fields in store.client.xrange(store.dead, count=count)]


def dead_letter_pairs(store: OnlineStore, count: int | None = None) -> list[E.RawEntry]:
    """The dead-letter stream's entries as (ID, field pairs as bytes, in order): what
    :func:`personalize.online.entries.raw_fields` reads the raw entry back from."""
    reader = E.reader_client(store.settings.url, socket_timeout=10)
    try:
        return E.range_reply(reader.xrange(store.dead, count=count))
    finally:
        reader.close()


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
    if result.poisoned or result.failed_attempts:
        yield (
            f"{result.poisoned} dead-lettered after failing to apply until online.max_deliveries; "
            f"{result.failed_attempts} failed attempts left pending to retry"
        )
    if result.stopped == "deadline":
        held = ", ".join(f"{c}: {n}" for c, n in sorted(result.pending_by.items())) or "none"
        yield (
            f"NOT drained at the deadline: {result.pending_left} entries still pending (by consumer: {held})"
            + ("; entries no worker has read remain" if result.unread_left else "")
        )
