"""The online state in Redis: each user's events since the model was fitted, written by the
stream workers and read by the served model at request time (this module ships with it).

Keys (``ns``: the namespace, ``online.namespace``):

- ``{ns}:events``: the event stream (``XADD``; fields ``user_id``, ``item_id``, ``event``,
  ``timestamp``, ``event_id``), read by the consumer group ``{ns}:workers``;
- ``{ns}:dead``: the dead-letter stream (entries not applied: malformed, or refused until
  ``online.max_deliveries``; with the raw fields and a reason);
- ``{ns}:user:{user_id}``: the user's recent events, oldest first, each a JSON list
  ``[item_id, event, timestamp, event_id]``, trimmed to the latest ``max_recent``;
- ``{ns}:version:{user_id}``: the number of changes applied to the user, events and consent
  records (part of every cache key, so the user's next event or consent change invalidates
  their cached answers);
- ``{ns}:consent:{user_id}``: the user's latest online consent record per purpose, a hash
  ``purpose -> "<1|0>:<timestamp in epoch microseconds>"``; a record older than the one held is
  ignored (equal timestamps: the later one wins). Written by the stream workers (consent events:
  :mod:`personalize.online.stream`) or :meth:`OnlineStore.set_consent`, read with the recent
  events (:meth:`OnlineStore.recent_and_consent`): a withdrawal applies to the very next answer;
- ``{ns}:applied:{event_id}``: an applied event's ID, kept ``id_ttl_seconds``: a redelivered
  event finds it and changes nothing;
- ``{ns}:cache:{model}:{user key}:{version}:{request}``: a cached answer (JSON rows without the
  user ID), kept ``cache_ttl_seconds``. The user key is ``HMAC-SHA256(serving secret, user ID)``
  (:func:`user_cache_key`, 32 hex digits), never the ID as sent: a plain hash of a guessable ID
  is reversed by enumeration, a keyed one is not without the secret. The secret
  (:func:`cache_secret`) comes from the serving environment, never from the model: without one
  there is no answer cache.

:meth:`OnlineStore.apply` applies an event in one Lua script (check the kinds of the user's keys,
check the ID, append, trim, count, and acknowledge the stream entry when given), so an event is
applied once or not at all even when two workers hold it; :meth:`OnlineStore.consent`
does the same for a consent record. ``redis`` (the client)
is imported only when a store is opened.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

CONSENT_EVENT = "consent"  # the event type of a consent record on the stream
CACHE_SECRET_VARIABLE = "PERSONALIZE_CACHE_SECRET"
CACHE_SECRET_FILE_VARIABLE = "PERSONALIZE_CACHE_SECRET_FILE"
MIN_SECRET_BYTES = 16


def cache_secret(environ: dict[str, str] | None = None) -> bytes | None:
    """The serving secret the answer cache keys users by: the environment variable
    ``PERSONALIZE_CACHE_SECRET`` (hex, else its text), else the first line of the key file that
    ``PERSONALIZE_CACHE_SECRET_FILE`` names (which group and others may not read: mode 0600 or
    0400). None when neither is set (no answer cache). ValueError, naming the variable or the file
    but never the value, for a secret under 16 bytes or a key file that is missing or readable by
    others."""
    env = os.environ if environ is None else environ
    text, origin = env.get(CACHE_SECRET_VARIABLE), f"environment variable {CACHE_SECRET_VARIABLE}"
    if not text and env.get(CACHE_SECRET_FILE_VARIABLE):
        path = env[CACHE_SECRET_FILE_VARIABLE]
        origin = f"key file {path} ({CACHE_SECRET_FILE_VARIABLE})"
        try:
            mode = os.stat(path).st_mode
            with open(path, encoding="utf-8") as handle:
                text = handle.readline().strip()
        except OSError as exc:
            raise ValueError(f"the answer cache's secret: {origin} cannot be read ({exc.strerror})") from None
        if mode & 0o077:
            raise ValueError(
                f"the answer cache's secret: {origin} may be read by group or others (mode "
                f"{mode & 0o777:o}); chmod 600 it"
            )
    if not text:
        return None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = text.encode()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the answer cache's secret from the {origin} is shorter than {MIN_SECRET_BYTES} bytes"
        )
    return secret


def user_cache_key(secret: bytes, user_id: Any) -> str:
    """The answer cache's key part for a user: HMAC-SHA256 of the canonical ID text (an integer
    without leading zeros, a string as it is) under the serving secret, 32 hex digits (128 bits)."""
    if isinstance(user_id, bool):
        raise ValueError(f"a user ID cannot be a boolean, got {user_id!r}")
    if isinstance(user_id, float) and user_id.is_integer():
        user_id = int(user_id)
    return hmac.new(secret, str(user_id).encode(), hashlib.sha256).hexdigest()[:32]


def epoch_microseconds(value: Any) -> int:
    """A timestamp (an aware datetime or pandas Timestamp, an ISO 8601 text with an offset, or
    None: now) as integer microseconds since the epoch (UTC)."""
    stamp = pd.Timestamp.now(tz="UTC") if value is None else pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise ValueError(f"a consent timestamp needs a UTC offset, got {value!r}")
    return int((stamp - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1))


# Both scripts check the kinds of the keys they write before writing anything (a script that
# fails half-way keeps its earlier writes: the event's ID remembered without the event), and
# acknowledge the stream entry the event came from (KEYS[4], ARGV group and entry ID, when
# given) in the same script: an event is applied and acknowledged together, or neither.
_CHECK = """
local function refuse(key, kind)
  local held = redis.call('TYPE', key)['ok']
  if held ~= 'none' and held ~= kind then
    return 'WRONGTYPE ' .. key .. ' holds a ' .. held .. ', not a ' .. kind
  end
  if kind == 'string' and held == 'string' then
    local count = redis.call('GET', key)
    if not string.match(count, '^%d+$') or #count > 18 then
      return 'WRONGTYPE ' .. key .. ' holds ' .. string.sub(count, 1, 40) .. ', not a count'
    end
  end
  return nil
