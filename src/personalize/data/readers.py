"""Reading input tables in chunks of string columns, with errors that name the file and column.

The engine: CSV and TSV files are tokenised by Python's ``csv`` module (C) in blocks of lines, so
that a malformed line (too many or too few fields, a stray quote, a NUL byte) becomes one
quarantined row with its line number and its raw text, and never refuses the whole file (a block
where every line is one record is parsed in one call; a block with an error or a record spanning
lines is parsed record by record); Parquet files are read by PyArrow in record batches. Either
way a table arrives as chunks of at most ``chunk_rows`` rows (Arrow's CSV reader
hands its invalid-row hook no row number when streaming, Polars truncates or refuses ragged
lines, and DuckDB numbers only the rejected lines: none of them can say which line every row came
from).

Every chunk has the standard column names (after ``source.columns``), text values as written
(surrounding spaces kept, for the record of what the file said) with missing values as ``NA``,
and a ``_row`` column: the row's 1-based record number in the file
(header excluded).
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from personalize.config.data import REQUIRED_COLUMNS, TableSource
from personalize.core.errors import DataError
from personalize.core.paths import project_root

ROW = "_row"  # 1-based data record number in the source file (header excluded)
CHUNK_ROWS = 250_000

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a long text field is a value, not an error


def resolve_path(path: Path) -> Path:
    return path if path.is_absolute() else project_root() / path


@dataclass
class Malformed:
    """A record that could not be parsed into the file's fields: kept whole, with why."""

    row: int
    raw: str
    reason: str
    detail: str


