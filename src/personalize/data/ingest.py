"""One ingestion path for every dataset: read (in chunks) -> parse -> validate -> suppress
listed users -> reconcile IDs across sources -> pseudonymise user IDs -> check IDs across
tables -> de-duplicate and resolve conflicts -> accepted tables + quarantine -> (merge duplicate
items) -> coarsen quasi-identifiers -> (sample users) -> consent -> fingerprint -> data/processed/.

Raw inputs are never modified. Every input row is accepted, quarantined with its reasons, or
suppressed (its user is on the suppression list), and ``accepted + quarantined + suppressed ==
input rows`` for every table (checked here, so that a bug cannot drop data silently).

Only :class:`~personalize.core.errors.DataError` escapes: a file
that cannot be read at all, or a table with no valid row, named with the file (and the column or
byte offset where that applies); anything wrong with a row quarantines that row. Rows that could
not be parsed into fields keep their raw line, in the quarantine's one ``raw`` column.

Personal data (``data.privacy``, :mod:`personalize.data.privacy`):

- **Suppression**: rows of users on the suppression list leave every table before any check, so
  nothing about them reaches the accepted tables, the quarantine or the reports; a malformed
  line is suppressed when any of its fields (split at the delimiter, canonicalised as IDs are)
  is a listed ID. Only the count is reported (``suppressed``).
- **Pseudonyms** (``pseudonymise: true``; the key is loaded before any file is read, a
  ConfigError when none is set): once IDs are canonical, every user ID becomes its pseudonym in
  the parsed and the raw values, so the checks, the quarantine (parsed values, details) and the
  ID report only ever see pseudonyms. A malformed line keeps its text with the user field
  (located by the delimiter and the column's position in the header) replaced by the pseudonym;
  it is redacted whole (:data:`REDACTED`) when the field cannot be located with certainty: the
  line spans several lines, has fewer fields than that position, holds a quote before or in it,
  or holds another field equal to a known user ID.
- **Quasi-identifiers** (:mod:`personalize.data.quasi`): the users table is coarsened by
  ``coarsen`` and the report gives k-anonymity before and after.

(One module: the steps share the per-table bookkeeping that proves every row is accounted for.)
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from personalize.config.data import DataConfig, InteractionSource, TableSource
from personalize.core import columns as C
from personalize.core.errors import DataError
from personalize.core.paths import processed_dir
from personalize.data.events import EventPolicy
from personalize.data.movielens import movielens_100k_config
from personalize.data.privacy import Pseudonymiser, SuppressionList, load_key
from personalize.data.quasi import coarsen, k_report
from personalize.data.readers import ROW, read_table
from personalize.data.synthetic import synthetic_data_config
from personalize.data.validate import (
    LIST_ATTRIBUTES,
    NUMERIC_ATTRIBUTES,
    Issues,
    TableReport,
    attributes_schema,
    canonical_ids,
    ids_are_integers,
    interactions_schema,
    now_utc,
    parse_list,
    parse_number,
    parse_timestamps,
    quoted,
    schema_failures,
)

RAW = "raw"  # the raw line of a row that could not be parsed into fields
QUARANTINE_COLUMNS = [C.Q_TABLE, C.Q_SOURCE, C.Q_ROW, C.Q_REASON, "detail", C.Q_VALUES, RAW]
SRC = "_source"  # which source an interaction came from (while ingesting)
REDACTED = "[redacted: user ID field not located]"  # a malformed line whose user field is uncertain


@dataclass
class IdReport:
    """How the IDs of the tables fit together (the ID-consistency report)."""

    users_with_events_not_in_users_table: int = 0  # accepted (a source's policy) or quarantined
    users_not_in_users_table_accepted: int = 0
    users_without_events: int = 0  # in the users table, no accepted event
    items_outside_catalogue: int = 0  # events of items not in the items table (quarantined)
    items_without_events: int = 0
    merged_spellings: dict[str, list[list[str]]] = field(default_factory=dict)  # kind -> groups

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def counts(self) -> dict[str, int]:
        """The counts, by field name (logged as metrics)."""
        out = {k: v for k, v in self.__dict__.items() if isinstance(v, int)}
        out.update({f"{kind}s_written_several_ways": len(g) for kind, g in self.merged_spellings.items()})
        return out

    def summary(self, user_examples: bool = True) -> pd.DataFrame:
        """One row per check with its count; the merged spellings with up to three examples each,
        except users' with ``user_examples`` false (a report free of user IDs, e.g. the logged
        ``data/id_consistency.md``: the groups stay in the ingestion report)."""
        rows = [
            ("users with events but no users-table row", self.users_with_events_not_in_users_table),
            ("  of which accepted (a source accepts unknown users)", self.users_not_in_users_table_accepted),
            ("users-table users without any event", self.users_without_events),
            ("item IDs in events outside the catalogue (quarantined)", self.items_outside_catalogue),
            ("catalogue items without any event", self.items_without_events),
        ]
        for kind, groups in self.merged_spellings.items():
            example = ", ".join("/".join(g) for g in groups[:3]) if user_examples or kind != "user" else ""
            rows.append(
                (
                    f"{kind}s written several ways, merged" + (f" (e.g. {example})" if example else ""),
                    len(groups),
                )
            )
        return pd.DataFrame(rows, columns=["check", "count"])


@dataclass
class IngestReport:
    """Per-table counts and reasons, and the ID-consistency report; printed by the CLI and
    logged with every run."""

    tables: dict[str, TableReport] = field(default_factory=dict)
    ids: IdReport = field(default_factory=IdReport)
    merges: dict = field(default_factory=dict)  # what data.merge_duplicate_items changed (JSON-able)
    pseudonymised: bool = False  # user IDs everywhere are pseudonyms (data.privacy.pseudonymise)
    k_anonymity: dict = field(default_factory=dict)  # personalize.data.quasi.k_report of the users table

    def to_dict(self) -> dict:
        return {role: rep.to_dict() for role, rep in self.tables.items()}

    def k_text(self) -> str:
        """k-anonymity in one phrase: ``k 1 -> 34 over age, gender (target 5: met)``."""
        k = self.k_anonymity
        if not k:
            return "-"
        target = (
            "" if k["k_target"] is None else f" (target {k['k_target']}: {'met' if k['met'] else 'not met'})"
        )
        over = ", ".join(k["quasi_identifiers"]) or "no quasi-identifier"
        return f"k {k['before']} -> {k['after']} over {over}{target}"

    def summary(self) -> pd.DataFrame:
        """One row per table: input rows, accepted, quarantined, suppressed, no consent, the
        reasons, and (on the users table's row, else the first) k-anonymity."""
        rows = []
        k_row = "users" if "users" in self.tables else next(iter(self.tables), None)
        for role, rep in self.tables.items():
            rows.append(
                {
                    "table": role,
                    "input_rows": rep.input_rows,
                    "accepted": rep.accepted,
                    "quarantined": rep.quarantined,
                    "suppressed": rep.suppressed,
                    "no_consent": rep.no_consent,
                    "sampled_out": rep.sampled_out,
                    "reasons": ", ".join(f"{k} ({v})" for k, v in rep.reasons.most_common()) or "-",
                    "values_set_missing": ", ".join(f"{k} ({v})" for k, v in rep.nulled.items()) or "-",
                    "k_anonymity": self.k_text() if role == k_row else "-",
                }
            )
        return pd.DataFrame(rows)


@dataclass(frozen=True)
class Dataset:
    """Validated tables of one dataset.

    ``interactions``: user_id, item_id, timestamp (UTC), [rating], [weight], [event], sorted in
    the protocol's total order (timestamp, item_id, user_id). ``users`` and ``items`` hold every
    known user and item (the item table is the catalogue). IDs are int64 when every ID of that
    kind is an integer that fits, otherwise strings.
    """

    name: str
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    quarantine: pd.DataFrame
    report: IngestReport
    fingerprint: str
    processed_path: Path | None = None
    events: EventPolicy | None = None  # event types' weights and relevance (None: one kind)
    consent: pd.DataFrame | None = None  # latest consent per (user, purpose); None: no consent table

    def describe(self) -> dict[str, float]:
        n_users = self.interactions[C.USER].nunique()
        n_items = self.interactions[C.ITEM].nunique()
        n = len(self.interactions)
        return {
            "interactions": n,
            "users": len(self.users),
            "items": len(self.items),
            "users_with_interactions": n_users,
            "items_with_interactions": n_items,
            "density": n / max(1, len(self.users) * len(self.items)),
            "quarantined": len(self.quarantine),
        }


@dataclass
class _Table:
    """One input table while it is ingested: parsed rows, their issues, the raw values of the
    rows its chunks quarantined.

    Memory is bounded by the read chunk beyond the parsed rows: the values as read are kept only
    for rows a chunk's own checks quarantine; rows quarantined later by checks across the whole
    table (unknown references, duplicates, conflicts) get theirs by a second read of the file,
    chunk by chunk, picking those rows by number (:func:`_raw_values`). The other spellings of
    IDs (``'007'`` for ``'7'``) are collected chunk by chunk too."""

    key: str  # report and quarantine name: users, items, interactions[.<source>]
    role: str  # users, items or interactions
    label: str  # the file
    frame: pd.DataFrame  # parsed values, ROW
    raw: pd.DataFrame  # the values as read of rows quarantined in their chunk, ROW (ascending)
    columns: list[str]  # the columns as read, ROW first
    spellings: dict[str, set[tuple[str, str]]]  # ID column -> (canonical, as read) where they differ
    issues: Issues
    malformed: list
    input_rows: int
    source: TableSource
    nulled: Counter = field(default_factory=Counter)
    suppressed: int = 0  # rows (malformed lines included) of users on the suppression list
    pseudonymised: bool = False  # user IDs replaced by pseudonyms (raw values too, when shown)


# ---------------------------------------------------------------------------------- ingest


def file_config(config: DataConfig) -> DataConfig:
    """The data block naming real files, its privacy settings kept: the embedded MovieLens-100K
    files for ``movielens-100k``, the generated (or cached) files for ``synthetic``, else
    ``config`` itself."""
    if config.source == "movielens-100k":
        return movielens_100k_config(config).model_copy(update={"privacy": config.privacy})
    if config.source == "synthetic":  # generated (or found in the cache), then read as files
        return synthetic_data_config(config)
    return config


def ingest(config: DataConfig) -> Dataset:
    """Ingest the tables ``config`` names (or MovieLens-100K, or a synthetic log) into a validated
    :class:`Dataset`."""
    privacy = config.privacy
    config = file_config(config)
    pseudonymiser = Pseudonymiser(load_key(privacy.key, "pseudonymisation")) if privacy.pseudonymise else None
    suppression = SuppressionList.load(privacy.suppression, privacy.suppression_key)
    sources = config.sources
    name = config.name or sources[0].path.stem
    now = now_utc()

    entities = {
        role: _read_entities(src, role)
        for role, src in (("users", config.users), ("items", config.items))
        if src is not None
    }
    several = len(sources) > 1
    events = [
        _read_events(src, config, now, f"interactions.{src.label}" if several else "interactions")
        for src in sources
    ]

    with_users = [t for t in [*entities.values(), *events] if t.role != "items"]
    for table in with_users:
        _suppress(table, suppression)
    ids = IdReport()
    _reconcile_ids(entities, events, ids, pseudonymiser)
    if pseudonymiser is not None:
        known = set().union(*(set(t.frame[C.USER].dropna().tolist()) for t in with_users))
        for table in with_users:
            _pseudonymise(table, pseudonymiser, known)
    for role, table in entities.items():
        _check_entities(table, C.USER if role == "users" else C.ITEM)
    frame = pd.concat([t.frame.assign(**{SRC: i}) for i, t in enumerate(events)], ignore_index=True)
    sizes = [len(t.frame) for t in events]
    for t in events:  # the parsed rows live on in `frame` alone (the columns are kept)
        t.frame = t.frame.iloc[:0]
    issues = Issues.concat([t.issues for t in events])
    _check_references(frame, issues, entities, sources, ids)
    _mark_exact_duplicates(frame, issues, ~issues.bad(), [c for c in frame.columns if c != ROW])
    _resolve_conflicts(frame, issues, config.conflicts)
    if several:  # then one event in two sources (e.g. two logs of the same view): kept once
        columns = [c for c in frame.columns if c not in (ROW, SRC)]
        _mark_exact_duplicates(frame, issues, ~issues.bad(), columns, [t.label for t in events])

    report = IngestReport(ids=ids, pseudonymised=pseudonymiser is not None)
    quarantined = []
    accepted: dict[str, pd.DataFrame] = {}
    for table in entities.values():
        accepted[table.role] = table.frame.loc[~table.issues.bad()].drop(columns=[ROW])
        quarantined.append(_account(table, table.issues, report, table.frame))
    bad = issues.bad()
    start = 0
    for table, size in zip(events, sizes, strict=True):
        part = issues.slice(start, start + size)
        quarantined.append(_account(table, part, report, frame.iloc[start : start + size]))
        start += size
    accepted["interactions"] = frame.loc[~bad].drop(columns=[ROW, SRC])
    del frame, issues, bad
    if len(accepted["interactions"]) == 0:
        reasons = Counter(k for t in events for k in report.tables[t.key].reasons.elements())
        raise DataError(
            f"interactions ({', '.join(t.label for t in events)}): no row passed validation "
            f"({sum(report.tables[t.key].quarantined for t in events)} quarantined: {dict(reasons)})"
        )

    interactions, users, items = _finalise(accepted, has_events=_event_types(events))
    ids.users_without_events = (
        int((~users[C.USER].isin(interactions[C.USER])).sum()) if "users" in entities else 0
    )
    ids.items_without_events = (
        int((~items[C.ITEM].isin(interactions[C.ITEM])).sum()) if "items" in entities else 0
    )
    if config.merge_duplicate_items:
        from personalize.data.resolution import apply_item_merges

        interactions, items = apply_item_merges(interactions, items, config.merge_duplicate_items, report)
    as_read = users
    users = coarsen(users, privacy.coarsen)
    if config.sample_users is not None:
        interactions, users = _sample_users(interactions, users, config.sample_users, report)
    from personalize.data.consent import apply_consent

    def pseudonymise(values: Sequence[str]) -> list[str]:
        return pseudonymiser.many(values) if pseudonymiser is not None else list(values)

    interactions, users, consent = apply_consent(interactions, users, config, report, pseudonymise)
    report.k_anonymity = k_report(
        as_read[as_read[C.USER].isin(users[C.USER])], users, privacy.quasi_identifiers, privacy.k_target
    )
    quarantine = pd.concat(quarantined, ignore_index=True) if quarantined else _empty_quarantine()
    fingerprint = fingerprint_tables(interactions, users, items)
    events_policy = EventPolicy.build(config, interactions)
    dataset = Dataset(
        name,
        interactions,
        users,
        items,
        quarantine,
        report,
        fingerprint,
        events=events_policy,
        consent=consent,
    )
    if config.write_processed:
        dataset = write_processed(dataset)
    return dataset


def load_movielens_100k(write_processed: bool = True, sample_users: int | None = None) -> Dataset:
    """Ingest ML-100K (shipped in the recbole wheel) through the standard validated path."""
    return ingest(DataConfig(write_processed=write_processed, sample_users=sample_users))


# ----------------------------------------------------------------------------- per table


def _read_entities(source: TableSource, role: str) -> _Table:
    key = C.USER if role == "users" else C.ITEM
    reader = read_table(source, role)
    raws, frames, issues, nulled = [], [], [], Counter()
    spellings: dict[str, set[tuple[str, str]]] = {}
    for chunk in reader:
        parsed = _stripped(chunk)
        found = Issues(len(parsed))
        parsed[key] = canonical_ids(parsed[key], key, found)
        for col in parsed.columns:
            if col in NUMERIC_ATTRIBUTES:
                numbers = parse_number(parsed[col], col, found, required=False)
                lost = int((numbers.isna() & parsed[col].notna()).sum())
                parsed[col] = numbers
                if lost:
                    nulled[f"{col}: not a number"] += lost
        for _, case in schema_failures(attributes_schema(), parsed).iterrows():
            parsed.loc[int(case["index"]), case["column"]] = np.nan
            nulled[f"{case['column']}: {case['check']}"] += 1
        for col in parsed.columns:
            if col in LIST_ATTRIBUTES:
                parsed[col] = parse_list(parsed[col], source.list_separator)
        columns = list(chunk.columns)
        raws.append(chunk.loc[found.bad()])
        _note_spellings(chunk, parsed, [key], spellings)
        frames.append(parsed)
        issues.append(found)
    return _Table(
        role,
        role,
        reader.label,
        _concat(frames),
        _concat(raws),
        columns,
        spellings,
        Issues.concat(issues),
        reader.malformed,
        reader.input_rows,
        source,
        nulled,
    )


def _read_events(source: InteractionSource, config: DataConfig, now: pd.Timestamp, key: str) -> _Table:
    reader = read_table(source, "interactions")
    raws, frames, issues = [], [], []
    spellings: dict[str, set[tuple[str, str]]] = {}
    for chunk in reader:
        parsed = _stripped(chunk)
        found = Issues(len(parsed))
        parsed[C.USER] = canonical_ids(parsed[C.USER], C.USER, found)
        parsed[C.ITEM] = canonical_ids(parsed[C.ITEM], C.ITEM, found)
        parsed[C.TIMESTAMP] = parse_timestamps(parsed[C.TIMESTAMP], config.timestamp, found, now)
        if source.event is not None:
            parsed[C.EVENT] = pd.Series(source.event, index=parsed.index, dtype="string")
        elif C.EVENT in parsed.columns:
            missing = parsed[C.EVENT].isna().to_numpy()
            found.add(missing, "event: missing", "event is missing")
        for col in (C.RATING, C.WEIGHT):
            if col in parsed.columns:
                parsed[col] = parse_number(parsed[col], col, found, required=True)
        for _, case in schema_failures(interactions_schema(config), parsed).iterrows():
            mask = np.zeros(len(parsed), dtype=bool)
            mask[int(case["index"])] = True
            found.add(
                mask,
                f"{case['column']}: {case['check']}",
                f"{case['column']} {case['failure_case']} is {case['check']}",
            )
        columns = list(chunk.columns)
        raws.append(chunk.loc[found.bad()])
        _note_spellings(chunk, parsed, [C.USER, C.ITEM], spellings)
        frames.append(parsed)
        issues.append(found)
    return _Table(
        key,
        "interactions",
        reader.label,
        _concat(frames),
        _concat(raws),
        columns,
        spellings,
        Issues.concat(issues),
        reader.malformed,
        reader.input_rows,
        source,
    )


def _event_types(events: list[_Table]) -> bool:
    """Whether the interactions have event types: every source or none (a source without one
    beside sources with one would give rows that neither train with a type's weight nor can be
    relevant)."""
    typed = [C.EVENT in t.frame.columns for t in events]
    if any(typed) and not all(typed):
        untyped = ", ".join(t.label for t, has in zip(events, typed, strict=True) if not has)
        raise DataError(
            f"interactions {untyped}: no event type, while other sources have one; give the source an "
            "'event:' (or map an event column)"
        )
    return all(typed)


def _note_spellings(
    chunk: pd.DataFrame, parsed: pd.DataFrame, keys: list[str], into: dict[str, set[tuple[str, str]]]
) -> None:
    """Add the chunk's (canonical, as read) ID pairs that differ to ``into`` (per column); IDs
    read as integers are written one way and are skipped."""
    for key in keys:
        if key not in chunk.columns or pd.api.types.is_integer_dtype(chunk[key].dtype):
            continue
        raw = chunk[key].astype("string")
        canon = parsed[key]
        differ = (canon.notna() & raw.notna() & (canon != raw)).fillna(False).to_numpy(dtype=bool)
        if differ.any():
            pairs = into.setdefault(key, set())
            pairs.update(zip(canon[differ].to_numpy(), raw[differ].to_numpy(), strict=True))


def _stripped(chunk: pd.DataFrame) -> pd.DataFrame:
    """The chunk with surrounding spaces dropped from text values (the raw chunk keeps them)."""
    out = chunk.copy()
    for col in out.columns:
        if pd.api.types.is_string_dtype(out[col]) and out[col].dtype != object:
            out[col] = out[col].str.strip()
    return out


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)


