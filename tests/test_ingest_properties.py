"""Property-based tests of ingestion: for any input files, ingestion either builds a dataset that
keeps every promise of :mod:`personalize.data.ingest`, or refuses with a :class:`DataError` that
names the file.

The generated inputs: a users table, an items table and one to three interaction sources (CSV,
TSV or Parquet, each with a fixed ``event`` or an event column), filled from small pools of cells
so that duplicates, conflicts and cross-table references happen often, with faults injected:
text in numeric fields, epoch numbers in the wrong unit, timestamps far in the future or before
1970, ISO strings with and without offsets, DST gaps and folds under ``assume_timezone``, IDs
beyond int64, empty IDs, IDs with spaces and leading zeros, ragged lines, stray quotes, NUL
bytes, exact and conflicting duplicates, latin-1 bytes with and without ``encoding: latin-1``,
empty files, header-only files, missing required columns, users missing from the users table
(either ``unknown_users`` policy) and items outside the items table.

The properties:

1. Only :class:`DataError` escapes; it names the file at fault, and the byte offset (undecodable
   text) or the column (missing or duplicated column) where that applies. A file that cannot be
   read at all (empty, header only, undecodable, a required column missing) always raises it.
2. Every row is accounted for, per table: ``accepted + quarantined == input rows`` in the report,
   in the quarantine frame (rows per table) and in the accepted frames; every quarantined row has
   a reason, and a record that could not be split into fields keeps its raw line.
3. Every accepted row satisfies the schema: IDs present and canonical, int64 exactly when every
   ID of that kind is an integer that fits int64; timestamps UTC inside
   ``[data.timestamp.earliest, now]``; ratings inside ``data.rating_range``; no exact duplicates;
   no two rows of one source, event, user, item and timestamp with different values.
4. The fingerprint and the accepted tables do not depend on the order of the data rows.

Examples are derandomised (the same ones on every run, so that CI is reproducible): the
``ingest-fast`` profile runs 30 to 40 per test (300 for the cheap timestamp parser), the
``ingest-slow`` profile 300 per test in the ``test_*_many`` tests, marked slow.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from personalize.config.data import DataConfig, InteractionSource, TableSource, TimestampConfig
from personalize.core import columns as C
from personalize.core.errors import DataError
from personalize.data import ingest

settings.register_profile(
    "ingest-fast",
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("ingest-slow", parent=settings.get_profile("ingest-fast"), max_examples=300)
FAST = settings(settings.get_profile("ingest-fast"))
PARSE = settings(settings.get_profile("ingest-fast"), max_examples=300)  # no files: cheap examples
SLOW = settings(settings.get_profile("ingest-slow"))

INT64 = (-(2**63), 2**63 - 1)
QUOTE_OPEN = "quote_open"  # an unclosed quote: the record runs on over the following lines

# ------------------------------------------------------------------------------------ cells

INT_IDS = st.integers(0, 12).map(str)
ID_SPELLINGS = st.sampled_from(["007", " 7", "7 ", "+7", "-3", "0", "-0", "00", "012", "１２", "٣"])
HUGE_IDS = st.sampled_from(
    [
        "99999999999999999999",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
    ]
)
TEXT_IDS = st.sampled_from(
    ["u1", "u 2", "U1", "é", "a,b", 'q"t', "x\x00y", "１２", "1.0", "1e3", "NA", "\t5"]
)
NO_ID = st.sampled_from([None, "", "  "])
ID_CELLS = {
    "int": st.one_of(INT_IDS, INT_IDS, ID_SPELLINGS, NO_ID),
    "huge": st.one_of(INT_IDS, ID_SPELLINGS, HUGE_IDS, NO_ID),
    "mixed": st.one_of(INT_IDS, ID_SPELLINGS, HUGE_IDS, TEXT_IDS, NO_ID),
}

RATINGS = st.sampled_from(
    ["1", "2", "3", "4", "5", "4.5", "0", "6", "-1", "lots", "", None, "nan", "inf", " 3 ", "1e0"]
)
WEIGHTS = st.sampled_from(["1", "0.5", "2", "0", "-1", "x", "", None, "nan"])
EVENTS = st.sampled_from(["view", "buy", " view", "", None, "click"])
AGES = st.sampled_from(["31", "abc", "200", "", None, "-5", "40.5"])
GENDERS = st.sampled_from(["M", "F", "", None, "é"])
TITLES = st.text(alphabet='ab ,"\n\récü\x00\t', max_size=6)
YEARS = st.sampled_from(["1995", "19x5", "3000", "", None, "2001.0"])
GENRES = st.sampled_from(["Drama|Comedy", "", None, "Action", "|"])

SCALE = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
SECONDS = st.integers(-(10**9), 1_750_000_000)


def _iso(moment: dt.datetime, sep: str, suffix: str) -> str:
    return (
        moment.isoformat(sep=sep, timespec="seconds" if moment.microsecond == 0 else "microseconds") + suffix
    )


ISO = st.builds(
    _iso,
    st.one_of(
        st.datetimes(min_value=dt.datetime(1950, 1, 1), max_value=dt.datetime(2030, 1, 1)),
        st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    ),
    st.sampled_from(["T", " "]),
    st.sampled_from(["Z", "+00:00", "+02:00", "-0500", "+14:00", "", "", "z", " +01:00"]),
)
DST = st.sampled_from(  # gaps and folds in Europe/Paris and America/New_York
    ["2021-03-28T02:30:00", "2021-10-31T02:30:00", "2021-03-14 02:30:00", "2021-11-07 01:30:00"]
)
ODD_TIMES = st.sampled_from(
    [
        "-1",
        "4102444800",
        "1e20",
        "1600000000.5",
        "1.6e9",
        "nan",
        "inf",
        "-inf",
        "1e400",
        "+1600000000",
        ".5",
        "99999999999999999999999",
        "yesterday",
        "2020-13-45T00:00:00Z",
        "2020-01-01T00:00:00 Europe/Paris",
        "2020-01-01",
        "",
        None,
        "1,600,000,000",
    ]
)


def timestamp_cells(unit: str) -> st.SearchStrategy[str | None]:
    """Epoch numbers in the configured unit and in the others, ISO strings, DST gaps, junk."""
    right = SECONDS.map(lambda s: str(s * SCALE[unit]))
    wrong = st.tuples(SECONDS, st.sampled_from(sorted(SCALE))).map(lambda t: str(t[0] * SCALE[t[1]]))
    return st.one_of(right, right, wrong, ISO, ISO, DST, ODD_TIMES)


PARQUET_TIMES = st.one_of(  # naive datetimes for Parquet timestamp columns
    st.datetimes(min_value=dt.datetime(1960, 1, 1), max_value=dt.datetime(2030, 1, 1)),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    st.sampled_from([dt.datetime(2021, 3, 28, 2, 30), dt.datetime(2021, 10, 31, 2, 30)]),
    st.none(),
)

# ------------------------------------------------------------------------------------ files

ROW_FAULTS = ["too_many", "too_few", "quote_literal", "quote_junk", QUOTE_OPEN]


@dataclass
class FileSpec:
    """One generated input file: its cells, and the faults to write into it."""

    stem: str
    fmt: str  # csv, tsv or parquet
    role: str  # users, items or interactions
    header: list[str]  # column names as written
    rows: list[list]  # cells (str or None; Parquet timestamps may be datetimes)
    faults: list[str]  # per row: "" or one of ROW_FAULTS (text files)
    mapping: dict[str, str] = field(default_factory=dict)  # standard name -> file column
    encoding: str = "utf-8"  # how the bytes are written
    config_encoding: str = "utf-8"  # what the source declares
    newline: str = "\n"
    blank_lines: int = 0  # blank lines appended between records
    file_fault: str = ""  # empty, header_only, missing_column, duplicate_column
    parquet_types: dict[str, str] = field(default_factory=dict)  # column -> int, float, utc, naive
    event: str | None = None  # interactions: the source's event
    unknown_users: str = "quarantine"

    @property
    def name(self) -> str:
        return f"{self.stem}.{self.fmt}"


@dataclass
class Scenario:
    users: FileSpec | None
    items: FileSpec | None
    sources: list[FileSpec]
    timestamp: TimestampConfig
    rating_range: tuple[float, float] | None
    conflicts: str

    @property
    def files(self) -> list[FileSpec]:
        """In the order ingestion reads them."""
        return [f for f in (self.users, self.items) if f is not None] + self.sources


@dataclass
class Written:
    path: Path
    records: int | None  # data records written (None: a broken quote makes it unknowable)
    fatal: str  # why the file cannot be read at all ("" when it can)
    offset: int | None = None  # first undecodable byte
    text: str | None = None  # a text file's content, as its declared encoding reads it


def _quote(cell: str, sep: str) -> str:
    if any(ch in cell for ch in (sep, '"', "\n", "\r")):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def _record(cells: list, sep: str, fault: str) -> str:
    fields = ["" if c is None else _quote(str(c), sep) for c in cells]
    if fault == "too_few" and len(fields) == 1:
        fault = "too_many"
    if fault == "too_many":
        fields.append("extra")
    elif fault == "too_few":
        fields.pop()
    elif fault == "quote_literal":
        plain = fields[0] if fields[0] and not fields[0].startswith('"') else "v"
        fields[0] = plain[0] + '"' + plain[1:]
    elif fault == "quote_junk":
        fields[0] = '"v"x'
    elif fault == QUOTE_OPEN:
        fields[0] = '"v'
    if len(fields) == 1 and fields[0] == "":
        return '""'  # a lone empty field, not a blank line
    return sep.join(fields)


def write_file(spec: FileSpec, folder: Path, rng: random.Random | None = None) -> Written:
    """Write ``spec`` under ``folder`` (data rows shuffled by ``rng``; the header stays first)."""
    path = folder / spec.name
    order = list(range(len(spec.rows)))
    if rng is not None:
        rng.shuffle(order)
    rows = [spec.rows[i] for i in order]
    faults = [spec.faults[i] for i in order]
    if spec.file_fault == "header_only":
        rows, faults = [], []
    if spec.fmt == "parquet":
        return _write_parquet(spec, path, rows)
    if spec.file_fault == "empty":
        path.write_bytes(b"")
        return Written(path, 0, "empty")
    sep = "," if spec.fmt == "csv" else "\t"
    header = spec.header
    if spec.file_fault == "duplicate_column":
        header = [*header, header[0]]
        rows = [[*r, r[0]] for r in rows]
    lines = [sep.join(_quote(h, sep) for h in header)]
    known = QUOTE_OPEN not in faults  # an unclosed quote runs on over the following lines
    for cells, fault in zip(rows, faults):
        lines.append(_record(cells, sep, fault))
        # a record broken on its first line, with line breaks in a later field: where it ends is lost
        known &= not (fault == "quote_junk" and any(c in lines[-1] for c in "\r\n"))
    for k in range(spec.blank_lines):
        lines.insert(1 + (k * 7) % len(lines), "")
    data = (spec.newline.join(lines) + spec.newline).encode(spec.encoding, errors="replace")
    path.write_bytes(data)
    records = len(rows) if known else None
    try:
        text = data.decode(spec.config_encoding)
    except UnicodeDecodeError as exc:
        return Written(path, records, "undecodable", exc.start)
    return Written(path, records, spec.file_fault if rows else "header_only", text=text)


def _write_parquet(spec: FileSpec, path: Path, rows: list[list]) -> Written:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if spec.file_fault == "empty":
        path.write_bytes(b"")
        return Written(path, 0, "empty")
    arrays = []
    for j, name in enumerate(spec.header):
        values = [r[j] for r in rows]
        kind = spec.parquet_types.get(name, "string")
        present = [v for v in values if v is not None]
        if kind == "int" and all(re.fullmatch(r"\s*[+-]?[0-9]+\s*", v) for v in present):
            ints = [None if v is None else int(v) for v in values]
            typed = all(INT64[0] <= v <= INT64[1] for v in ints if v is not None)
            arrays.append(pa.array(ints, pa.int64()) if typed else pa.array(values, pa.string()))
        elif kind == "float" and all(_float(v) is not None for v in present):
            arrays.append(pa.array([_float(v) for v in values], pa.float64()))
        elif kind in ("utc", "naive"):
            tz = "UTC" if kind == "utc" else None
            arrays.append(pa.array(values, pa.timestamp("us", tz=tz)))
        else:
            arrays.append(pa.array([None if v is None else str(v) for v in values], pa.string()))
    header = spec.header
    if spec.file_fault == "duplicate_column":
        header, arrays = [*header, header[0]], [*arrays, arrays[0]]
    pq.write_table(pa.Table.from_arrays(arrays, names=header), path)
    if not rows:
        return Written(path, 0, "header_only")
    return Written(path, len(rows), spec.file_fault)


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def build_config(scenario: Scenario, folder: Path, rng: random.Random | None = None):
    """Write every file; returns the DataConfig and the written files (in reading order)."""
    written = [write_file(spec, folder, rng) for spec in scenario.files]
    by_spec = dict(zip((id(s) for s in scenario.files), written))

    def source(spec: FileSpec, cls=TableSource, **extra):
        return cls(
            path=by_spec[id(spec)].path,
            columns=spec.mapping,
            encoding=spec.config_encoding,
            missing_values=["NA"] if spec.role == "users" else [],
            **extra,
        )

    sources = [
        source(s, InteractionSource, event=s.event, unknown_users=s.unknown_users) for s in scenario.sources
    ]
    config = DataConfig(
        source="files",
        interactions=sources if len(sources) > 1 else sources[0],
        users=source(scenario.users) if scenario.users else None,
        items=source(scenario.items) if scenario.items else None,
        timestamp=scenario.timestamp,
        rating_range=scenario.rating_range,
        conflicts=scenario.conflicts,
        write_processed=False,
    )
    return config, written


# ------------------------------------------------------------------------------- strategies

FILE_FAULTS = ["empty", "header_only", "missing_column", "duplicate_column"]


def rarely(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws."""
    return st.sampled_from([False] * (n // 2) + [True] + [False] * (n - 1 - n // 2))


@st.composite
def table_specs(
    draw, role: str, stem: str, cells: dict[str, st.SearchStrategy], formats: list[str], faults: bool = True
):
    """A file of ``role`` whose columns draw from ``cells`` (standard name -> strategy); with
    ``faults``, malformed records and now and then bytes in another encoding than declared."""
    fmt = draw(st.sampled_from(formats))
    names = list(cells)
    mapping = {}
    for name in names:
        if draw(rarely(3)):
            mapping[name] = name.replace("_id", "Id").capitalize()
    header = [mapping.get(name, name) for name in names]
    rows = [[draw(cells[name]) for name in names] for _ in range(draw(st.integers(1 if faults else 4, 10)))]
    spec = FileSpec(stem, fmt, role, header, rows, [""] * len(rows), mapping)
    if fmt == "parquet":
        column = dict(zip(names, header))
        if C.TIMESTAMP in column:
            kind = draw(st.sampled_from(["string", "int", "float", "utc", "naive"]))
            spec.parquet_types[column[C.TIMESTAMP]] = kind
            if kind in ("utc", "naive"):
                j = names.index(C.TIMESTAMP)
                for r in rows:
                    r[j] = draw(PARQUET_TIMES)
        for name in (C.USER, C.ITEM):
            if name in column and draw(st.booleans()):
                spec.parquet_types[column[name]] = "int"
        for name in (C.RATING, C.WEIGHT, C.AGE):
            if name in column and draw(st.booleans()):
                spec.parquet_types[column[name]] = "float"
        return spec
    spec.encoding = draw(st.sampled_from(["utf-8", "utf-8", "latin-1"]))
    spec.config_encoding = spec.encoding
    if faults:
        spec.faults = [draw(st.sampled_from([""] * 20 + ROW_FAULTS)) for _ in rows]
        if draw(rarely(6)):
            spec.config_encoding = draw(st.sampled_from(["utf-8", "latin-1"]))
    spec.newline = draw(st.sampled_from(["\n", "\r\n"]))
    spec.blank_lines = draw(st.sampled_from([0, 0, 0, 1, 2]))
    return spec


def with_file_fault(spec: FileSpec, fault: str, drop: str, keep_mapping: bool) -> FileSpec:
    """``spec`` with a file-level fault; ``missing_column`` drops the column of ``drop``."""
    if fault != "missing_column":
        return replace(spec, file_fault=fault)
    j = spec.header.index(spec.mapping.get(drop, drop))
    mapping = {k: v for k, v in spec.mapping.items() if k != drop or keep_mapping}
    if len(spec.header) == 1:  # the one column renamed
        return replace(spec, header=["other"], mapping=mapping, file_fault=fault)
    rows = [r[:j] + r[j + 1 :] for r in spec.rows]
    return replace(
        spec, header=spec.header[:j] + spec.header[j + 1 :], rows=rows, mapping=mapping, file_fault=fault
    )


@st.composite
def scenarios(
    draw, formats: tuple[str, ...] = ("csv", "csv", "tsv", "parquet"), n_sources=(1, 3), faults: bool = True
) -> Scenario:
    """Users, items and interaction sources over shared pools of IDs, times and values (each pool
    opens with two valid values, so that most examples keep some rows); now and then one file has
    a file-level fault. Without ``faults``: valid values only (one instant written several ways,
    IDs spelled several ways), so that duplicates and conflicts are the rule."""
    formats = list(formats)
    unit = draw(st.sampled_from(["s", "s", "ms", "us", "ns"]))
    timestamp = TimestampConfig(
        epoch_unit=unit,
        assume_timezone=draw(st.sampled_from([None, None, "UTC", "Europe/Paris", "America/New_York"])),
        reject_future=draw(st.sampled_from([True, True, True, False])),
        earliest=draw(st.sampled_from([dt.date(1970, 1, 1), dt.date(1970, 1, 1), dt.date(2000, 1, 1)])),
    )
    style = draw(st.sampled_from(["int", "int", "huge", "mixed", "mixed"]))

    def pool(valid, cells, size=4):  # without faults: small pools, many rows of one key
        return [draw(valid), draw(valid), *draw(st.lists(cells, max_size=size if faults else 1))]

    def pick(values):  # the valid head of a pool more often than the rest
        return st.one_of(st.sampled_from(values[:2]), st.sampled_from(values))

    good_time = st.integers(946_684_800, 1_700_000_000).map(lambda v: str(v * SCALE[unit]))
    if faults:
        ids, times_, ratings_, weights_ = ID_CELLS[style], timestamp_cells(unit), RATINGS, WEIGHTS
    else:
        ids = st.one_of(INT_IDS, ID_SPELLINGS, *([HUGE_IDS] if style != "int" else []))
        ids = ids if style != "mixed" else st.one_of(ids, st.sampled_from(["u1", "U1", "a,b", "é"]))
        instant = st.integers(946_684_800, 1_700_000_000).map(
            lambda v: dt.datetime(1970, 1, 1) + dt.timedelta(seconds=v)
        )
        times_ = st.one_of(
            good_time, st.builds(_iso, instant, st.sampled_from(["T", " "]), st.sampled_from(["Z", "+00:00"]))
        )
        ratings_ = st.sampled_from(["1", "2", "3", "4", "5", "4.5", " 3 ", "3.0"])
        weights_ = st.sampled_from(["1", "2", "0.5", "1.0"])
    users = pool(INT_IDS, ids)
    items = pool(INT_IDS, ids)
    times = pool(good_time, times_, 3)
    ratings = pool(st.sampled_from(["1", "3", "5"]), ratings_, 2)
    weights = pool(st.sampled_from(["1", "2"]), weights_, 2)
    stranger = st.one_of(ids, st.sampled_from(["404", "u404"]))
    user_cell = st.one_of(pick(users), pick(users), *([stranger] if faults else []))
    item_cell = st.one_of(pick(items), pick(items), *([stranger] if faults else []))

    users_spec = items_spec = None
    if draw(st.booleans()):
        cells = {C.USER: pick(users)}
        if draw(st.booleans()):
            cells |= {C.AGE: AGES, C.GENDER: GENDERS}
        users_spec = draw(table_specs("users", "users", cells, formats, faults))
    if draw(st.booleans()):
        cells = {C.ITEM: pick(items)}
        if draw(st.booleans()):
            cells |= {C.TITLE: TITLES, C.YEAR: YEARS, C.GENRES: GENRES}
        items_spec = draw(table_specs("items", "items", cells, formats, faults))

    sources = []
    layout = (draw(st.booleans()), draw(st.booleans()))  # without faults: one layout for every source
    for k in range(draw(st.integers(*n_sources))):
        cells = {C.USER: user_cell, C.ITEM: item_cell, C.TIMESTAMP: pick(times)}
        if layout[0] if not faults else draw(st.booleans()):
            cells[C.RATING] = pick(ratings)
        if layout[1] if not faults else draw(rarely(3)):
            cells[C.WEIGHT] = pick(weights)
        event = draw(st.sampled_from(["view", "buy", None] if faults else ["view", "buy"]))
        if event is None:
            cells[C.EVENT] = st.one_of(st.sampled_from(["view", "buy"]), EVENTS)
        spec = draw(table_specs("interactions", f"events{k}", cells, formats, faults))
        spec.event = event
        spec.unknown_users = draw(st.sampled_from(["quarantine", "accept"]))
        sources.append(spec)

    scenario = Scenario(
        users_spec,
        items_spec,
        sources,
        timestamp,
        rating_range=draw(st.sampled_from([None, (1.0, 5.0), (0.5, 5.0)])),
        conflicts=draw(st.sampled_from(["quarantine", "keep_highest"])),
    )
    if faults and draw(rarely(4)):
        files = scenario.files
        target = draw(st.sampled_from(range(len(files))))
        spec = files[target]
        fault = draw(st.sampled_from(FILE_FAULTS))
        drop = draw(st.sampled_from([h for h in (C.USER, C.ITEM, C.TIMESTAMP) if h in _standard(spec)]))
        faulty = with_file_fault(spec, fault, drop, draw(st.booleans()))
        if target < len(files) - len(sources):
            setattr(scenario, spec.role, faulty)
        else:
            scenario.sources[target - (len(files) - len(sources))] = faulty
    return scenario


def _standard(spec: FileSpec) -> list[str]:
    inverse = {v: k for k, v in spec.mapping.items()}
    return [inverse.get(h, h) for h in spec.header]


def clean(scenario: Scenario) -> Scenario:
    """The scenario without the file-level faults that make every order fail alike."""

    def fixed(spec: FileSpec | None) -> FileSpec | None:
        if spec is None or spec.file_fault not in ("empty", "header_only", "duplicate_column"):
            return spec
        return replace(spec, file_fault="")

    return replace(
        scenario,
        users=fixed(scenario.users),
        items=fixed(scenario.items),
        sources=[fixed(s) for s in scenario.sources],
    )


# ---------------------------------------------------------------------------------- oracle


def run(scenario: Scenario, rng: random.Random | None = None):
    """Ingest the scenario in a fresh folder: (dataset or None, the DataError or None, files)."""
    with tempfile.TemporaryDirectory() as tmp:
        config, written = build_config(scenario, Path(tmp), rng)
        try:
            dataset = ingest(config)
        except DataError as exc:
            check_error(exc, scenario, written)
            return None, exc, written
        after = pd.Timestamp.now(tz="UTC")
    check_dataset(dataset, scenario, config, written, after)
    return dataset, None, written


def check_error(exc: DataError, scenario: Scenario, written: list[Written]) -> None:
    message = str(exc)
    assert any(str(w.path) in message for w in written), f"the error names no input file: {message}"
    fatal = [(spec, w) for spec, w in zip(scenario.files, written) if w.fatal]
    if not fatal:
        return  # a table with no valid row
    spec, w = fatal[0]  # files are read in order: the first unreadable one stops ingestion
    assert str(w.path) in message, f"expected an error about {w.path} ({w.fatal}): {message}"
    expected = {
        "empty": "is empty" if spec.fmt != "parquet" else "cannot be read as parquet",
        "header_only": "has a header but no rows",
        "missing_column": "column '",
        "duplicate_column": "duplicate column names",
        "undecodable": f"the bytes at offset {w.offset} are not valid",
    }[w.fatal]
    assert expected in message, f"expected {expected!r} in: {message}"


def _is_int64(value: str) -> bool:
    return bool(re.fullmatch(r"-?(0|[1-9][0-9]*)", value)) and INT64[0] <= int(value) <= INT64[1]


def check_ids(values: pd.Series, name: str) -> None:
    assert values.notna().all(), f"{name}: a missing ID was accepted"
    if values.dtype == "int64":
        return
    assert pd.api.types.is_string_dtype(values), f"{name}: dtype {values.dtype}"
    text = values.astype(str)
    assert (text == text.str.strip()).all() and (text != "").all(), f"{name}: ID not canonical"
    integers = text.str.fullmatch(r"[+-]?[0-9]+")
    assert (text[integers] == text[integers].map(lambda v: str(int(v)))).all(), (
        f"{name}: integer ID not canonical: {sorted(text[integers])}"
    )


def check_dataset(d, scenario: Scenario, config: DataConfig, written: list[Written], after) -> None:
    """Properties 2 and 3 on an ingested dataset (``after``: a time after ingestion)."""
    fatal = [w for w in written if w.fatal]
    assert not fatal, f"{fatal[0].path} ({fatal[0].fatal}) was read without an error"
    tables = d.report.tables
    keys = [k for k, s in (("users", scenario.users), ("items", scenario.items)) if s is not None]
    several = len(scenario.sources) > 1
    keys += [f"interactions.{s.stem}" if several else "interactions" for s in scenario.sources]
    assert sorted(tables) == sorted(keys)
    q = d.quarantine
    for (key, rep), w in zip(((k, tables[k]) for k in keys), written):
        assert rep.source == str(w.path)
        assert rep.accepted + rep.quarantined == rep.input_rows, key
        if w.records is not None:
            assert rep.input_rows == w.records, f"{key}: {rep.input_rows} rows read, {w.records} written"
        mine = q[q[C.Q_TABLE] == key]
        assert len(mine) == rep.quarantined, key
        assert sum(rep.reasons.values()) >= rep.quarantined
        assert mine[C.Q_ROW].is_unique and mine[C.Q_ROW].between(1, rep.input_rows).all(), key
        assert (mine[C.Q_REASON].str.len() > 0).all() and (mine["detail"].str.len() > 0).all(), key
        malformed = mine[C.Q_REASON] == "malformed line"
        for raw in mine.loc[malformed, "raw"]:
            assert raw and w.text is not None and raw in w.text, f"{key}: {raw!r} is not a line of the file"
        assert (mine.loc[~malformed, "raw"] == "").all()
        for values in mine.loc[~malformed, C.Q_VALUES]:
            assert isinstance(json.loads(values), dict)

    inter, users, items = d.interactions, d.users, d.items
    n_accepted = sum(tables[k].accepted for k in keys if k.startswith("interactions"))
    assert len(inter) == n_accepted > 0
    for table, key in ((users, C.USER), (items, C.ITEM)):
        assert table[key].is_unique, f"{key} defined twice in the accepted table"
        assert table[key].dtype == inter[key].dtype, key
        assert set(inter[key]) <= set(table[key]), f"events of {key}s outside the {key} table"
        check_ids(inter[key], key)
        check_ids(table[key], key)
        ints = all(_is_int64(str(v)) for v in pd.concat([table[key], inter[key]]).astype(str))
        assert (table[key].dtype == "int64") == ints, f"{key}: int64 is {table[key].dtype == 'int64'}"
    if scenario.users is not None:
        accepting = any(s.unknown_users == "accept" for s in scenario.sources)
        assert len(users) == tables["users"].accepted or accepting
    else:
        assert set(users[C.USER]) == set(inter[C.USER])
    if scenario.items is not None:
        assert len(items) == tables["items"].accepted
    else:
        assert set(items[C.ITEM]) == set(inter[C.ITEM])

    ts = inter[C.TIMESTAMP]
    assert str(ts.dtype) == "datetime64[ns, UTC]" and ts.notna().all()
    earliest = pd.Timestamp(scenario.timestamp.earliest, tz="UTC")
    assert (ts >= earliest).all(), f"accepted timestamps before {earliest}: {sorted(ts[ts < earliest])}"
    if scenario.timestamp.reject_future:
        assert (ts <= after).all(), f"accepted timestamps in the future: {sorted(ts[ts > after])}"
    for col in (C.RATING, C.WEIGHT):  # missing only in the rows of sources without the column
        if col in inter and all(col in _standard(s) for s in scenario.sources):
            assert inter[col].notna().all(), f"accepted rows without a {col}"
    if C.RATING in inter and scenario.rating_range is not None:
        rating = inter[C.RATING].dropna()
        assert rating.between(*scenario.rating_range).all(), f"ratings outside the range: {sorted(rating)}"
    if C.WEIGHT in inter:
        assert (inter[C.WEIGHT].dropna() >= 0).all(), "negative weights accepted"
    if C.EVENT in inter:
        assert inter[C.EVENT].notna().all(), "accepted events without an event type"
    assert not inter.duplicated().any(), "exact duplicates accepted"
    events = [s.event for s in scenario.sources]
    if len(events) == 1 or (None not in events and len(set(events)) == len(events)):
        # the event tells the source apart: no key may carry two different values
        key = [c for c in (C.EVENT, C.USER, C.ITEM, C.TIMESTAMP) if c in inter]
        values = [c for c in (C.RATING, C.WEIGHT) if c in inter]
        if values:
            distinct = inter.drop_duplicates([*key, *values]).duplicated(key)
            assert not distinct.any(), f"conflicting rows accepted ({config.conflicts})"


def same_result(a, b) -> None:
    assert a.fingerprint == b.fingerprint
    for name in ("interactions", "users", "items"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    for key, rep in a.report.tables.items():
        other = b.report.tables[key]
        assert (rep.input_rows, rep.accepted, rep.quarantined) == (
            other.input_rows,
            other.accepted,
            other.quarantined,
        ), key
        assert rep.reasons == other.reasons, key


# ------------------------------------------------------------------------ timestamps alone

EPOCH = dt.datetime(1970, 1, 1)
NOW = pd.Timestamp("2025-06-01T12:00:00Z")  # a fixed 'time of ingestion'


@dataclass
class TimeCase:
    """One timestamp cell and the instant it denotes (ns since 1970 UTC; None: no instant,
    e.g. a local time a DST change skips or repeats, or no zone to read a naive time in)."""

    text: str
    instant: int | None


def _ns(moment: dt.datetime) -> int:
    return (moment - EPOCH) // dt.timedelta(microseconds=1) * 1000


@st.composite
def time_cases(draw, unit: str, zone: str | None, digits: int) -> TimeCase:
    """A cell of one of the forms a file may hold; ISO strings with ``digits`` digits of a second
    (0, 6 or 9: one precision per file, as a real export writes them)."""
    kind = draw(st.sampled_from(["epoch", "epoch", "iso", "iso", "naive"]))
    if kind == "epoch":
        written = draw(st.sampled_from(sorted(SCALE)))
        seconds = draw(
            st.one_of(
                st.integers(0, 1_750_000_000), st.integers(0, 1_750_000_000), st.integers(-(10**11), 10**11)
            )
        )
        number = seconds * SCALE[written] + draw(st.integers(0, SCALE[written] - 1))
        factor = 10**9 // SCALE[unit]
        return TimeCase(draw(st.sampled_from(["", "+"])) + str(number), number * factor)
    moment = draw(
        st.one_of(
            st.datetimes(min_value=dt.datetime(1960, 1, 1), max_value=dt.datetime(2030, 1, 1)),
            st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)),
            st.sampled_from([dt.datetime(2021, 3, 28, 2, 30), dt.datetime(2021, 10, 31, 2, 30)]),
            st.sampled_from([dt.datetime(2021, 3, 14, 2, 30), dt.datetime(2021, 11, 7, 1, 30)]),
        )
    )
    fraction, moment = moment.microsecond, moment.replace(microsecond=0)
    text = moment.isoformat(sep=draw(st.sampled_from(["T", " "])))
    extra = 0
    if digits:  # a fraction of a second, to the microsecond or the nanosecond
        extra = fraction * 1000 + (draw(st.integers(0, 999)) if digits == 9 else 0)
        text += "." + f"{extra:09d}"[:digits]
    if kind == "naive":
        if zone is None:
            return TimeCase(text, None)
        from zoneinfo import ZoneInfo

        early, late = (moment.replace(tzinfo=ZoneInfo(zone), fold=f).utcoffset() for f in (0, 1))
        if early != late:  # skipped or repeated by a DST change
            return TimeCase(text, None)
        return TimeCase(text, _ns(moment - early) + extra)
    minutes = draw(st.sampled_from([0, 0, 120, -300, 840, -720, 330]))
    sign = "+" if minutes >= 0 else "-"
    hh, mm = divmod(abs(minutes), 60)
    suffix = draw(
        st.sampled_from(
            [
                "Z" if minutes == 0 else f"{sign}{hh:02d}:{mm:02d}",
                f"{sign}{hh:02d}{mm:02d}",
                f"{sign}{hh:02d}:{mm:02d}",
            ]
        )
    )
    return TimeCase(text + suffix, _ns(moment - dt.timedelta(minutes=minutes)) + extra)


@PARSE
@given(
    st.sampled_from(sorted(SCALE)),
    st.sampled_from([None, "UTC", "Europe/Paris", "America/New_York"]),
    st.booleans(),
    st.sampled_from([dt.date(1970, 1, 1), dt.date(2000, 1, 1)]),
    st.sampled_from([0, 6, 9]),
    st.data(),
)
def test_timestamps_parse_to_their_instant_or_are_quarantined(
    unit, zone, reject_future, earliest, digits, data
):
    """A parsed timestamp is the instant the text denotes, to the nanosecond, or the row is
    quarantined; one that denotes an instant inside the window is accepted."""
    from personalize.data.validate import Issues, parse_timestamps

    cases = data.draw(st.lists(time_cases(unit, zone, digits), min_size=1, max_size=12))
    cfg = TimestampConfig(
        epoch_unit=unit, assume_timezone=zone, reject_future=reject_future, earliest=earliest
    )
    issues = Issues(len(cases))
    out = parse_timestamps(pd.Series([c.text for c in cases], dtype="string"), cfg, issues, NOW)
    assert str(out.dtype) == "datetime64[ns, UTC]"
    low = pd.Timestamp(earliest, tz="UTC").value
    high = NOW.value if reject_future else pd.Timestamp.max.value
    for i, (case, value, bad) in enumerate(zip(cases, out, issues.bad())):
        inside = case.instant is not None and low <= case.instant <= high
        if bad:
            assert not inside, f"{case.text!r} ({case.instant} ns) wrongly quarantined: {issues.kinds(i)}"
        else:
            assert case.instant is not None and inside, f"{case.text!r} accepted as {value}"
            assert value.value == case.instant, f"{case.text!r} parsed as {value}, is {case.instant} ns"


# ----------------------------------------------------------------------------------- tests


@FAST
@given(scenarios())
def test_any_files_ingest_or_fail_with_a_data_error(scenario):
    run(scenario)


def check_row_order(scenario: Scenario, rng: random.Random) -> None:
    """Ingest the scenario, then again with every file's data rows shuffled: the same result."""
    scenario = clean(scenario)
    first, _, written = run(scenario)
    if first is None or any(w.records is None for w in written):
        return  # no dataset, or a broken quote joins records differently in another order
    shuffled, again, _ = run(scenario, rng)
    assert again is None, f"shuffling the rows made ingestion fail: {again}"
    same_result(first, shuffled)


@FAST
@given(scenarios(), st.randoms(use_true_random=False))
def test_row_order_does_not_matter(scenario, rng):
    check_row_order(scenario, rng)


@FAST
@given(scenarios(formats=("csv", "tsv"), n_sources=(1, 1)))
def test_text_faults_in_one_source(scenario):
    run(scenario)


@settings(settings.get_profile("ingest-fast"), max_examples=40)
@given(scenarios(faults=False, n_sources=(1, 2)), st.randoms(use_true_random=False))
def test_duplicates_and_conflicts_whatever_the_order(scenario, rng):
    check_row_order(scenario, rng)


@pytest.mark.slow
@SLOW
@given(scenarios())
def test_any_files_ingest_or_fail_with_a_data_error_many(scenario):
    run(scenario)


@pytest.mark.slow
@SLOW
@given(scenarios(), st.randoms(use_true_random=False))
def test_row_order_does_not_matter_many(scenario, rng):
    check_row_order(scenario, rng)


@pytest.mark.slow
@SLOW
@given(scenarios(faults=False, n_sources=(1, 3)), st.randoms(use_true_random=False))
def test_duplicates_and_conflicts_whatever_the_order_many(scenario, rng):
    check_row_order(scenario, rng)


def test_reasons_are_counted_per_table():
    """The oracle itself: a hand-made scenario with known counts."""
    users = FileSpec("users", "csv", "users", [C.USER], [["1"], ["2"], ["2"]], ["", "", ""])
    events = FileSpec(
        "events",
        "csv",
        "interactions",
        [C.USER, C.ITEM, C.TIMESTAMP],
        [["1", "a", "1600000000"], ["3", "a", "1600000000"], ["2", "b", "x"], ["1", "a", "1"]],
        ["", "", "", "too_many"],
    )
    scenario = Scenario(users, None, [events], TimestampConfig(), None, "quarantine")
    d, error, _ = run(scenario)
    assert error is None
    assert Counter(d.quarantine[C.Q_REASON]) == Counter(
        {
            "exact duplicate": 1,
            "user_id: not in users table": 1,
            "timestamp: unparseable": 1,
            "malformed line": 1,
        }
    )
    assert len(d.interactions) == 1
