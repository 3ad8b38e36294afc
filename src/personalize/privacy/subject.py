"""A data subject across every store, and ``personalize subject access``: everything the lab holds
about one user, as one JSON file.

(One module: finding the person in each store -- raw inputs, derived data, the online store,
MLflow -- is what both ``access`` and ``forget`` (:mod:`personalize.privacy.erasure`) read, and
the access report is assembled from exactly those findings.)

**Who**: the caller gives the raw user ID. With ``data.privacy.pseudonymise`` on, the stores hold
only its pseudonym (``Pseudonymiser(key)(raw ID)``), so both are looked for (the **tokens**; how a
value is matched: :mod:`personalize.tracking.erasure`).

**Where** (what :func:`access` reports and :mod:`personalize.privacy.erasure` erases):

- the derived data folder: every file under ``data/`` except the raw inputs (``data/raw/``, immutable),
  the privacy folder (``data/privacy/``: the suppression list and erasure log hold keyed digests
  only) and the embedded Redis server's own files (``data/online/redis/``): ``processed/<dataset>/``
  (interactions, users, quarantine, consent, profiles), ``cache/``, ``resolution/``...;
- the online store (Redis, when one is configured): keys under the namespace naming the user
  (recent events, version, consent) and entries of the event and dead-letter streams; the served
  model's cached answers are keyed by an HMAC of the user ID under the serving secret
  (:func:`personalize.scoring.online.user_cache_key`), found with the same secret from this
  environment (:func:`serving_secret`);
- MLflow: runs whose artifacts hold the user (splits, recommendations, per-user metrics,
  quarantine, segment labels, replay events...) and registered model versions whose exported
  state holds them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from personalize.config.data import DataConfig
from personalize.config.online import OnlineConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError
from personalize.core.paths import data_dir
from personalize.data.privacy import Pseudonymiser, canonical, load_key, resolve
from personalize.scoring.online import CACHE_SECRET_VARIABLE, cache_secret, user_cache_key
from personalize.tracking import erasure as mlflow_erasure

SKIPPED_FOLDERS = ("raw", "privacy", "online/redis")


@dataclass(frozen=True)
class Subject:
    """One person: the raw ID as given and, with pseudonymisation on, the pseudonym."""

    user_id: str = field(repr=False)
    pseudonym: str | None = field(default=None, repr=False)

    @property
    def tokens(self) -> set[str]:
        """What the stores may hold for this person."""
        return {self.user_id} | ({self.pseudonym} if self.pseudonym else set())

    @property
    def stored_id(self) -> str:
        """The ID the stores key the person by (the pseudonym when pseudonymisation is on)."""
        return self.pseudonym or self.user_id


def identify(user_id: object, config: DataConfig) -> Subject:
    """The :class:`Subject` for a raw user ID under ``config`` (its pseudonym computed with the
    key when ``data.privacy.pseudonymise`` is on; ConfigError without a key)."""
    raw = canonical(user_id).strip()
    if not raw:
        raise ConfigError("a user ID is needed (got an empty one)")
    privacy = config.privacy
    if not privacy.pseudonymise:
        return Subject(raw)
    return Subject(raw, Pseudonymiser(load_key(privacy.key, "pseudonymisation"))(raw))


def raw_inputs_holding(subject: Subject, config: DataConfig) -> str | None:
    """The first raw input table (interactions, users, the consent table) with a row of the
    person's raw ID, compared as ingestion compares IDs (:func:`personalize.data.validate.
    canonical_ids`: ``' 007'`` is ``'7'``), or a malformed line holding it; None when no table
    does. Every row is read (no sampling), so a user sampled out of a run still counts."""
    from personalize.data.consent import read_consent_file
    from personalize.data.ingest import file_config, malformed_line_ids
    from personalize.data.readers import read_table
    from personalize.data.validate import Issues, canonical_ids

    files = file_config(config)
    wanted = subject.user_id

    def holds(values) -> bool:
        values = pd.Series(values, dtype=object).astype("string")
        return bool((canonical_ids(values, C.USER, Issues(len(values))) == wanted).fillna(False).any())

    tables = [("interactions", s) for s in files.sources] + ([("users", files.users)] if files.users else [])
    for role, source in tables:
        reader = read_table(source, role)
        for chunk in reader:
            if C.USER in chunk.columns and holds(chunk[C.USER]):
                return f"raw {role} file {reader.label}"
        if any(wanted in malformed_line_ids(bad.raw, source) for bad in reader.malformed):
            return f"raw {role} file {reader.label} (a malformed line)"
    if config.privacy.consent is not None:
        consent = read_consent_file(config.privacy.consent)
        if holds(consent[C.USER]):
            return f"consent table {resolve(config.privacy.consent)}"
    return None


def derived_files(root: Path | None = None) -> Iterator[Path]:
    """Every file of the derived data folder (module doc: what is skipped and why)."""
    root = Path(root or data_dir())
    if not root.exists():
        return
    skipped = [root / s for s in SKIPPED_FOLDERS]
    for path in sorted(root.rglob("*")):
        if path.is_file() and not any(path.is_relative_to(s) for s in skipped):
            yield path


# ----------------------------------------------------------------------------------- online


def serving_secret() -> bytes | None:
    """The served model's answer-cache secret from this environment, read as the served model reads
    it (:func:`personalize.scoring.online.cache_secret`; None: not set here). ConfigError for a
    secret too short or a key file others may read."""
    try:
        return cache_secret()
    except ValueError as exc:
        raise ConfigError(f"{exc} (the serving secret, {CACHE_SECRET_VARIABLE})") from None


def cached_answer_of(key: str, namespace: str, hashed: set[str]) -> bool:
    """True when ``key`` is a cached answer (``{ns}:cache:{model}:{user key}:...``) whose user key
    is one of ``hashed``."""
    parts = key.split(":")
    return len(parts) > 3 and parts[0] == namespace and parts[1] == "cache" and parts[3] in hashed


def online_store(online: OnlineConfig, url: str | None = None):
    """The configured online store, or None when none is configured (no ``--redis-url``, no
    ``online.redis_url``, no running embedded server). A configured store that does not answer
    is an error (StreamError): what it holds cannot be reached."""
    from personalize.online.stream import open_store, resolve_url

    try:
        resolved = resolve_url(online, url)
    except ConfigError:
        return None
    return open_store(online, resolved)


def online_keys(store, subject: Subject, secret: bytes | None = None) -> dict[str, Any]:
    """The person's keys in the online store (name -> type) under its namespace: every key whose
    name holds a token (recent events, version, consent) or whose string value holds one, and,
    with the serving ``secret``, their cached answers (keyed by the HMAC of a token). Streams are
    reported by :func:`stream_entries`."""
    client = store.client
    tokens = subject.tokens
    hashed = {user_cache_key(secret, t) for t in tokens} if secret is not None else set()
    out = {}
    for key in client.scan_iter(match=f"{store.ns}:*", count=1000):
        kind = client.type(key)
        if kind == "stream":
            continue
        if cached_answer_of(key, store.ns, hashed):
            out[key] = kind
            continue
        in_value = kind == "string" and mlflow_erasure.text_holds(client.get(key) or "", tokens)
        if in_value or mlflow_erasure.text_holds(key, tokens):
            out[key] = kind
    return out


def stream_entries(store, subject: Subject) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """Entries of the namespace's streams (events, dead letters) whose fields hold a token
    (raw fields of dead letters included)."""
    client = store.client
    tokens = subject.tokens
    out: dict[str, list] = {}
    for key in client.scan_iter(match=f"{store.ns}:*", count=1000):
        if client.type(key) != "stream":
            continue
        last = "-"
        hits = []
        while True:
            batch = client.xrange(key, min=last, max="+", count=1000)
            if last != "-":
                batch = batch[1:]
            if not batch:
                break
            for sid, fields in batch:
                if any(mlflow_erasure.text_holds(str(v), tokens) for v in fields.values()):
                    hits.append((sid, dict(fields)))
            last = batch[-1][0]
        if hits:
            out[key] = hits
    return out


def _key_value(client, key: str, kind: str) -> Any:
    if kind == "string":
        return client.get(key)
    if kind == "list":
        return client.lrange(key, 0, -1)
    if kind == "hash":
        return client.hgetall(key)
    if kind == "set":
        return sorted(client.smembers(key))
    if kind == "zset":
        return client.zrange(key, 0, -1, withscores=True)
    return None


# ----------------------------------------------------------------------------------- access


def access(
    subject: Subject,
    config: DataConfig,
    *,
    online: OnlineConfig | None = None,
    redis_url: str | None = None,
    uri: str | None = None,
) -> dict[str, Any]:
    """Everything the lab holds about ``subject`` (module doc: where it looks), as a JSON-ready
    dict: ``data`` (rows per derived file), ``events`` / ``profile`` / ``profiles`` /
    ``segments`` (the rows of those files, gathered), ``consent`` (the whole consent history per
    purpose: :func:`consent_history`), ``online`` (keys and stream entries, or why it was not
    read), ``runs`` and ``models`` (MLflow)."""
    tokens = subject.tokens
    root = data_dir()
    files: dict[str, list[dict[str, Any]]] = {}
    for path in derived_files(root):
        found = mlflow_erasure.inspect_file(
            path, tokens, rewrite=False, label=path.relative_to(root).as_posix()
        )
        if found is not None:
            files[found.path] = found.rows if not found.unrewritable else [{"binary": "holds the ID"}]

    def gather(match) -> list[dict[str, Any]]:
        return [{"file": f, **row} for f, rows in files.items() if match(f) for row in rows]

    def named(name: str):
        return lambda f: f.startswith("processed/") and f.endswith("/" + name)

    runs = mlflow_erasure.run_findings(tokens, uri)
    segments = gather(lambda f: "/profiles/" in f and any("segment" in k for r in files[f] for k in r))
    segments += [
        {"run_id": r.run_id, "file": f.path, **row}
        for r in runs
        for f in r.files
        if f.path.startswith("segments/labels")
        for row in f.rows
    ]
    online_report, store, streams = _online_access(subject, online or OnlineConfig(), redis_url)
    out: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "user_id": subject.user_id,
        "pseudonym": subject.pseudonym,
        "pseudonymised": subject.pseudonym is not None,
        "events": gather(named("interactions.parquet")),
        "profile": gather(named("users.parquet")),
        "consent": consent_history(subject, config, store, streams),
        "quarantine": gather(named("quarantine.parquet")),
        "profiles": gather(lambda f: "/profiles/" in f),
        "segments": segments,
        "data": files,
        "online": online_report,
        "runs": [r.to_dict(rows=True) for r in runs],
        "models": [v.to_dict() for v in mlflow_erasure.version_findings(tokens, uri)],
        "suppressed": _suppressed(subject, config),
    }
    return out


def consent_history(
    subject: Subject,
    config: DataConfig,
    store=None,
    streams: dict[str, list[tuple[str, dict[str, str]]]] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Every consent record of the person, per purpose, oldest first: each row of the consent
    table (``data.privacy.consent``, matched on the canonical raw ID; ``in_force`` marks the one
    ingestion applies, the latest), and with the online ``store`` each consent event of theirs
    still in the event stream (``streams``: their entries, :func:`stream_entries`, read from the
    store when not given) and the store's record (the latest one applied online, which a served
    answer reads). Timestamps are ISO 8601 UTC; ``source`` says where each record is."""
    from personalize.data.consent import GRANTED, PURPOSE, read_consent_file, validate_consent
    from personalize.scoring.online import CONSENT_EVENT

    out: dict[str, list[dict[str, Any]]] = {}
    if config.privacy.consent is not None:
        path = resolve(config.privacy.consent)
        records = validate_consent(read_consent_file(path), str(path), config)
        mine = records.loc[records[C.USER] == subject.user_id].sort_values(
            [C.TIMESTAMP, "_row"], kind="stable"
        )
        for purpose, rows in mine.groupby(PURPOSE, sort=True):
            last = len(rows) - 1
            out.setdefault(str(purpose), []).extend(
                {
                    "source": f"consent table {path}, row {int(r['_row'])}",
                    "granted": bool(r[GRANTED]),
                    "timestamp": r[C.TIMESTAMP].isoformat(),
                    "in_force": i == last,
                }
                for i, (_, r) in enumerate(rows.iterrows())
            )
    if store is not None:
        for stream, hits in (stream_entries(store, subject) if streams is None else streams).items():
            for sid, fields in hits:
                if str(fields.get("event", "")).strip() == CONSENT_EVENT and fields.get(PURPOSE):
                    out.setdefault(str(fields[PURPOSE]).strip(), []).append(
                        {
                            "source": f"event stream {stream}, entry {sid}",
                            "granted": fields.get(GRANTED),
                            "timestamp": fields.get(C.TIMESTAMP),
                        }
                    )
        for key in (store.consent_key(t) for t in sorted(subject.tokens)):
            if store.client.type(key) != "hash":  # none, or another kind of value: in ``online``
                continue
            for purpose, value in (store.client.hgetall(key) or {}).items():
                flag, _, micros = str(value).partition(":")
                stamp = pd.Timestamp(int(micros), unit="us", tz="UTC") if micros.isdigit() else None
                out.setdefault(str(purpose), []).append(
                    {
                        "source": f"online store {key} (the latest record applied online)",
                        "granted": flag == "1",
                        "timestamp": stamp.isoformat() if stamp is not None else micros,
                    }
                )
    return out


def _online_access(
    subject: Subject, online: OnlineConfig, url: str | None
) -> tuple[dict[str, Any], Any, dict]:
    """The access report's ``online`` part, the store it read (None: none) and the person's stream
    entries (:func:`stream_entries`), read once for the report and the consent history."""
    from personalize.online.stream import StreamError

    try:
        store = online_store(online, url)
    except StreamError as exc:
        return {"read": False, "why": str(exc)}, None, {}
    if store is None:
        return {"read": False, "why": "no online store is configured"}, None, {}
    secret = serving_secret()
    keys = online_keys(store, subject, secret)
    streams = stream_entries(store, subject)
    report = {
        "read": True,
        "namespace": store.ns,
        "cached_answers": (
            "read with the serving secret"
            if secret is not None
            else f"not read: {CACHE_SECRET_VARIABLE} is not set"
        ),
        "keys": {k: _key_value(store.client, k, kind) for k, kind in sorted(keys.items())},
        "streams": {k: [{"id": sid, **fields} for sid, fields in v] for k, v in streams.items()},
    }
    return report, store, streams


def where_seen(
    subject: Subject, config: DataConfig, store=None, uri: str | None = None, secret: bytes | None = None
) -> str | None:
    """The first place the lab holds, or held, the person, cheapest first: the suppression list,
    the raw inputs (:func:`raw_inputs_holding`), the derived data, the online ``store``, MLflow
    runs and registered model versions. None: nowhere (a mistyped ID, say)."""
    if _suppressed(subject, config):
        return "the suppression list"
    raw = raw_inputs_holding(subject, config)
    if raw is not None:
        return raw
    root = data_dir()
    tokens = subject.tokens
    for path in derived_files(root):
        if mlflow_erasure.inspect_file(path, tokens, rewrite=False) is not None:
            return f"derived data {path.relative_to(root).as_posix()}"
    if store is not None and (online_keys(store, subject, secret) or stream_entries(store, subject)):
        return f"the online store (namespace {store.ns})"
    if mlflow_erasure.run_findings(tokens, uri):
        return "MLflow runs"
    if mlflow_erasure.version_findings(tokens, uri):
        return "registered model versions"
    return None


def _suppressed(subject: Subject, config: DataConfig) -> bool:
    from personalize.data.privacy import SuppressionList

    listed = SuppressionList.load(config.privacy.suppression, config.privacy.suppression_key)
    return listed.contains(subject.user_id)


def write_access(report: dict[str, Any], out: Path | None = None) -> Path:
    """Write an access report as JSON (default: ``subject-access-<UTC time>.json`` in the current
    folder; it holds the person's data, so it is not written under the data folder by default)."""
    path = (
        Path(out)
        if out
        else Path.cwd() / f"subject-access-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    return path


def suppression_path(config: DataConfig) -> Path:
    """Where the suppression list (and the erasure log beside it) lives."""
    return resolve(config.privacy.suppression)