# ------------------------------------------------------------------- IDs across tables


def _reconcile_ids(
    entities: dict[str, _Table],
    events: list[_Table],
    report: IdReport,
    pseudonymiser: Pseudonymiser | None = None,
) -> None:
    """Record which IDs were written several ways (``' 7'``, ``'007'``, ``7``) and became one.

    The rule (:func:`personalize.data.validate.canonical_ids`): surrounding spaces are dropped
    and a decimal integer is written without leading zeros; the raw spellings are compared here,
    across every table and source. With ``pseudonymiser``, a user's group is recorded as its
    pseudonym and the number of other spellings (the spellings are the ID)."""
    for key, role in ((C.USER, "users"), (C.ITEM, "items")):
        spellings: dict[str, set[str]] = {}
        tables = [t for t in events] + ([entities[role]] if role in entities else [])
        for t in tables:
            for c, r in t.spellings.get(key, ()):
                spellings.setdefault(c, {c}).add(r)
        groups = [sorted(v) for _, v in sorted(spellings.items()) if len(v) > 1]
        if key == C.USER and pseudonymiser is not None:
            groups = sorted(
                [pseudonymiser(c), f"{len(v) - 1} other spelling(s)"]
                for c, v in spellings.items()
                if len(v) > 1
            )
        report.merged_spellings[key.removesuffix("_id")] = groups