@dataclass
class TableReader:
    """Chunks of one input table (iterate once); ``malformed`` and ``input_rows`` are complete
    after the iteration."""

    source: TableSource
    role: str
    chunk_rows: int = CHUNK_ROWS
    malformed: list[Malformed] = field(default_factory=list)
    input_rows: int = 0

    def __post_init__(self) -> None:
        self.path = resolve_path(self.source.path)
        self.format = self.source.resolved_format()
        if not self.path.exists():
            raise DataError(f"{self.role} file not found: {self.path}")
        if self.path.is_dir():
            raise DataError(f"{self.role} file {self.path} is a directory, expected a {self.format} file")

    @property
    def label(self) -> str:
        return str(self.path)

    def __iter__(self) -> Iterator[pd.DataFrame]:
        chunks = self._parquet() if self.format == "parquet" else self._text()
        first = True
        for chunk in chunks:
            if first:
                self.columns = self._check_columns(list(chunk.columns))
                first = False
            yield self._standardise(chunk)
        if first:  # no chunk: no data row at all
            raise DataError(f"{self.role} file {self.path} has a header but no rows")

    # -------------------------------------------------------------------------- formats

    def _parquet(self) -> Iterator[pd.DataFrame]:
        import pyarrow.parquet as pq

        try:
            reader = pq.ParquetFile(self.path)
        except Exception as exc:
            raise DataError(f"{self.role} file {self.path} cannot be read as parquet: {exc}") from None
        start = 0
        for batch in reader.iter_batches(batch_size=self.chunk_rows):
            frame = batch.to_pandas()
            frame.insert(0, ROW, range(start + 1, start + len(frame) + 1))
            start += len(frame)
            self.input_rows = start
            yield frame

    def _text(self) -> Iterator[pd.DataFrame]:
        sep = self.source.separator or {"csv": ",", "tsv": "\t", "recbole": "\t"}[self.format]
        raw = self.path.open("rb")
        try:
            if raw.read(1) == b"":
                raise DataError(f"{self.role} file {self.path} is empty (no header, no rows)")
            raw.seek(0)
            text = io.TextIOWrapper(
                raw, encoding=_with_bom(self.source.encoding), errors="strict", newline=""
            )
            quoting = csv.QUOTE_NONE if self.format == "recbole" else csv.QUOTE_MINIMAL
            dialect = {"delimiter": sep, "quoting": quoting, "strict": True}
            reader = csv.reader(text, **dialect)
            header = self._header(reader)
            yield from self._records(text, reader.line_num, header, dialect)
        except UnicodeDecodeError:
            offset = _first_undecodable(self.path, self.source.encoding)
            raise DataError(
                f"{self.role} file {self.path}: the bytes at offset {offset} are not valid "
                f"{self.source.encoding}; set the file's encoding (e.g. encoding: latin-1)"
            ) from None
        finally:
            raw.close()

    def _header(self, reader) -> list[str]:
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{self.role} file {self.path} is empty (no header, no rows)") from None
        except csv.Error as exc:
            raise DataError(
                f"{self.role} file {self.path}: the header line cannot be parsed: {exc}"
            ) from None
        if self.format == "recbole":  # headers look like 'user_id:token'
            header = [str(c).split(":", 1)[0] for c in header]
        return [str(c).strip() for c in header]

    def _records(self, text, line: int, header: list[str], dialect: dict) -> Iterator[pd.DataFrame]:
        """Records in chunks of at most ``chunk_rows``. ``line``: the lines the header took.
        Malformed records keep the line span they took; their raw text is read back once the
        file is done, so that no copy of any line is kept while reading."""
        width = len(header)
        state = _State(record=0, line=line)
        spans: list[tuple[int, int]] = []
        carry: list[str] = []  # the lines of a record that goes on in the next block
        yielded = False
        while True:
            block = list(itertools.islice(text, self.chunk_rows))
            at_end = len(block) < self.chunk_rows
            lines = carry + block
            if not lines:
                break
            if len(carry) > self.chunk_rows:  # a quote that does not close: stream the rest
                rows, numbers = self._slow(itertools.chain(lines, text), width, state, spans, dialect, True)
                carry = []
                at_end = True
            else:
                fast = self._arrow(lines, header, dialect, state)
                if fast is not None:  # every line one well-formed record (or blank)
                    self.input_rows = state.record
                    if len(fast):
                        yield fast
                        yielded = True
                    if at_end:
                        break
                    continue
                rows, numbers, carry = self._block(lines, width, state, spans, dialect, at_end)
            if rows:
                self.input_rows = state.record
                yield _frame(rows, numbers, header)
                yielded = True
            if at_end and not carry:
                break
        self.input_rows = state.record
        if spans:
            for bad, raw in zip(self.malformed, self._lines(spans), strict=True):
                bad.raw = raw
        if state.record and not yielded:  # every record malformed: an empty chunk, all quarantined
            yield _frame([], [], header)

    def _arrow(
        self, lines: list[str], header: list[str], dialect: dict, state: _State
    ) -> pd.DataFrame | None:
        """The block parsed by Arrow's CSV reader (C++, about ten times faster than the csv
        module), when that cannot differ from the csv module: no quote character (quoting on) and
        no NUL byte in the block, and every non-blank line has the header's number of fields (else
        Arrow refuses the block and the csv module reads it). None when it does not apply."""
        joined = "".join(lines)
        if "\x00" in joined or (dialect["quoting"] != csv.QUOTE_NONE and '"' in joined):
            return None
        import pyarrow as pa
        import pyarrow.csv as pacsv

        names = [f"f{i}" for i in range(len(header))]
        try:
            table = pacsv.read_csv(
                io.BytesIO(joined.encode("utf-8")),
                read_options=pacsv.ReadOptions(column_names=names),
                parse_options=pacsv.ParseOptions(
                    delimiter=dialect["delimiter"], quote_char=False, ignore_empty_lines=True
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
                ),
            )
        except pa.ArrowInvalid:
            return None
        frame = table.to_pandas(types_mapper={pa.string(): pd.StringDtype()}.get)
        frame.columns = header
        frame.insert(0, ROW, np.arange(state.record + 1, state.record + len(frame) + 1, dtype=np.int64))
        state.record += len(frame)
        state.line += len(lines)
        return frame

    def _block(
        self, lines: list[str], width: int, state: _State, spans: list, dialect: dict, at_end: bool
    ) -> tuple[list[list[str]], list[int], list[str]]:
        """The records of a block of lines: (rows, record numbers, lines to carry over)."""
        try:
            parsed = list(csv.reader(lines, **dialect))
        except csv.Error:
            parsed = None
        if parsed is None or len(parsed) != len(lines):  # an error, or a record of several lines
            return (*self._slow(lines, width, state, spans, dialect, at_end, carry=True),)
        widths = np.fromiter(map(len, parsed), dtype=np.int64, count=len(parsed))
        present = widths > 0  # a blank line is not a record
        numbers = state.record + np.cumsum(present)
        lines_at = state.line + 1 + np.arange(len(parsed))
        good = widths == width
        for i in np.flatnonzero(present & ~good):
            many = "too many" if widths[i] > width else "too few"
            detail = f"{widths[i]} fields, expected {width} ({many})"
            self.malformed.append(Malformed(int(numbers[i]), "", "malformed line", detail))
            spans.append((int(lines_at[i]), int(lines_at[i])))
        state.record = int(numbers[-1])
        state.line += len(parsed)
        if good.all():
            return parsed, numbers.tolist(), []
        keep = np.flatnonzero(good)
        return [parsed[i] for i in keep], numbers[keep].tolist(), []

    def _slow(
        self,
        lines,
        width: int,
        state: _State,
        spans: list,
        dialect: dict,
        at_end: bool,
        carry: bool = False,
    ):
        """Record by record, with the line count after each. With ``carry``, a record still open
        at the end of the block (not of the file) is handed back as lines to carry over."""
        source = lines if isinstance(lines, list) else None
        reader = csv.reader(lines, **dialect)
        rows: list[list[str]] = []
        numbers: list[int] = []
        end = 0  # lines of this block consumed by finished records
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # a stray quote, a NUL byte, ...: the record is malformed
                if carry and not at_end and source is not None and reader.line_num >= len(source):
                    state.line += end
                    return rows, numbers, source[end:]  # the record may close in the next block
                state.record += 1
                self.malformed.append(Malformed(state.record, "", "malformed line", str(exc)))
                spans.append((state.line + end + 1, state.line + reader.line_num))
                end = reader.line_num
                continue
            if fields:  # a blank line is not a record
                state.record += 1
                if len(fields) == width:
                    rows.append(fields)
                    numbers.append(state.record)
                else:
                    many = "too many" if len(fields) > width else "too few"
                    detail = f"{len(fields)} fields, expected {width} ({many})"
                    self.malformed.append(Malformed(state.record, "", "malformed line", detail))
                    spans.append((state.line + end + 1, state.line + reader.line_num))
            end = reader.line_num
        state.line += end
        return (rows, numbers, []) if carry else (rows, numbers)

    def _lines(self, spans: list[tuple[int, int]]) -> list[str]:
        """The text of each (first, last) line span of the file (line endings dropped)."""
        out = ["" for _ in spans]
        wanted = sorted((first, last, i) for i, (first, last) in enumerate(spans))
        with self.path.open(encoding=_with_bom(self.source.encoding), newline="") as f:
            k, parts = 0, []
            for number, line in enumerate(f, 1):
                while k < len(wanted) and wanted[k][1] < number:  # an empty span: nothing read
                    k += 1
                if k == len(wanted):
                    break
                first, last, i = wanted[k]
                if number >= first:
                    parts.append(line)
                if number == last:
                    out[i] = "".join(parts).rstrip("\r\n")
                    parts, k = [], k + 1
        return out

    # ------------------------------------------------------------------- the columns

    def _check_columns(self, columns: list[str]) -> list[str]:
        columns = [c for c in columns if c != ROW]
        duplicated = sorted({c for c in columns if columns.count(c) > 1})
        if duplicated:
            raise DataError(f"{self.role} file {self.path}: duplicate column names {duplicated}")
        for standard, in_file in self.source.columns.items():
            if in_file not in columns:
                raise DataError(
                    f"{self.role} file {self.path}: column '{in_file}' (mapped to '{standard}') not found; "
                    f"the file has columns {columns}"
                )
        renamed = [self._rename.get(c, c) for c in columns]
        for required in REQUIRED_COLUMNS[self.role]:
            if required not in renamed:
                raise DataError(
                    f"{self.role} file {self.path}: required column '{required}' is missing; the file has "
                    f"columns {columns} (map yours with data.{self.role}.columns)"
                )
        return renamed

    @property
    def _rename(self) -> dict[str, str]:
        return {in_file: standard for standard, in_file in self.source.columns.items()}

    def _standardise(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.rename(columns=self._rename)
        missing_tokens = {"", *self.source.missing_values}
        for col in frame.columns:
            if col == ROW:
                continue
            if frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col]):
                values = frame[col].astype("string")
                frame[col] = values.mask(values.str.strip().isin(missing_tokens))
        return frame.reset_index(drop=True)


