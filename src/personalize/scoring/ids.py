"""Raw IDs -> contiguous indices, the same way in training and serving.

IDs are integers or strings. An integer index also finds an ID given as its decimal text
(``"196"`` or ``" 196"`` finds user 196) and a string index an ID given as an integer (196 finds
``"196"``); an ID that cannot be cast is absent (-1).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pandas as pd


def positions(index: pd.Index, ids: Any) -> np.ndarray:
    """Positions of ``ids`` in ``index`` (-1 where absent)."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    integer = pd.api.types.is_integer_dtype(index.dtype)
    if len(ids) <= 8:  # a hash lookup per ID beats building an Index for a few (serving)
        out = np.full(len(ids), -1, dtype=np.int64)
        for i, value in enumerate(ids):
            key = _as_int(value) if integer else _as_str(value)
            if key is not None:
                with contextlib.suppress(KeyError):
                    out[i] = index.get_loc(key)
        return out
    keys = pd.Index(ids)
    if integer and pd.api.types.is_integer_dtype(keys.dtype) and not pd.api.types.is_bool_dtype(keys.dtype):
        return index.get_indexer(keys).astype(np.int64)
    if not integer and keys.dtype != object and pd.api.types.is_string_dtype(keys.dtype):
        return index.get_indexer(keys.astype(index.dtype)).astype(np.int64)
    if integer:
        values = np.zeros(len(keys), dtype=np.int64)
        valid = np.zeros(len(keys), dtype=bool)
        for i, value in enumerate(keys):
            number = _as_int(value)
            if number is not None:
                values[i], valid[i] = number, True
        out = index.get_indexer(values).astype(np.int64)
        out[~valid] = -1
        return out
    text = [_as_str(v) for v in keys]
    out = index.get_indexer(pd.Index([t if t is not None else "" for t in text], dtype=index.dtype))
    out = out.astype(np.int64)
    out[[t is None for t in text]] = -1
    return out


def _as_int(value: Any) -> int | None:
    """An int64 from an integer or a decimal string, else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("-").isdecimal():
            return None
        value = int(text)
    elif isinstance(value, (float, np.floating)) and not float(value).is_integer():
        return None
    try:
        value = int(value)
    except (TypeError, ValueError):
        return None
    return value if -(2**63) <= value < 2**63 else None


def _as_str(value: Any) -> str | None:
    if value is None or isinstance(value, bool) or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return str(value)
