"""Reading input tables into raw string frames, with errors that name the file and column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from personalize.config.data import REQUIRED_COLUMNS, TableSource
from personalize.core.errors import DataError
from personalize.core.paths import project_root

ROW = "_row"  # 1-based data row number in the source file (header excluded)


def resolve_path(path: Path) -> Path:
    return path if path.is_absolute() else project_root() / path


def read_table(source: TableSource, role: str) -> pd.DataFrame:
    """Read ``source`` as the ``role`` table ('interactions', 'users' or 'items').

    Returns a frame whose columns carry the standard names (after ``source.columns``), whose
    text values are stripped strings with missing values as ``NA``, and with a ``_row``
    column holding each row's 1-based position in the file. Raises :class:`DataError` for an
    unreadable or empty file or a missing required column.
    """
    path = resolve_path(source.path)
    fmt = source.resolved_format()
    if not path.exists():
        raise DataError(f"{role} file not found: {path}")
    if path.is_dir():
        raise DataError(f"{role} file {path} is a directory, expected a {fmt} file")
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            sep = source.separator or {"csv": ",", "tsv": "\t", "recbole": "\t"}[fmt]
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False, engine="c")
    except pd.errors.EmptyDataError:
        raise DataError(f"{role} file {path} is empty (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise DataError(f"{role} file {path} cannot be read as {fmt}: {exc}") from None
    if fmt == "recbole":  # headers look like 'user_id:token'
        frame.columns = [str(c).split(":", 1)[0] for c in frame.columns]
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise DataError(f"{role} file {path} has a header but no rows")

    rename: dict[str, str] = {}
    for standard, in_file in source.columns.items():
        if in_file not in frame.columns:
            raise DataError(
                f"{role} file {path}: column '{in_file}' (mapped to '{standard}') not found; "
                f"the file has columns {list(frame.columns)}"
            )
        rename[in_file] = standard
    frame = frame.rename(columns=rename)
    for required in REQUIRED_COLUMNS[role]:
        if required not in frame.columns:
            raise DataError(
                f"{role} file {path}: required column '{required}' is missing; the file has "
                f"columns {list(frame.columns)} (map yours with data.{role}.columns)"
            )
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise DataError(f"{role} file {path}: duplicate column names {duplicated}")

    missing_tokens = {"", *source.missing_values}
    for col in frame.columns:
        if frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col]):
            values = frame[col].astype("string").str.strip()
            frame[col] = values.mask(values.isin(missing_tokens))
    frame.insert(0, ROW, range(1, len(frame) + 1))
    frame.attrs["source"] = str(path)
    return frame.reset_index(drop=True)