@dataclass
class _State:
    """Where a text file's reading stands: records and lines consumed so far."""

    record: int
    line: int


def _frame(rows: list[list[str]], numbers: list[int], header: list[str]) -> pd.DataFrame:
    """A chunk from rows of fields (column by column: much faster than row by row)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    frame = pd.DataFrame(
        {i: pd.array(list(col), dtype="string") for i, col in enumerate(columns)}, index=range(len(rows))
    )
    frame.columns = header  # repeated names are kept, for the check that refuses them
    frame.insert(0, ROW, pd.Series(numbers, dtype="int64"))
    return frame


def _with_bom(encoding: str) -> str:
    """UTF-8 read as 'utf-8-sig': a byte-order mark (spreadsheet exports write one) is not part
    of the first column's name."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def _first_undecodable(path: Path, encoding: str) -> int:
    """The byte offset of the first byte sequence ``encoding`` cannot decode."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 16):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return offset + exc.start
            offset += len(chunk)
    return offset


def read_table(source: TableSource, role: str, chunk_rows: int = CHUNK_ROWS) -> TableReader:
    """A reader of ``source`` as the ``role`` table ('interactions', 'users' or 'items');
    iterate it for the chunks. Raises :class:`DataError` for a missing, unreadable or empty file,
    undecodable text, or a missing required column."""
    return TableReader(source, role, chunk_rows)
