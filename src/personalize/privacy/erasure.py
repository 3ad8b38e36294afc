"""``personalize subject forget``: erasure by suppression plus deletion (the raw inputs stay
immutable).

(One module: the steps below share one erasure record and run in this order -- the suppression
first, the log last -- so that an interrupted erasure is never logged as done.)

First, whether the lab has seen the ID at all (:func:`personalize.privacy.subject.where_seen`:
the suppression list, the raw inputs, derived data, the online store, MLflow): an ID found
nowhere is most likely a typo, which would otherwise erase no one while looking done, so
``forget`` stops with :class:`UnknownSubject` (the CLI exits 2) and adds nothing, unless asked to
suppress it anyway (``suppress_unknown``, ``--suppress-unknown``: a warning says it was seen
nowhere).

Steps, in order (each counted in the erasure log):

a. **Suppression**: the raw ID goes on the suppression list (a keyed digest under the list's own
   key); every later ingestion drops the user's rows before anything is written.
b. **Derived data**: every file of the derived data folder (:func:`personalize.privacy.subject.
   derived_files`: ``processed/`` -- interactions, users, quarantine values and raw lines, consent,
   profiles -- ``cache/`` and any other derived folder) is rewritten without the user's rows
   (Parquet by rows, JSON by entries, text by lines); a binary cache file holding them is deleted.
c. **Online store**: the user's keys (recent events, version, consent, and the applied-event
   markers of their events) are deleted, and their entries of the event stream and the
   dead-letter stream are removed (``XDEL``; raw fields matched too). The served model's cached
   answers are keyed by an HMAC of the user ID under the serving secret: with that secret in this
   environment (``PERSONALIZE_CACHE_SECRET`` / ``PERSONALIZE_CACHE_SECRET_FILE``) the user's
   entries are deleted; without it they cannot be told apart, so every cached answer of the
   namespace is deleted (answers are recomputed on the next request).
d. **Registered models**: for each registered model whose alias holder (the served version) holds
   the user, the champion is exported again through the one export path
   (:func:`personalize.serving.export.export_experiment`) on the data rebuilt from its
   experiment's config (ingestion now suppresses the user): the same model, params and seed,
   **refit** on the remaining data. Every model kind is refit, since the export path has no
   partial update; the erasure log says why, from what the model class declares
   (``Recommender.erasure_needs``: whether its item side depends on every user, so that a refit
   is required, and what it keeps per user). Then every version (and its logged model's
   artifacts) holding the user is deleted.
e. **Runs**: every run artifact holding the user is rewritten without them and logged again to the
   same path; those runs are tagged ``privacy.erasure=<entry>`` and with a note that aggregate
   metrics computed earlier remain. A SQLite tracking database is then compacted (``VACUUM``) so
   that deleted rows do not linger in free pages.
f. **Erasure log**: ``erasure_log.jsonl`` beside the suppression list gets one JSON line: the entry
   ID, the time, the suppression digest (never the ID or pseudonym) and the counts per store.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from personalize.config.data import DataConfig
from personalize.config.experiment import read_experiment
from personalize.config.online import OnlineConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError, DataError, PersonalizeError
from personalize.core.paths import cache_dir, data_dir
from personalize.data.ingest import Dataset, ingest
from personalize.data.privacy import SuppressionList
from personalize.models.registry import get_model_class
from personalize.privacy.subject import (
    Subject,
    derived_files,
    online_keys,
    online_store,
    serving_secret,
    stream_entries,
    suppression_path,
    where_seen,
)
from personalize.serving.champion import Candidate
from personalize.serving.export import ExportResult, export_experiment
from personalize.tracking import erasure as mlflow_erasure
from personalize.tracking import records
from personalize.tracking.store import tracking_uri

Echo = Callable[[str], None]
LOG_NAME = "erasure_log.jsonl"


class UnknownSubject(PersonalizeError):
    """``forget`` of an ID the lab has never seen, without ``suppress_unknown``: nothing was done."""


@dataclass
class Erasure:
    """What ``forget`` did, per store (counts only)."""

    entry: str
    subject: str  # the suppression digest
    suppression: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    online: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    runs: dict[str, Any] = field(default_factory=dict)
    left: list[str] = field(default_factory=list)  # copies that could not be rewritten

    def to_dict(self) -> dict[str, Any]:
        return {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **dataclasses.asdict(self)}

    def summary(self) -> list[str]:
        lines = [
            f"Erasure {self.entry} (subject digest {self.subject[:12]}...)",
            f"  suppression list: {self.suppression.get('path')} ({self.suppression.get('entries')} entries)",
            f"  derived data: {self.data.get('rows_removed', 0)} rows in "
            f"{len(self.data.get('files', {}))} files"
            + (
                f", {len(self.data.get('deleted', []))} cache files deleted"
                if self.data.get("deleted")
                else ""
            ),
        ]
        if self.online.get("read"):
            lines.append(
                f"  online store: {self.online['keys_deleted']} keys deleted, "
                f"{sum(self.online['stream_entries_deleted'].values())} stream entries deleted"
            )
        else:
            lines.append(f"  online store: not reached ({self.online.get('why')})")
        for m in self.models:
            lines.append(
                f"  model {m['registered_model']}: {m['action']}"
                + (f" as version {m['new_version']}" if m.get("new_version") else "")
                + f"; versions deleted: {', '.join(m['deleted_versions']) or 'none'}"
            )
        lines.append(
            f"  runs: {self.runs.get('runs', 0)} rewritten ({self.runs.get('rows_removed', 0)} rows in "
            f"{self.runs.get('artifacts', 0)} artifacts), tagged privacy.erasure={self.entry}"
        )
        if self.runs.get("declared_free_but_held"):
            lines.append(
                "  warning: declared free of per-user data, yet holding the user (rewritten where "
                "possible; fix the declaration): " + "; ".join(self.runs["declared_free_but_held"])
            )
        if self.left:
            lines.append("  NOT erased (cannot be rewritten): " + "; ".join(self.left))
        return lines


def forget(
    subject: Subject,
    config: DataConfig,
    *,
    online: OnlineConfig | None = None,
    redis_url: str | None = None,
    uri: str | None = None,
    suppress_unknown: bool = False,
    echo: Echo | None = print,
) -> Erasure:
    """Erase ``subject`` from every store (module doc: steps a-f); returns what was done, also
    appended to the erasure log. An ID seen nowhere raises :class:`UnknownSubject` before anything
    is written, unless ``suppress_unknown`` (then it is only added to the suppression list, with a
    warning)."""
    say = echo or (lambda _msg: None)
    uri = uri or tracking_uri()
    tokens = subject.tokens
    secret = serving_secret()  # a bad secret fails here, before anything is written
    store = online_store(online or OnlineConfig(), redis_url)  # fails early when configured but down

    listed = SuppressionList.load(config.privacy.suppression, config.privacy.suppression_key)
    if listed.key is None:
        raise ConfigError(
            f"forget needs the suppression list's key: set {config.privacy.suppression_key.env}"
            + (
                f" or the key file {config.privacy.suppression_key.file}"
                if config.privacy.suppression_key.file
                else ""
            )
        )
    seen = where_seen(subject, config, store, uri, secret)
    if seen is None:
        nowhere = (
            f"user {subject.user_id!r} was never seen by the lab: not on the suppression list, not in the "
            "raw inputs, the derived data, the online store, any MLflow run or registered model (a typo "
            "erases no one: check the ID)"
        )
        if not suppress_unknown:
            raise UnknownSubject(
                f"{nowhere}; nothing was erased and nothing added to the suppression list. To suppress "
                "the ID anyway (later ingestions drop it), pass --suppress-unknown"
            )
        say(f"warning: {nowhere}; --suppress-unknown: adding it to the suppression list anyway")
    digest = listed.add(subject.user_id)
    entry = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    result = Erasure(
        entry, digest, {"path": str(listed.path), "entries": len(listed), "first_seen_in": seen or "nowhere"}
    )
    say(f"Suppressed: added to {listed.path}")

    result.data = erase_derived(tokens)
    result.left += [f"data/{p}" for p in result.data.pop("unrewritable")]
    say(f"Derived data: {result.data['rows_removed']} rows removed from {len(result.data['files'])} files")

    result.online = (
        erase_online(store, subject, secret)
        if store is not None
        else {"read": False, "why": "no online store"}
    )

    result.models = reexport_models(subject, config, uri, echo=say)

    runs = mlflow_erasure.run_findings(tokens, uri, rewrite=True, entry=entry)
    result.runs = {
        "runs": sum(1 for r in runs if r.files),
        "artifacts": sum(len(r.files) for r in runs),
        "rows_removed": sum(f.removed for r in runs for f in r.files),
        "per_run": {r.run_id: {f.path: f.removed for f in r.files} for r in runs},
        # a module declared these free of per-user data, yet they held the person: a declaration to fix
        "declared_free_but_held": [
            f"run {r.run_id} {f.path}" for r in runs for f in r.files if f.declared_free
        ],
    }
    result.left += [f"run {r.run_id} artifact {f.path}" for r in runs for f in r.files if f.unrewritable] + [
        f"run {r.run_id} {k}" for r in runs for k in r.params_or_tags
    ]
    for model_id in mlflow_erasure.logged_model_findings(tokens, uri):  # unregistered copies
        mlflow_erasure.delete_logged_model(model_id, uri)
        result.runs.setdefault("logged_models_deleted", []).append(model_id)
    result.runs["store_compacted"] = mlflow_erasure.compact_store(uri)

    log = listed.path.parent / LOG_NAME
    with log.open("a") as fh:
        fh.write(json.dumps(result.to_dict(), default=str) + "\n")
    for line in result.summary():
        say(line)
    say(f"Erasure log: {log}")
    return result


def erase_derived(tokens: set[str], root: Path | None = None) -> dict[str, Any]:
    """Rewrite every derived data file without the person (module doc, step b)."""
    root = Path(root or data_dir())
    cache = cache_dir() if root == data_dir() else root / "cache"
    files: dict[str, int] = {}
    deleted: list[str] = []
    unrewritable: list[str] = []
    for path in derived_files(root):
        rel = path.relative_to(root).as_posix()
        found = mlflow_erasure.inspect_file(path, tokens, rewrite=True, label=rel)
        if found is None:
            continue
        if found.unrewritable:
            if path.is_relative_to(cache):
                path.unlink()
                deleted.append(rel)
            else:
                unrewritable.append(rel)
            continue
        files[rel] = found.removed
    return {
        "files": files,
        "rows_removed": sum(files.values()),
        "deleted": deleted,
        "unrewritable": unrewritable,
    }


def erase_online(store, subject: Subject, secret: bytes | None = None) -> dict[str, Any]:
    """Delete the person's keys and stream entries in the online store (module doc, step c): with
    the serving ``secret`` their cached answers, without it every cached answer of the namespace."""
    client = store.client
    keys = online_keys(store, subject, secret)
    if secret is None:
        keys.update({k: "string" for k in client.scan_iter(match=f"{store.ns}:cache:*", count=1000)})
    event_ids: set[str] = set()
    for key, kind in keys.items():
        if kind == "list":
            for raw in client.lrange(key, 0, -1):
                try:
                    value = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(value, list) and len(value) >= 4 and value[3]:
                    event_ids.add(str(value[3]))
    entries = stream_entries(store, subject)
    for hits in entries.values():
        event_ids.update(f["event_id"] for _, f in hits if f.get("event_id"))
    applied = [store.applied_key(e) for e in sorted(event_ids)]
    doomed = sorted(keys) + [k for k in applied if client.exists(k)]
    if doomed:
        client.delete(*doomed)
    removed = {}
    for stream, hits in entries.items():
        removed[stream] = int(client.xdel(stream, *[sid for sid, _ in hits])) if hits else 0
        if hits:  # XDEL only flags an entry: its bytes stay in the stream's nodes until rebuilt
            rebuild_stream(client, stream)
    rewritten = False
    if doomed or any(removed.values()):
        # the server's append-only file still holds the deleted commands: rewrite it from the
        # current data set (no effect on a server without persistence)
        try:
            client.bgrewriteaof()
            rewritten = True
        except Exception:  # a managed server may refuse the command; the log says so
            rewritten = False
    return {
        "read": True,
        "namespace": store.ns,
        "cached_answers": (
            "the user's (keyed with the serving secret)"
            if secret is not None
            else "every entry of the namespace (no serving secret here to tell the user's apart)"
        ),
        "keys_deleted": len(doomed),
        "stream_entries_deleted": removed,
        "append_only_file_rewritten": rewritten,
    }


def _before(stream_id: str) -> str:
    """The stream ID just before ``stream_id`` ("ms-seq")."""
    ms, seq = (int(x) for x in str(stream_id).split("-"))
    return f"{ms}-{seq - 1}" if seq > 0 else f"{ms - 1}-18446744073709551615"


def rebuild_stream(client, stream: str, attempts: int = 20) -> None:
    """Rewrite ``stream`` from its live entries, so that deleted entries leave no bytes behind
    (in memory, in RDB snapshots and in the rewritten append-only file).

    Atomic against concurrent writers (WATCH / MULTI: the live entries are copied under the same
    IDs into a new key, each consumer group is recreated, and the new key replaces the old one;
    retried if the stream changed meanwhile). Pending entries are delivered again to a consumer
    named ``erasure`` (and the entries between them that had been acknowledged are acknowledged
    again), then each group's last-delivered ID is restored: a live worker claims them after its
    idle time, and applying an event twice changes nothing (event IDs are remembered)."""
    import redis

    tmp = f"{stream}:rebuild"
    for _ in range(attempts):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(stream)
                if not pipe.exists(stream):
                    return
                entries = pipe.xrange(stream)
                groups = pipe.xinfo_groups(stream)
                pending = {
                    g["name"]: [
                        p["message_id"] for p in pipe.xpending_range(stream, g["name"], "-", "+", 10**9)
                    ]
                    for g in groups
                }
                pipe.multi()
                pipe.delete(tmp)
                for sid, fields in entries:
                    pipe.xadd(tmp, fields, id=sid)
                for g in groups:
                    ids = pending[g["name"]]
                    start = _before(min(ids, key=_stream_key)) if ids else g["last-delivered-id"]
                    pipe.xgroup_create(tmp, g["name"], id=start, mkstream=True)
                if entries or groups:
                    pipe.rename(tmp, stream)
                else:  # nothing left and no group: the stream itself goes
                    pipe.delete(stream)
                pipe.execute()
            except redis.WatchError:
                continue
        break
    else:  # pragma: no cover - a stream written faster than it can be copied
        raise RuntimeError(f"{stream}: could not rebuild the stream while writers kept changing it")
    for g in groups:
        ids = set(pending[g["name"]])
        if not ids:
            continue
        last = g["last-delivered-id"]
        first = _stream_key(_before(min(ids, key=_stream_key)))
        count = sum(1 for sid, _ in entries if first < _stream_key(sid) <= _stream_key(last))
        reread = client.xreadgroup(g["name"], "erasure", {stream: ">"}, count=count) or []
        delivered = [sid for _, rows in reread for sid, _ in rows]
        done = [sid for sid in delivered if sid not in ids and _stream_key(sid) <= _stream_key(last)]
        if done:
            client.xack(stream, g["name"], *done)
        client.xgroup_setid(stream, g["name"], last)


def _stream_key(stream_id) -> tuple[int, int]:
    ms, seq = (int(x) for x in (stream_id.decode() if isinstance(stream_id, bytes) else stream_id).split("-"))
    return ms, seq


# ------------------------------------------------------------------------------------ models


def reexport_models(
    subject: Subject, config: DataConfig, uri: str, echo: Echo | None = None
) -> list[dict[str, Any]]:
    """Step d (module doc): re-export each registered model whose served version holds the person,
    then delete every version holding them."""
    say = echo or (lambda _msg: None)
    findings = mlflow_erasure.version_findings(subject.tokens, uri)
    out = []
    for name in sorted({f.name for f in findings}):
        versions = [f for f in findings if f.name == name]
        served = [f for f in versions if f.aliases]
        record: dict[str, Any] = {"registered_model": name, "action": "versions deleted", "new_version": None}
        for held in served:
            alias = held.aliases[0]
            exported, removed = reexport_version(held, alias, subject, uri)
            kind = held.tags.get("promotion.model_type", "")
            record.update(
                action="refit and re-exported",
                model=held.tags.get("promotion.model", ""),
                model_type=kind,
                **model_erasure_needs(kind, held.manifest_info.get("params") or {}),
                alias=alias,
                new_version=exported.version,
                rows_removed_after_ingestion=removed,
            )
            say(f"Re-exported {name} ({record['model']}) without the user: version {exported.version}")
        deleted = []
        for f in versions:
            mlflow_erasure.delete_version(f.name, f.version, f.model_id, uri)
            deleted.append(f.version)
        record["deleted_versions"] = deleted
        out.append(record)
    return out


def model_erasure_needs(model_type: str, params: dict[str, Any]) -> dict[str, Any]:
    """What the erasure log says about a re-exported model, read from its class's declaration
    (:class:`personalize.models.base.ErasureNeeds`): ``item_side_from_all_users``,
    ``per_user_state`` and ``why``; a type that is not registered or declares nothing says so."""
    try:
        needs = get_model_class(model_type).erasure_needs(params)
    except (ConfigError, AttributeError, ValueError) as exc:
        return {"why": f"model type {model_type!r} declares no erasure needs ({exc}); refit"}
    return {
        "item_side_from_all_users": needs.item_side_from_all_users,
        "per_user_state": needs.per_user_state,
        "why": needs.why(),
    }


def reexport_version(
    held: mlflow_erasure.VersionFinding, alias: str, subject: Subject, uri: str
) -> tuple[ExportResult, int]:
    """Export the served version ``held`` again through the one export path, on the data rebuilt
    from its source run's config without the person; returns (the export, rows removed after
    ingestion: 0 when ingestion already suppressed them)."""
    source = held.tags.get("promotion.source_run_id", "none")
    if source in ("", "none"):
        raise DataError(
            f"registered model {held.name} version {held.version} records no source run "
            "(promotion.source_run_id): its data cannot be rebuilt; delete the version by hand"
        )
    record = records.read_experiment(source, uri)
    experiment = read_experiment(data=yaml.safe_load(record.config_yaml))
    data = experiment.data.model_copy(update={"write_processed": False})
    dataset, removed = _without(ingest(data), subject)
    info = held.manifest_info
    params = info.get("params")
    if params is None or "seed" not in info:
        raise DataError(
            f"registered model {held.name} version {held.version}: its state records no params or seed"
        )
    candidate = Candidate(
        label=held.tags.get("promotion.model") or info.get("model", ""),
        model_type=held.tags.get("promotion.model_type") or info.get("model_type", ""),
        params=dict(params),
        value=float(held.tags.get("promotion.value", info.get("selection_value", 0.0))),
        seed=int(info["seed"]),
        run_id=None
        if held.tags.get("promotion.candidate_run_id") in (None, "none")
        else held.tags.get("promotion.candidate_run_id"),
        selection=info.get("privacy"),  # the params' choice was made (and spent) for the held version
    )
    export = experiment.export.model_copy(
        update={"enabled": True, "registered_model": held.name, "alias": alias, "promote": True}
    )
    result = export_experiment(
        [candidate],
        dataset,
        experiment,
        export=export,
        parent_run_id=record.run_id,
        tracking_uri=uri,
        progress=False,
        echo=None,
    )
    return result, removed


def _without(dataset: Dataset, subject: Subject) -> tuple[Dataset, int]:
    """The dataset without the person's rows (0 when ingestion already suppressed them)."""
    ids = subject.tokens
    inter = dataset.interactions[C.USER].astype(str).isin(ids)
    users = dataset.users[C.USER].astype(str).isin(ids)
    removed = int(inter.sum() + users.sum())
    if not removed:
        return dataset, 0
    return (
        dataclasses.replace(
            dataset,
            interactions=dataset.interactions.loc[~inter].reset_index(drop=True),
            users=dataset.users.loc[~users].reset_index(drop=True),
        ),
        removed,
    )


def read_log(config: DataConfig) -> pd.DataFrame:
    """The erasure log beside the suppression list (one row per erasure)."""
    path = suppression_path(config).parent / LOG_NAME
    if not path.exists():
        return pd.DataFrame()
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
