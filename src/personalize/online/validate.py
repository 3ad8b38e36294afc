"""Stream entries checked with the ingestion rules: which become events (or consent records)
for the online store, and which go to the dead-letter stream with a reason naming the field.

Entries come as the workers read them (:mod:`personalize.online.entries`: field pairs as bytes,
or text); each field used is decoded on its own, so an entry that is not UTF-8 or repeats a
field is rejected alone. IDs follow ingestion's rule (:func:`canonical_ids`, then
:func:`integer_id`: only a canonical ASCII decimal integer that fits int64 is a number). The
rules are vectorised over a batch; should they ever fail on one, every entry is checked alone,
so that no entry can fail a batch.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from personalize.config.data import DataConfig
from personalize.core import columns as C
from personalize.data.consent import GRANTED, PURPOSE, parse_granted
from personalize.data.validate import Issues, canonical_ids, integer_id, now_utc, parse_timestamps
from personalize.online import entries as E
from personalize.scoring.online import CONSENT_EVENT

log = logging.getLogger(__name__)

FIELDS = (C.USER, C.ITEM, C.EVENT, C.TIMESTAMP, "event_id")
CONSENT_FIELDS = (C.USER, PURPOSE, GRANTED, C.EVENT, C.TIMESTAMP, "event_id")
EVENT_ID = "event_id"
_SEP = "\x1f"


def event_id_of(user_id: Any, item_id: Any, event: Any, timestamp: Any) -> str:
    """The ID of an event that has none: the first 24 hex digits of the SHA-1 of its user, item,
    event type and timestamp as text (missing: empty), joined by the unit separator. Equal rows
    get equal IDs: a copy of an event is the same event."""
    parts = ["" if missing(v) else str(v).strip() for v in (user_id, item_id, event, timestamp)]
    return hashlib.sha1(_SEP.join(parts).encode()).hexdigest()[:24]


def missing(value: Any) -> bool:
    """Whether a field's value is missing: None, or a pandas/NumPy missing value."""
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def derived_id(fields: dict[str, Any]) -> str:
    """The derived ID of an event (:func:`event_id_of`) or of a consent record (its purpose and
    granted in the item's place)."""
    if fields.get(C.EVENT) is not None and str(fields[C.EVENT]).strip() == CONSENT_EVENT:
        what = f"{fields.get(PURPOSE)}={fields.get(GRANTED)}"
        return event_id_of(fields.get(C.USER), what, CONSENT_EVENT, fields.get(C.TIMESTAMP))
    return event_id_of(fields.get(C.USER), fields.get(C.ITEM), fields.get(C.EVENT), fields.get(C.TIMESTAMP))


@dataclass
class Rejected:
    """A stream entry that is not applied: its ID, raw field pairs (None: deleted) and why."""

    stream_id: str
    fields: E.Pairs | None
    reason: str


ALL_FIELDS = tuple(dict.fromkeys(FIELDS + CONSENT_FIELDS))


@dataclass
class _Decoded:
    """An entry's fields as text (:func:`personalize.online.entries.decode_known`), their
    problems (field, kind, detail) and its raw pairs."""

    values: dict[str, str | None]
    problems: list[tuple[str, str, str]]
    pairs: E.Pairs | None


def _decode(fields: Any) -> _Decoded:
    pairs = E.pairs_of(fields)
    values, problems = E.decode_known(pairs, ALL_FIELDS)
    return _Decoded(values, problems, pairs)


def _item_value(text: str) -> int | str:
    """An item ID for the stored event: the number when :func:`integer_id` says it is one (a
    canonical ASCII decimal integer that fits int64; what the served model's ID lookup matches
    either way), else the text."""
    number = integer_id(text)
    return text if number is None else number


def validate_entries(
    entries: list[tuple[str, Any]],
    data: DataConfig | None = None,
    now: pd.Timestamp | None = None,
) -> tuple[list[tuple[str, dict[str, Any]]], list[Rejected]]:
    """Split stream entries (stream ID, fields: a mapping or (field, value) pairs, as text or
    bytes; None: deleted) into valid events (stream ID, event ready for
    :meth:`OnlineStore.apply`) and rejected ones, with the ingestion rules:

    - every field used is UTF-8 text given once (else the entry is rejected naming the field);
    - ``user_id``, ``item_id``: present (:func:`canonical_ids`: surrounding spaces dropped,
      ``'007'`` is ``'7'``); an item ID is stored as int64 when :func:`integer_id` makes it a
      number (a canonical ASCII decimal integer that fits), else as text (``'١٢٣'``, ``'²'``, an
      ID of 5,000 digits); a user ID as text;
    - ``timestamp``: epoch number in ``data.timestamp.epoch_unit`` or ISO 8601 with an offset
      (or ``assume_timezone``), inside the plausible window (``data.timestamp.earliest`` to now
      when ``reject_future``) (:func:`parse_timestamps`); stored as ISO 8601 UTC;
    - ``event``: when ``data.events`` configures types, present and one of them; else free;
    - ``event_id``: derived from the fields (:func:`event_id_of`) when absent.

    A rejected entry's reason lists every failure as ``field: what`` (e.g. ``user_id: user_id is
    missing``). An entry with no fields (deleted before it was read) is rejected as such.

    An entry with ``event: consent`` is a consent record (module doc), checked with the consent
    table's rules instead; results keep the entries' order. Never raises for what an entry
    holds: should the rules fail on a batch, each entry is checked alone, and one that still
    fails them is rejected with the error.
    """
    data = data or DataConfig()
    now = now if now is not None else now_utc()
    decoded = [_decode(fields) for _, fields in entries]
    try:
        return _validate(entries, decoded, data, now)
    except Exception as exc:
        if len(entries) > 1:
            log.warning("validating a batch failed (%s); validating its entries one by one", exc)
        else:
            log.exception("validating stream entry %s failed", entries[0][0] if entries else None)
    valid, rejected = [], []
    for entry, one in zip(entries, decoded, strict=True):
        try:
            v, r = _validate([entry], [one], data, now)
        except Exception as exc:
            v, r = [], [Rejected(entry[0], one.pairs, f"entry: the ingestion rules failed on it ({exc!r})")]
        valid += v
        rejected += r
    return valid, rejected


