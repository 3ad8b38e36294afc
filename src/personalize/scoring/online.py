"""The online state in Redis: each user's events since the model was fitted, written by the
stream workers and read by the served model at request time (this module ships with it).

Keys (``ns``: the namespace, ``online.namespace``):

- ``{ns}:events``: the event stream (``XADD``; fields ``user_id``, ``item_id``, ``event``,
  ``timestamp``, ``event_id``), read by the consumer group ``{ns}:workers``;
- ``{ns}:dead``: the dead-letter stream (malformed events with the raw fields and a reason);
- ``{ns}:user:{user_id}``: the user's recent events, oldest first, each a JSON list
  ``[item_id, event, timestamp, event_id]``, trimmed to the latest ``max_recent``;
- ``{ns}:version:{user_id}``: the number of events applied to the user (part of every cache
  key, so the user's next event invalidates their cached answers);
- ``{ns}:applied:{event_id}``: an applied event's ID, kept ``id_ttl_seconds``: a redelivered
  event finds it and changes nothing;
- ``{ns}:cache:{model}:{user_id}:{version}:{request}``: a cached answer (JSON), kept
  ``cache_ttl_seconds``.

:meth:`OnlineStore.apply` applies an event in one Lua script (check the ID, append, trim, count),
so an event is applied once or not at all even when two workers hold it. ``redis`` (the client)
is imported only when a store is opened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_APPLY = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
  return redis.call('INCR', KEYS[3])
end
return 0
"""


@dataclass
class OnlineSettings:
    """Where the online state lives and how long it keeps things."""

    url: str
    namespace: str = "personalize"
    max_recent: int = 500  # events kept per user (the fold-in history beyond the fitted one)
    id_ttl_seconds: int = 7 * 24 * 3600  # how long an applied event ID is remembered
    cache_ttl_seconds: int = 300
    timeout_seconds: float = 0.05  # a request's budget for the store; late: answer from the export


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

    def applied_key(self, event_id: Any) -> str:
        return f"{self.ns}:applied:{event_id}"

    def cache_key(self, model: str, user_id: Any, version: int, request: str) -> str:
        return f"{self.ns}:cache:{model}:{user_id}:{version}:{request}"

    # ----------------------------------------------------------------------------- write

    def apply(self, event: dict[str, Any], pipe: Any | None = None) -> Any:
        """Apply one validated event (``user_id``, ``item_id``, ``event``, ``timestamp``,
        ``event_id``); returns the user's new event count, or 0 when the ID was applied
        before (with ``pipe``: queued on that pipeline, the result comes with its execute)."""
        value = json.dumps([event["item_id"], event.get("event"), event.get("timestamp"), event["event_id"]])
        keys = [
            self.applied_key(event["event_id"]),
            self.user_key(event["user_id"]),
            self.version_key(event["user_id"]),
        ]
        args = [value, self.settings.max_recent, self.settings.id_ttl_seconds]
        return (
            self._apply(keys=keys, args=args, client=pipe)
            if pipe is not None
            else self._apply(keys=keys, args=args)
        )

    # ------------------------------------------------------------------------------ read

    def recent(self, user_ids: list[Any]) -> tuple[list[list[tuple[Any, str | None]]], list[int]]:
        """Each user's recent (item ID, event) list, oldest first, and event count (one round
        trip). Raises the client's error when the store cannot be reached in time."""
        pipe = self.client.pipeline(transaction=False)
        for uid in user_ids:
            pipe.lrange(self.user_key(uid), 0, -1)
            pipe.get(self.version_key(uid))
        replies = pipe.execute()
        events, versions = [], []
        for i in range(len(user_ids)):
            rows = [json.loads(x) for x in replies[2 * i]]
            events.append([(r[0], r[1]) for r in rows])
            versions.append(int(replies[2 * i + 1] or 0))
        return events, versions

    def cached(self, keys: list[str]) -> list[str | None]:
        return self.client.mget(keys) if keys else []

    def cache(self, entries: dict[str, str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, value in entries.items():
            pipe.set(key, value, ex=self.settings.cache_ttl_seconds)
        pipe.execute()