end
"""

_APPLY = (
    _CHECK
    + """
local why = refuse(KEYS[2], 'list') or refuse(KEYS[3], 'string')
if why then return redis.error_reply(why) end
local count = 0
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
  count = redis.call('INCR', KEYS[3])
end
if KEYS[4] then redis.call('XACK', KEYS[4], ARGV[4], ARGV[5]) end
return count
"""
)

_CONSENT = (
    _CHECK
    + """
local why = refuse(KEYS[2], 'hash') or refuse(KEYS[3], 'string')
if why then return redis.error_reply(why) end
local count = 0
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[4]) then
  local current = redis.call('HGET', KEYS[2], ARGV[1])
  local stamp = current and tonumber(string.match(current, ':(.*)$'))
  if not (stamp and stamp > tonumber(ARGV[3])) then
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
    count = redis.call('INCR', KEYS[3])
  end
end
if KEYS[4] then redis.call('XACK', KEYS[4], ARGV[5], ARGV[6]) end
return count
"""
)


@dataclass
class OnlineSettings:
    """Where the online state lives and how long it keeps things."""

    url: str
    namespace: str = "personalize"
    max_recent: int = 500  # events kept per user (the fold-in history beyond the fitted one)
    id_ttl_seconds: int = 7 * 24 * 3600  # how long an applied event ID is remembered
    cache_ttl_seconds: int = 300
    timeout_seconds: float = 0.05  # a request's budget for the store; late: answer from the export
    cache_secret: bytes | None = field(default=None, repr=False)  # None: no answer cache


class OnlineStore:
    """Reads and writes the online state (module doc)."""

    def __init__(self, settings: OnlineSettings, client: Any | None = None):
        self.settings = settings
        self.ns = settings.namespace
        if client is None:
            import redis

            client = redis.Redis.from_url(
                settings.url,
                socket_timeout=settings.timeout_seconds,
                socket_connect_timeout=settings.timeout_seconds,
                decode_responses=True,
            )
        self.client = client
        self._apply = self.client.register_script(_APPLY)
        self._consent = self.client.register_script(_CONSENT)

    # ------------------------------------------------------------------------------ keys

    @property
    def stream(self) -> str:
        return f"{self.ns}:events"

    @property
    def group(self) -> str:
        return f"{self.ns}:workers"

    @property
    def dead(self) -> str:
        return f"{self.ns}:dead"

    def user_key(self, user_id: Any) -> str:
        return f"{self.ns}:user:{user_id}"

    def version_key(self, user_id: Any) -> str:
        return f"{self.ns}:version:{user_id}"

    def consent_key(self, user_id: Any) -> str:
        return f"{self.ns}:consent:{user_id}"

    def applied_key(self, event_id: Any) -> str:
        return f"{self.ns}:applied:{event_id}"

    def cache_key(self, model: str, user_id: Any, version: int, request: str) -> str:
        """A cached answer's key (module doc); ValueError without a serving secret."""
        if self.settings.cache_secret is None:
            raise ValueError("no serving secret: the answer cache is off")
        user = user_cache_key(self.settings.cache_secret, user_id)
        return f"{self.ns}:cache:{model}:{user}:{version}:{request}"

    # ----------------------------------------------------------------------------- write

    def apply(self, event: dict[str, Any], pipe: Any | None = None, ack: str | None = None) -> Any:
        """Apply one validated event (``user_id``, ``item_id``, ``event``, ``timestamp``,
        ``event_id``); returns the user's new event count, or 0 when the ID was applied
        before (with ``pipe``: queued on that pipeline, the result comes with its execute).
        ``ack``: the ID of the stream entry the event came from, acknowledged (``XACK`` to the
        consumer group) in the same script. A key of the user that holds another kind of value
        makes it a ``WRONGTYPE`` error with nothing written and nothing acknowledged."""
        value = json.dumps([event["item_id"], event.get("event"), event.get("timestamp"), event["event_id"]])
        keys = [
            self.applied_key(event["event_id"]),
            self.user_key(event["user_id"]),
            self.version_key(event["user_id"]),
        ]
        args = [value, self.settings.max_recent, self.settings.id_ttl_seconds]
        return self._run(self._apply, keys, args, pipe, ack)

    def consent(self, record: dict[str, Any], pipe: Any | None = None, ack: str | None = None) -> Any:
        """Apply one validated consent record (``user_id``, ``purpose``, ``granted`` (bool),
        ``timestamp`` (ISO 8601 with an offset, or an aware datetime), ``event_id``): the user's
        ``purpose`` entry becomes it unless the entry held is later. Returns the user's new
        change count, or 0 when the ID was applied before or the record is older than the one
        held (with ``pipe``: queued, the result comes with its execute). ``ack``: as for
        :meth:`apply`."""
        keys = [
            self.applied_key(record["event_id"]),
            self.consent_key(record["user_id"]),
            self.version_key(record["user_id"]),
        ]
        args = [
            str(record["purpose"]),
            "1" if record["granted"] else "0",
            str(epoch_microseconds(record.get("timestamp"))),
            self.settings.id_ttl_seconds,
        ]
        return self._run(self._consent, keys, args, pipe, ack)

    def _run(self, script: Any, keys: list[Any], args: list[Any], pipe: Any | None, ack: str | None) -> Any:
        """Run one of the write scripts (on ``pipe`` when given), acknowledging the stream entry
        ``ack`` in it when given (the scripts' last key and arguments: stream, group, entry ID)."""
        if ack is not None:
            keys, args = [*keys, self.stream], [*args, self.group, ack]
        return script(keys=keys, args=args, client=pipe)

    def set_consent(
        self, user_id: Any, purpose: str, granted: bool, timestamp: Any = None, event_id: str | None = None
    ) -> int:
        """Record a consent change directly (without the stream): e.g.
        ``set_consent(user, "personalisation", False)`` withdraws personalisation at once (the
        served model's next answer for the user is non-personalised). ``timestamp`` None: now;
        ``event_id`` None: a fresh one. Returns as :meth:`consent`."""
        record = {
            "user_id": user_id,
            "purpose": purpose,
            "granted": bool(granted),
            "timestamp": timestamp,
            "event_id": event_id or f"consent-{os.urandom(16).hex()}",
        }
        return int(self.consent(record))

    # ------------------------------------------------------------------------------ read

    def recent(self, user_ids: list[Any]) -> tuple[list[list[tuple[Any, str | None]]], list[int]]:
        """Each user's recent (item ID, event) list, oldest first, and change count (one round
        trip). Raises the client's error when the store cannot be reached in time."""
        events, versions, _ = self.recent_and_consent(user_ids)
        return events, versions

    def recent_and_consent(
        self, user_ids: list[Any]
    ) -> tuple[list[list[tuple[Any, str | None]]], list[int], list[dict[str, bool]]]:
        """:meth:`recent` and each user's online consent records (purpose -> granted; empty:
        none), in the same pipelined round trip."""
        pipe = self.client.pipeline(transaction=False)
        for uid in user_ids:
            pipe.lrange(self.user_key(uid), 0, -1)
            pipe.get(self.version_key(uid))
            pipe.hgetall(self.consent_key(uid))
        replies = pipe.execute()
        events, versions, consent = [], [], []
        for i in range(len(user_ids)):
            rows = [json.loads(x) for x in replies[3 * i]]
            events.append([(r[0], r[1]) for r in rows])
            versions.append(int(replies[3 * i + 1] or 0))
            consent.append(
                {str(p): str(v).split(":", 1)[0] == "1" for p, v in (replies[3 * i + 2] or {}).items()}
            )
        return events, versions, consent

    def cached(self, keys: list[str]) -> list[str | None]:
        return self.client.mget(keys) if keys else []

    def cache(self, entries: dict[str, str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, value in entries.items():
            pipe.set(key, value, ex=self.settings.cache_ttl_seconds)
        pipe.execute()
