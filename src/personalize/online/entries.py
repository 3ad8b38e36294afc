"""Stream entries as any producer may have written them: read as bytes, decoded field by field,
and kept recoverable in the dead-letter stream.

A Redis stream entry is a list of (field, value) byte-string pairs; nothing makes a producer
write UTF-8, or each field once. The workers therefore read entries as bytes (a client without
``decode_responses`` whose ``XREADGROUP``/``XAUTOCLAIM`` replies are kept as the server sent
them, pairs in order, repeats included) and decode only the fields they use, one by one
(:func:`decode_known`): a value that is not UTF-8, or a field given twice, is a problem of that
entry and that field, never an error of the batch.

**Dead-letter fields** (:func:`dead_fields`, inverted by :func:`raw_fields`): every raw pair
of the entry, in order, then ``reason`` and ``stream_id``. A pair whose field and value are both
UTF-8 keeps them as text; a field named ``reason`` or ``stream_id``, or starting with ``raw:``
or ``base64:``, gets the prefix ``raw:``; a pair with bytes that are not UTF-8 becomes
``base64:<field, base64>`` with the value in base64 (standard alphabet, padded). The mapping is
one to one, so the exact bytes of every entry that was not applied can be read back.
"""

from __future__ import annotations

import base64
import functools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Pairs = list[tuple[bytes, bytes]]
RawEntry = tuple[str, Pairs | None]  # (stream ID, field pairs; None: deleted before it was read)

REASON = "reason"
SOURCE_ID = "stream_id"
RAW_PREFIX = "raw:"
BASE64_PREFIX = "base64:"


def reader_client(url: str, socket_timeout: float, connect_timeout: float = 5.0) -> Any:
    """A client for reading entries as bytes: no ``decode_responses``, RESP2, the replies of
    ``XREADGROUP``, ``XAUTOCLAIM`` and ``XRANGE`` left as the server sent them (parse them with
    :func:`read_reply`, :func:`claim_reply` and :func:`range_reply`), no silent retries."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(
        url,
        decode_responses=False,
        protocol=2,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),
    )
    for command in ("XREADGROUP", "XAUTOCLAIM", "XRANGE"):
        client.set_response_callback(command, lambda response, **options: response)
    return client


def text(value: Any) -> str:
    """An ID or a name from a reply as text (bytes that are not UTF-8 escaped, never an error)."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def _entry(item: Sequence[Any]) -> RawEntry:
    sid, flat = item[0], item[1]
    if flat is None:
        return text(sid), None
    if isinstance(flat, Mapping):  # a reply already parsed into a mapping
        return text(sid), pairs_of(flat)
    flat = [x if isinstance(x, bytes) else _bytes(x) for x in flat]
    return text(sid), list(zip(flat[0::2], flat[1::2]))  # an unpaired last element cannot come


def read_reply(reply: Any) -> list[RawEntry]:
    """A raw ``XREADGROUP`` reply for one stream, ``[[stream, [[id, [field, value, ...]], ...]]]``
    (an entry deleted from the stream while pending: ``[id, nil]``), as [(ID, pairs or None)]."""
    if not reply:
        return []
    if isinstance(reply, Mapping):  # RESP3: {stream: entries}
        reply = [[k, v] for k, v in reply.items()]
    return [_entry(item) for item in reply[0][1] or []]


def range_reply(reply: Any) -> list[RawEntry]:
    """A raw ``XRANGE`` reply, ``[[id, [field, value, ...]], ...]``, as [(ID, pairs)]."""
    return [_entry(item) for item in reply or []]


def claim_reply(reply: Any) -> list[RawEntry]:
    """A raw ``XAUTOCLAIM`` reply, ``[cursor, [[id, [field, value, ...]], ...](, deleted IDs)]``,
    as [(ID, pairs or None)] (Redis 6.2 answers ``[id, nil]`` for a claimed entry that was
    deleted; 7.0 removes it from the pending list itself and lists it apart)."""
    if not reply or len(reply) < 2:
        return []
    return [_entry(item) for item in reply[1] or [] if item is not None]