# --------------------------------------------------------------------- personal data


def _separator(source: TableSource) -> str:
    """The field delimiter of a text source (as the reader splits it)."""
    return source.separator or {"csv": ",", "tsv": "\t", "recbole": "\t"}.get(source.resolved_format(), ",")


def _canonical_token(token: str) -> str:
    """A field of a malformed line as an ID (:func:`personalize.data.validate.canonical_ids`):
    spaces and surrounding quotes dropped, a decimal integer without sign of plus or leading
    zeros."""
    text = token.strip().strip('"').strip()
    body = text.lstrip("+")
    sign = "-" if body.startswith("-") else ""
    digits = body.lstrip("-")
    if digits.isdigit() and digits.isascii():
        digits = digits.lstrip("0") or "0"
        return digits if digits == "0" else sign + digits
    return text


def malformed_line_ids(line: str, source: TableSource) -> list[str]:
    """Every field of a malformed ``line`` of ``source`` as an ID (:func:`_canonical_token`), in
    order, without repeats or blanks (a line break counts as a separator: a quoted field may hold
    one): what suppression and erasure compare a person's ID with."""
    sep = _separator(source)
    tokens = [_canonical_token(t) for t in line.replace("\r", "\n").replace("\n", sep).split(sep)]
    return [t for t in dict.fromkeys(tokens) if t]