def _validate(
    entries: list[tuple[str, Any]], decoded: list[_Decoded], data: DataConfig, now: pd.Timestamp
) -> tuple[list[tuple[str, dict[str, Any]]], list[Rejected]]:
    is_consent = [bool(d.pairs) and (d.values[C.EVENT] or "").strip() == CONSENT_EVENT for d in decoded]
    if not any(is_consent):
        return _validate_events(entries, decoded, data, now)
    order = {sid: pos for pos, (sid, _) in enumerate(entries)}

    def part(consent: bool) -> tuple[list, list]:
        chosen = [pos for pos, c in enumerate(is_consent) if c == consent]
        validate = _validate_consent if consent else _validate_events
        return validate([entries[p] for p in chosen], [decoded[p] for p in chosen], data, now)

    v1, r1 = part(False)
    v2, r2 = part(True)
    valid = sorted(v1 + v2, key=lambda v: order[v[0]])
    rejected = sorted(r1 + r2, key=lambda r: order[r.stream_id])
    return valid, rejected


def _frame(decoded: list[_Decoded], fields: tuple[str, ...], issues: Issues) -> pd.DataFrame:
    """The entries' fields as a text frame (blank: missing), their decoding problems added to
    ``issues``."""
    frame = pd.DataFrame(
        {c: pd.array([d.values[c] for d in decoded], dtype="string") for c in fields},
        index=range(len(decoded)),
    )
    for c in fields:
        frame[c] = frame[c].mask(frame[c].str.strip() == "")
    for pos, d in enumerate(decoded):
        for name, kind, detail in d.problems:
            if name in fields:
                issues.add(_at(len(decoded), pos), kind, detail)
    return frame


def _at(n: int, pos: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[pos] = True
    return mask


def _reason(issues: Issues, pos: int, decoded: _Decoded) -> str:
    """``field: what`` for every failure of the entry; a field that could not be read (not
    UTF-8, or repeated) says only that."""
    unreadable = {name: kind for name, kind, _ in decoded.problems}
    parts = []
    for kind, detail in zip(issues.kinds(pos), issues.details(pos), strict=True):
        name = kind.split(":")[0]
        if name in unreadable and kind != unreadable[name]:
            continue  # e.g. "missing": it is there, only not readable
        parts.append(f"{name}: {detail}")
    return "; ".join(parts)


def _validate_consent(
    entries: list[tuple[str, Any]], decoded: list[_Decoded], data: DataConfig, now: pd.Timestamp
) -> tuple[list[tuple[str, dict[str, Any]]], list[Rejected]]:
    """Consent records from the stream, checked with the consent table's rules
    (:mod:`personalize.data.consent`): ``user_id`` present (canonical), ``purpose`` one of
    ``data.privacy.record.purposes``, ``granted`` a boolean, ``timestamp`` as for events. Valid
    ones are ready for :meth:`OnlineStore.consent` (``granted`` a bool, ``timestamp`` ISO 8601 UTC)."""
    issues = Issues(len(entries))
    frame = _frame(decoded, CONSENT_FIELDS, issues)
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
            rejected.append(Rejected(sid, decoded[pos].pairs, _reason(issues, pos, decoded[pos])))
            continue
        eid = frame[EVENT_ID].iloc[pos]
        eid = derived_id(decoded[pos].values) if missing(eid) else str(eid).strip()
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
    entries: list[tuple[str, Any]], decoded: list[_Decoded], data: DataConfig, now: pd.Timestamp
) -> tuple[list[tuple[str, dict[str, Any]]], list[Rejected]]:
    """:func:`validate_entries` of entries that are not consent records."""
    n = len(entries)
    issues = Issues(n)
    deleted = np.array([not d.pairs for d in decoded], dtype=bool)
    issues.add(deleted, "entry: deleted", "entry was deleted from the stream before it was processed")
    frame = _frame(decoded, FIELDS, issues)
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
            rejected.append(Rejected(sid, decoded[pos].pairs, _reason(issues, pos, decoded[pos])))
            continue
        event = None if missing(event_list[pos]) else str(event_list[pos])
        eid = id_list[pos]
        eid = derived_id(decoded[pos].values) if missing(eid) else str(eid).strip()
        event_fields = {
            C.USER: str(user_list[pos]),
            C.ITEM: _item_value(str(item_list[pos])),
            C.EVENT: event,
            C.TIMESTAMP: stamp_list[pos].isoformat(),
            EVENT_ID: eid,
        }
        valid.append((sid, event_fields))
    return valid, rejected