def pairs_of(fields: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None) -> Pairs | None:
    """An entry's fields (a mapping or (field, value) pairs; text, bytes or anything else as
    its text) as byte pairs; None stays None (a deleted entry)."""
    if fields is None:
        return None
    if isinstance(fields, list) and all(type(k) is bytes and type(v) is bytes for k, v in fields):
        return fields  # as read
    items = fields.items() if isinstance(fields, Mapping) else fields
    return [(_bytes(k), _bytes(v)) for k, v in items]


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    text = str(value)
    try:
        return text.encode("utf-8", "surrogateescape")  # escaped bytes: the bytes they stand for
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")  # other lone surrogates as written


def decode_known(
    pairs: Pairs | None, names: Iterable[str]
) -> tuple[dict[str, str | None], list[tuple[str, str, str]]]:
    """The fields ``names`` of an entry as text (missing: None), and its problems as
    (field, kind, detail): a value that is not UTF-8, or a field given more than once (the value
    is then None: which one was meant is unknown). Other fields are not looked at."""
    names = tuple(names)
    values: dict[str, str | None] = dict.fromkeys(names)
    problems: list[tuple[str, str, str]] = []
    if not pairs:
        return values, problems
    given = dict(pairs)
    encoded = _encoded(names)
    if len(given) == len(pairs):  # each field once: the common case, decoded in one go
        try:
            for name, key in encoded:
                value = given.get(key)
                if value is not None:
                    values[name] = value.decode("utf-8")
            return values, problems
        except UnicodeDecodeError:
            values = dict.fromkeys(names)
    times = Counter(key for key, _ in pairs) if len(given) < len(pairs) else None
    for name, key in encoded:
        value = given.get(key)
        if value is None:
            continue
        if times is not None and times[key] > 1:
            problems.append(
                (name, f"{name}: repeated", f"{name} is given {times[key]} times in the entry, expected once")
            )
            continue
        try:
            values[name] = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(
                (
                    name,
                    f"{name}: not UTF-8",
                    f"{name} is not UTF-8 text (byte {exc.start} of {len(value)}; expected UTF-8; the "
                    "bytes are kept in the dead letter, in base64)",
                )
            )
    return values, problems


@functools.cache
def _encoded(names: tuple[str, ...]) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, name.encode("utf-8")) for name in names)


def dead_fields(stream_id: str, pairs: Pairs | None, reason: str) -> list[tuple[str, str]]:
    """The dead-letter entry of a raw entry (module doc): its pairs, recoverable, then
    ``reason`` and ``stream_id``."""
    out = []
    for key, value in pairs or []:
        try:
            name, text = key.decode("utf-8"), value.decode("utf-8")
        except UnicodeDecodeError:
            out.append((BASE64_PREFIX + _b64(key), _b64(value)))
            continue
        if name in (REASON, SOURCE_ID) or name.startswith((RAW_PREFIX, BASE64_PREFIX)):
            name = RAW_PREFIX + name
        out.append((name, text))
    out += [(REASON, reason), (SOURCE_ID, stream_id)]
    return out


def raw_fields(dead: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> Pairs:
    """The raw pairs of the entry a dead letter holds (:func:`dead_fields` inverted), as bytes,
    in order; ``reason`` and ``stream_id`` left out."""
    out = []
    for key, value in pairs_of(dead) or []:
        name = key.decode("utf-8")
        if name in (REASON, SOURCE_ID):
            continue
        if name.startswith(BASE64_PREFIX):
            out.append((base64.b64decode(name[len(BASE64_PREFIX) :]), base64.b64decode(value)))
        elif name.startswith(RAW_PREFIX):
            out.append((name[len(RAW_PREFIX) :].encode("utf-8"), value))
        else:
            out.append((key, value))
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