def _suppress(table: _Table, suppression: SuppressionList) -> None:
    """Drop the rows of users on ``suppression`` from the table (parsed and raw values, issues,
    malformed lines with any field equal to a listed ID) and count them."""
    if not len(suppression):
        return
    ids = table.frame[C.USER]
    unique = ids.dropna().unique().tolist()
    listed = {u for u, hit in zip(unique, suppression.mask(unique), strict=True) if hit}
    drop = ids.isin(listed).to_numpy(dtype=bool)
    if drop.any():
        keep = np.flatnonzero(~drop)
        gone = table.frame[ROW].to_numpy()[drop]
        table.frame = table.frame.iloc[keep].reset_index(drop=True)
        table.raw = table.raw.loc[~table.raw[ROW].isin(gone)].reset_index(drop=True)
        table.issues = table.issues.take(keep)
    if C.USER in table.spellings:  # nothing about a listed user reaches the ID report
        table.spellings[C.USER] = {p for p in table.spellings[C.USER] if p[0] not in listed}
    kept = [
        bad for bad in table.malformed if not any(suppression.mask(malformed_line_ids(bad.raw, table.source)))
    ]
    table.suppressed = int(drop.sum()) + len(table.malformed) - len(kept)
    table.malformed = kept


def _pseudonymise(table: _Table, pseudonymiser: Pseudonymiser, known: set[str]) -> None:
    """Replace the table's user IDs by their pseudonyms: the parsed (canonical) IDs, the raw
    values of rows with an ID, and the user field of malformed lines (module doc; ``known``:
    every canonical user ID of the tables, to find lines where the field is uncertain)."""
    ids = table.frame[C.USER]
    unique = ids.dropna().unique().tolist()
    mapping = dict(zip(unique, pseudonymiser.many(unique), strict=True))
    pseudonyms = ids.map(mapping).astype("string")
    table.frame[C.USER] = pseudonyms
    table.pseudonymised = True  # raw values shown in the quarantine get the pseudonym (_raw_values)
    if table.malformed:
        sep = _separator(table.source)
        position = [c for c in table.columns if c != ROW].index(C.USER)
        for bad in table.malformed:
            bad.raw = _pseudonymise_line(bad.raw, sep, position, pseudonymiser, known)


