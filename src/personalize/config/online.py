"""The ``online:`` block of an experiment file: the Redis that holds the online state and the
event stream its workers consume (:mod:`personalize.online.stream`,
:mod:`personalize.scoring.online`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from personalize.config.base import StrictModel

DAY = 24 * 3600


class OnlineConfig(StrictModel):
    """Where the online state lives and how the stream workers read the event stream.

    **Why ``id_ttl_seconds`` defaults to 7 days.** An applied event's ID is remembered for
    ``id_ttl_seconds``; a copy of the event that arrives later than that would be applied a second
    time. A copy can arrive (a) when a worker dies after writing a batch but before acknowledging
    it: another worker claims the batch once it has been idle ``claim_idle_ms`` (seconds); (b) when
    a publisher retries, or a file is published again: within the publisher's retry window (minutes
    to hours; a re-run of yesterday's file is a day); (c) at the latest, while the entry is still in
    the stream: acknowledged entries are trimmed after each batch and the stream is capped with
    ``XADD ... MAXLEN ~ stream_max_length`` to bound memory, so an entry is not kept beyond the
    backlog it belongs to. The ID must outlive the longest of these, claim idle time + retry window +
    retention; a week exceeds each by a wide margin. Memory: each remembered ID is a key (about
    100 bytes), so the IDs take rate x TTL x 100 bytes: 6 GB at 100 events/s for a week; lower it
    for high rates, keeping it above that sum.
    """

    redis_url: str | None = Field(
        default=None,
        description="Redis URL, e.g. redis://host:6379/0. null: the embedded server that "
        "`personalize stream server` runs with its data under data/online/redis (it writes its URL to "
        "data/online/redis.url, where publish and consume find it).",
    )
    namespace: str = Field(
        default="personalize", description="Prefix of every key (several projects can share a server)."
    )
    max_recent: int = Field(
        default=500, ge=1, description="Events kept per user (the newest; older ones are trimmed)."
    )
    id_ttl_seconds: int = Field(
        default=7 * DAY,
        ge=1,
        description="How long an applied event's ID is remembered, so that a redelivered copy changes "
        "nothing (must exceed claim idle time + publisher retry window + stream retention).",
    )
    stream_max_length: int = Field(
        default=1_000_000,
        ge=1000,
        description="Cap of the event stream (XADD MAXLEN ~). Publishing refuses to go past it while "
        "the backlog (unconsumed or unacknowledged entries) is that long, rather than trim them.",
    )
    claim_idle_ms: int = Field(
        default=60_000,
        ge=1,
        description="A pending entry idle this long (its worker presumably dead) is claimed by another "
        "worker (XAUTOCLAIM) before it reads new entries.",
    )
    max_deliveries: int = Field(
        default=5,
        ge=1,
        description="An entry whose application fails (the store refuses it) stays pending and is "
        "retried; when it fails on its delivery number max_deliveries (XPENDING's times-delivered), or "
        "is delivered more often than that (its workers died on it), it goes to the dead-letter stream "
        "with the error instead of being retried for ever.",
    )
    batch_size: int = Field(
        default=500, ge=1, description="Entries a worker reads, writes and acknowledges per round trip."
    )
    block_ms: int = Field(
        default=1000, ge=1, description="How long a worker waits for new entries per read (XREADGROUP BLOCK)."
    )
    reconnect_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a worker keeps retrying when the server is unreachable before it fails.",
    )
    cache_ttl_seconds: int = Field(default=300, ge=1, description="How long a cached answer is kept.")

    @field_validator("namespace")
    @classmethod
    def _plain_namespace(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"namespace must be non-empty without spaces, got {value!r}")
        return value