def _pseudonymise_line(
    line: str, sep: str, position: int, pseudonymiser: Pseudonymiser, known: set[str]
) -> str:
    """The malformed ``line`` with its user field (field ``position`` when split at ``sep``)
    replaced by the pseudonym, or :data:`REDACTED` when the field cannot be located with
    certainty (module doc). An empty line stays empty."""
    if not line:
        return line
    if "\n" in line or "\r" in line:
        return REDACTED
    fields = line.split(sep)
    if len(fields) <= position or any('"' in f for f in fields[: position + 1]):
        return REDACTED
    if any(_canonical_token(f) in known for i, f in enumerate(fields) if i != position):
        return REDACTED
    value = _canonical_token(fields[position])
    if value:
        fields[position] = pseudonymiser(value)
    return sep.join(fields)


def _check_entities(table: _Table, key: str) -> None:
    """Exact duplicates, then an ID defined twice with other attributes: the most complete
    definition is kept (ties: the first in value order, so the rule ignores row order), the
    others quarantined."""
    frame, issues = table.frame, table.issues
    compare = [c for c in frame.columns if c != ROW]
    _mark_exact_duplicates(frame, issues, ~issues.bad(), compare)
    ok = ~issues.bad()
    candidates = frame.loc[ok]
    if candidates[key].duplicated(keep=False).any():
        canon = _canonical(candidates[compare]).astype("string").fillna("\uffff")
        order = pd.DataFrame(
            {"missing": candidates[compare].isna().sum(axis=1).to_numpy(), "key": candidates[key].to_numpy()}
        )
        for c in compare:
            order[c] = canon[c].to_numpy()
        order["pos"] = np.flatnonzero(ok)
        order = order.sort_values(["key", "missing", *compare], kind="stable")
        first = order.groupby("key", sort=False)["pos"].transform("first").to_numpy()
        repeat = order["pos"].to_numpy() != first
        mask = np.zeros(len(frame), dtype=bool)
        mask[order["pos"].to_numpy()[repeat]] = True
        rows = frame[ROW].to_numpy()
        detail = pd.Series("", index=frame.index, dtype="string")
        detail.iloc[order["pos"].to_numpy()[repeat]] = [
            f"{key} '{frame.loc[p, key]}' already defined at row {rows[f]} "
            "(the most complete definition is kept)"
            for p, f in zip(order["pos"].to_numpy()[repeat], first[repeat])
        ]
        issues.add(mask, f"{key}: defined twice", detail)


def _check_references(
    frame: pd.DataFrame,
    issues: Issues,
    entities: dict[str, _Table],
    sources: list[InteractionSource],
    report: IdReport,
) -> None:
    """Events must name catalogue items; events of users missing from the users table are
    quarantined or accepted by their source's policy (and counted either way)."""
    for role, key in (("users", C.USER), ("items", C.ITEM)):
        if role not in entities:
            continue
        table = entities[role]
        known = table.frame.loc[~table.issues.bad(), key]
        unknown = (~frame[key].isin(known) & frame[key].notna()).to_numpy()
        if role == "items":
            report.items_outside_catalogue = int(frame.loc[unknown, key].nunique())
            issues.add(
                unknown,
                f"{key}: not in {role} table",
                quoted(frame[key], f" is not in the {role} table", key + " "),
            )
            continue
        policy = np.array([s.unknown_users == "accept" for s in sources], dtype=bool)
        accept = policy[frame[SRC].to_numpy()]
        report.users_with_events_not_in_users_table = int(frame.loc[unknown, key].nunique())
        report.users_not_in_users_table_accepted = int(frame.loc[unknown & accept, key].nunique())
        issues.add(
            unknown & ~accept,
            f"{key}: not in {role} table",
            quoted(frame[key], f" is not in the {role} table", key + " "),
        )


def _mark_exact_duplicates(
    frame: pd.DataFrame,
    issues: Issues,
    candidates: np.ndarray,
    columns: list[str],
    labels: list[str] | None = None,
) -> None:
    """Quarantine rows identical (after parsing) to an earlier valid row, keeping the first
    (``labels``: the rows come from several sources, named in the detail by their file)."""
    if not candidates.any():
        return
    positions = np.flatnonzero(candidates)
    positions = positions[_repeated(frame, positions, columns)]  # only these can be duplicates
    if not len(positions):
        return
    canon = _canonical(frame.iloc[positions][columns])
    group = canon.groupby(columns, dropna=False, sort=False).ngroup().to_numpy()
    first = pd.Series(positions).groupby(group).transform("first").to_numpy()
    dup = first != positions
    if not dup.any():
        return
    mask = np.zeros(len(frame), dtype=bool)
    mask[positions[dup]] = True
    rows, sources = frame[ROW].to_numpy(), frame[SRC].to_numpy() if labels else None
    original = dict(zip(positions[dup].tolist(), first[dup].tolist(), strict=True))

    def detail(flagged: np.ndarray) -> list[str]:
        return [
            f"exact duplicate of row {rows[original[p]]}"
            + (f" of {labels[sources[original[p]]]}" if labels else "")
            for p in flagged.tolist()
        ]

    issues.add(mask, "exact duplicate", detail)


def _resolve_conflicts(frame: pd.DataFrame, issues: Issues, rule: str) -> None:
    """Rows sharing (source, event, user, item, timestamp) with different values (rating and
    weight) conflict. ``quarantine``: every row of the conflict is quarantined; ``keep_highest``:
    the rows with the highest value are kept (the highest rating, the weight breaking ties).
    Neither depends on the order of the rows."""
    key = [c for c in (SRC, C.EVENT, C.USER, C.ITEM, C.TIMESTAMP) if c in frame.columns]
    values = [c for c in (C.RATING, C.WEIGHT) if c in frame.columns]
    ok = ~issues.bad()
    if not values or not ok.any():
        return
    candidates = np.flatnonzero(ok)
    candidates = candidates[_repeated(frame, candidates, key)]  # only rows sharing a key can conflict
    if not len(candidates):
        return
    sub = frame.iloc[candidates][[*key, *values]]
    sub["_value"] = sub.groupby(values, dropna=False, sort=False).ngroup()  # one per distinct value
    distinct = sub.groupby(key, dropna=False, sort=False)["_value"].transform("nunique").to_numpy() > 1
    if not distinct.any():
        return
    positions = candidates[distinct]
    if rule == "keep_highest":
        ranked = sub.sort_values(values, ascending=False, na_position="last", kind="stable")
        top = ranked.groupby(key, dropna=False, sort=False)["_value"].transform("first").reindex(sub.index)
        positions = positions[(sub["_value"] != top).to_numpy()[distinct]]
        why = "a row of the same source, event, user, item and time has a higher value"
    else:
        why = "another row of the same source, event, user, item and time has a different value"
    mask = np.zeros(len(frame), dtype=bool)
    mask[positions] = True
    issues.add(mask, "conflicting duplicate", f"{why} (data.conflicts: {rule})")


def _repeated(frame: pd.DataFrame, positions: np.ndarray, columns: list[str]) -> np.ndarray:
    """Which of the rows at ``positions`` share their 64-bit hash of ``columns`` with another of
    them: a superset of the rows that share their values, found with one hash per row, column by
    column, instead of grouping the whole table's values (equal values hash equally: floats are
    hashed with NaN and -0.0 taken as 0.0, since the comparison treats every NaN alike and -0.0
    as 0.0; lists as their joined text). The exact grouping then runs on these rows alone, so the
    result is the same as grouping every row."""
    whole = len(positions) == len(frame)
    combined = np.zeros(len(positions), dtype=np.uint64)
    for col in columns:
        values = frame[col] if whole else frame[col].iloc[positions]
        if pd.api.types.is_float_dtype(values.dtype):
            values = values.fillna(0.0) + 0.0
        elif values.dtype == object:
            values = _canonical(values.to_frame())[col]
        combined *= np.uint64(0x100000001B3)
        combined ^= pd.util.hash_pandas_object(values, index=False).to_numpy()
    order = np.argsort(combined)  # equal hashes side by side (less memory than a hash table)
    ranked = combined[order]
    same = ranked[1:] == ranked[:-1]
    out = np.zeros(len(positions), dtype=bool)
    out[order[1:][same]] = True
    out[order[:-1][same]] = True
    return out


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """List values (genres) as joined strings, so that rows can be hashed and compared."""
    return frame.apply(
        lambda col: (
            col.map(lambda v: "|".join(map(str, v)) if isinstance(v, list) else v)
            if col.dtype == object
            else col
        )
    )


# ------------------------------------------------------------------ accounting, quarantine


def _account(table: _Table, issues: Issues, report: IngestReport, parsed: pd.DataFrame) -> pd.DataFrame:
    """The table's quarantine rows (parsed rows with their reasons, malformed records with their
    raw line) and its report; proves accepted + quarantined == input rows. ``parsed``: the
    table's parsed rows, aligned with ``issues``."""
    q = _quarantine_rows(table, issues, parsed)
    rep = TableReport(table.key, table.label, table.input_rows)
    rep.nulled.update(table.nulled)
    rep.quarantined = len(q)
    rep.accepted = int((~issues.bad()).sum())
    rep.suppressed = table.suppressed
    for reason in q[C.Q_REASON]:
        for kind in reason.split("; "):
            rep.reasons[kind] += 1
    if rep.accepted + rep.quarantined + rep.suppressed != rep.input_rows:  # pragma: no cover - invariant
        raise AssertionError(f"{table.key}: accepted + quarantined + suppressed != input rows")
    if rep.accepted == 0 and table.role != "interactions":
        raise DataError(
            f"{table.role} file {table.label}: no row passed validation "
            f"({rep.quarantined} quarantined: {dict(rep.reasons)})"
        )
    report.tables[table.key] = rep
    return q


def _quarantine_rows(table: _Table, issues: Issues, parsed: pd.DataFrame) -> pd.DataFrame:
    bad = np.flatnonzero(issues.bad())
    rows = _raw_values(table, parsed.iloc[bad])
    values = [
        json.dumps({k: (None if pd.isna(v) else str(v)) for k, v in rec.items() if k != ROW})
        for rec in rows.to_dict(orient="records")
    ]
    parsed = pd.DataFrame(
        {
            C.Q_TABLE: table.key,
            C.Q_SOURCE: table.label,
            C.Q_ROW: rows[ROW].to_numpy(dtype=np.int64),
            C.Q_REASON: ["; ".join(issues.kinds(i)) for i in bad],
            "detail": ["; ".join(issues.details(i)) for i in bad],
            C.Q_VALUES: values,
            RAW: "",
        }
    )
    malformed = pd.DataFrame(
        {
            C.Q_TABLE: table.key,
            C.Q_SOURCE: table.label,
            C.Q_ROW: [m.row for m in table.malformed],
            C.Q_REASON: [m.reason for m in table.malformed],
            "detail": [m.detail for m in table.malformed],
            C.Q_VALUES: "",
            RAW: [m.raw for m in table.malformed],
        }
    )
    out = pd.concat([parsed, malformed], ignore_index=True) if len(malformed) else parsed
    return out.sort_values(C.Q_ROW, kind="stable").reset_index(drop=True) if len(out) else _empty_quarantine()


def _raw_values(table: _Table, parsed: pd.DataFrame) -> pd.DataFrame:
    """The values as read of the rows ``parsed`` holds (in its order): those its chunk
    quarantined were kept; the others are read again from the file, chunk by chunk, picked by
    row number. With pseudonyms, a row's user ID as read is shown as its pseudonym."""
    numbers = parsed[ROW].to_numpy(dtype=np.int64)
    kept = table.raw
    parts = [kept.loc[kept[ROW].isin(numbers)]]
    missing = np.setdiff1d(numbers, kept[ROW].to_numpy(dtype=np.int64))
    if len(missing):
        parts.append(_read_rows(table, missing))
    found = _concat(parts) if len(parts) > 1 else parts[0]
    raw = found.set_index(found[ROW].to_numpy(dtype=np.int64)).loc[numbers].reset_index(drop=True)
    if table.pseudonymised and C.USER in raw.columns:
        ids = parsed[C.USER].reset_index(drop=True)
        raw[C.USER] = ids.where(ids.notna(), raw[C.USER].astype("string"))
    return raw


def _read_rows(table: _Table, numbers: np.ndarray) -> pd.DataFrame:
    """Rows ``numbers`` (sorted) of the table's file as read, by a second chunked read."""
    parts = []
    chunks = iter(read_table(table.source, table.role))
    try:
        for chunk in chunks:
            rows = chunk[ROW].to_numpy(dtype=np.int64)
            pick = np.isin(rows, numbers)
            if pick.any():
                parts.append(chunk.loc[pick])
            if len(rows) and rows[-1] >= numbers[-1]:
                break
    finally:
        chunks.close()
    found = _concat(parts) if parts else pd.DataFrame(columns=table.columns)
    if len(found) != len(numbers):
        raise DataError(
            f"{table.role} file {table.label} changed while it was ingested: rows "
            f"{numbers[~np.isin(numbers, found[ROW].to_numpy())][:5].tolist()} are not where they were"
        )
    return found


def _empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype="int64" if c == C.Q_ROW else "object") for c in QUARANTINE_COLUMNS}
    )


def _finalise(
    accepted: dict[str, pd.DataFrame], has_events: bool
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    inter = accepted["interactions"]
    if not has_events and C.EVENT in inter.columns:
        inter = inter.drop(columns=[C.EVENT])
    users = accepted.get("users")
    items = accepted.get("items")
    if users is None:
        users = pd.DataFrame({C.USER: inter[C.USER].drop_duplicates().to_numpy()})
    else:  # users the events name but the users table does not (a source's policy accepted them)
        extra = pd.Index(inter[C.USER].unique()).difference(pd.Index(users[C.USER]))
        if len(extra):
            users = pd.concat([users, pd.DataFrame({C.USER: extra.to_numpy()})], ignore_index=True)
    if items is None:
        items = pd.DataFrame({C.ITEM: inter[C.ITEM].drop_duplicates().to_numpy()})
    for key in (C.USER, C.ITEM):
        table = users if key == C.USER else items
        ints = ids_are_integers(table[key]) and ids_are_integers(inter[key])
        dtype = "int64" if ints else "string"
        table[key] = table[key].astype(dtype)
        inter[key] = inter[key].astype(dtype)
    users = users.sort_values(C.USER, kind="stable").reset_index(drop=True)
    items = items.sort_values(C.ITEM, kind="stable").reset_index(drop=True)
    # the total order, then every other column: the result does not depend on the input row order
    order = [*C.TOTAL_ORDER, *([C.EVENT] if C.EVENT in inter else [])]
    order += [c for c in inter.columns if c not in order and inter[c].dtype != object]
    keys = _sort_keys(inter, order)  # NumPy's lexsort: the same order, a fraction of the time
    inter = inter.sort_values(order, kind="stable") if keys is None else inter.take(np.lexsort(keys[::-1]))
    return inter.reset_index(drop=True), users, items


def _sort_keys(frame: pd.DataFrame, columns: list[str]) -> list[np.ndarray] | None:
    """``columns`` as NumPy arrays whose stable lexicographic sort (:func:`numpy.lexsort`) is the
    order of ``frame.sort_values(columns, kind="stable")``: datetimes as int64, numbers as they
    are (NaN sorts last in both), text as its rank among the column's distinct values. None when
    a column has missing values NumPy would not sort last (then pandas sorts)."""
    keys = []
    for c in columns:
        col = frame[c]
        dtype = col.dtype
        if pd.api.types.is_float_dtype(dtype):
            keys.append(col.to_numpy(dtype=np.float64, na_value=np.nan))
            continue
        if col.isna().any():
            return None
        if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
            keys.append(col.array.asi8)
        elif pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            keys.append(col.to_numpy())
        elif isinstance(dtype, pd.StringDtype):
            keys.append(pd.factorize(col, sort=True)[0])
        else:
            return None
    return keys


def _sample_users(
    interactions: pd.DataFrame, users: pd.DataFrame, n: int, report: IngestReport
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded random sample of ``n`` users with interactions; the rest counted as sampled out."""
    candidates = np.sort(interactions[C.USER].unique())
    if n >= len(candidates):
        return interactions, users
    keep = np.random.default_rng(0).choice(candidates, size=n, replace=False)
    kept_inter = interactions[interactions[C.USER].isin(keep)].reset_index(drop=True)
    kept_users = users[users[C.USER].isin(keep)].reset_index(drop=True)
    for key, rep in report.tables.items():
        if key.startswith("interactions"):
            rep.sampled_out = 0
    first = next(k for k in report.tables if k.startswith("interactions"))
    report.tables[first].sampled_out = len(interactions) - len(kept_inter)
    if "users" in report.tables:
        report.tables["users"].sampled_out = len(users) - len(kept_users)
    return kept_inter, kept_users


# ------------------------------------------------------------------------- fingerprinting


def fingerprint_tables(*tables: pd.DataFrame) -> str:
    """SHA-256 over the content (column names, values, order) of the accepted tables."""
    digest = hashlib.sha256()
    for table in tables:
        digest.update(json.dumps(list(map(str, table.columns))).encode())
        canonical = _canonical(table)
        digest.update(pd.util.hash_pandas_object(canonical, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def write_processed(dataset: Dataset, root: Path | None = None) -> Dataset:
    """Write the validated tables, the quarantine, the consent table (when there is one) and the
    report as Parquet/JSON."""
    out = (root or processed_dir()) / dataset.name
    out.mkdir(parents=True, exist_ok=True)
    dataset.interactions.to_parquet(out / "interactions.parquet", index=False)
    dataset.users.to_parquet(out / "users.parquet", index=False)
    dataset.items.to_parquet(out / "items.parquet", index=False)
    dataset.quarantine.astype({C.Q_ROW: "int64"}).to_parquet(out / "quarantine.parquet", index=False)
    if dataset.consent is not None:
        dataset.consent.to_parquet(out / "consent.parquet", index=False)
    (out / "report.json").write_text(
        json.dumps(
            {
                "name": dataset.name,
                "fingerprint": dataset.fingerprint,
                "tables": dataset.report.to_dict(),
                "ids": dataset.report.ids.to_dict(),
                "merges": dataset.report.merges,
                "pseudonymised": dataset.report.pseudonymised,
                "k_anonymity": dataset.report.k_anonymity,
            },
            indent=2,
            default=str,
        )
    )
    return Dataset(**{**dataset.__dict__, "processed_path": out})
