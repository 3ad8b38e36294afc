"""Quasi-identifiers: k-anonymity of a users table, and coarsening to raise it.

Attributes such as age, gender, occupation and zip code identify nobody alone, but together they
can single a person out. Over the quasi-identifiers ``Q`` present in the users table, users fall
into groups sharing every value of ``Q`` (a missing value is a value of its own);

    k = min over groups of |group|   (users)

and the table is *k-anonymous*: every user shares their quasi-identifiers with at least ``k - 1``
others. ``k == 1`` means at least one user is unique on ``Q``. Coarsening (:func:`coarsen`)
merges groups: age replaced by the lower bound of its band, the zip code cut to its first
characters, columns dropped; ingestion applies it to the users table before anything is written
and reports ``k`` before and after (:func:`k_report`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from personalize.config.privacy import CoarsenConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError

SIZE = "users"  # the group-size column of the group table


def k_anonymity(users: pd.DataFrame, quasi_identifiers: list[str]) -> tuple[int, pd.DataFrame]:
    """``(k, groups)``: the smallest group size over the quasi-identifiers present in ``users``
    (columns of the list that the table lacks are left out; with none present every user is in
    one group, ``k = len(users)``), and one row per group (its values and ``users``, the group
    size), smallest groups first. An empty table has ``k = 0``."""
    present = [c for c in quasi_identifiers if c in users.columns]
    if not len(users):
        return 0, pd.DataFrame(columns=[*present, SIZE])
    if not present:
        return len(users), pd.DataFrame({SIZE: [len(users)]})
    groups = (
        users[present]
        .astype(object)
        .where(users[present].notna(), None)
        .groupby(present, dropna=False, sort=False)
        .size()
        .rename(SIZE)
        .reset_index()
        .sort_values([SIZE, *present], kind="stable", key=_sort_key)
        .reset_index(drop=True)
    )
    return int(groups[SIZE].min()), groups


def _sort_key(col: pd.Series) -> pd.Series:
    return col if col.name == SIZE else col.astype(str)


def coarsen(users: pd.DataFrame, config: CoarsenConfig) -> pd.DataFrame:
    """``users`` with its quasi-identifiers coarsened (a copy; nothing else changes):

    - ``age_band_years = w``: ``age -> floor(age / w) * w`` (the band's lower bound, years;
      ``w = 10`` maps 25 and 29 to 20), missing ages stay missing;
    - ``zip_digits = n``: ``zip_code -> its first n characters`` (``n = 0`` drops the column);
    - ``drop``: those columns are removed.

    A ConfigError names a setting whose column the table does not have (or the ID column)."""
    out = users.copy()
    columns = list(users.columns)

    def need(column: str, setting: str) -> None:
        if column not in out.columns:
            raise ConfigError(
                f"data.privacy.coarsen.{setting}: the users table has no column {column!r} "
                f"(columns: {columns})"
            )

    if config.age_band_years is not None:
        need(C.AGE, "age_band_years")
        width = config.age_band_years
        age = pd.to_numeric(out[C.AGE], errors="raise")
        banded = np.floor(age.astype("float64") / width) * width
        out[C.AGE] = banded.astype(age.dtype) if pd.api.types.is_float_dtype(age) else banded.astype("Int64")
    if config.zip_digits is not None:
        need(C.ZIP, "zip_digits")
        if config.zip_digits == 0:
            out = out.drop(columns=[C.ZIP])
        else:
            out[C.ZIP] = out[C.ZIP].astype("string").str.slice(0, config.zip_digits)
    for column in config.drop:
        if column == C.USER:
            raise ConfigError("data.privacy.coarsen.drop: the user ID column cannot be dropped")
        if column in out.columns:
            out = out.drop(columns=[column])
        elif not (column == C.ZIP and config.zip_digits == 0):
            need(column, "drop")
    return out


def k_report(
    before: pd.DataFrame, after: pd.DataFrame, quasi_identifiers: list[str], k_target: int | None
) -> dict:
    """The ingestion report's ``k_anonymity`` entry (JSON-able): ``k`` before and after
    coarsening over the same users, the quasi-identifiers each was computed over, the number of
    groups and of users in groups smaller than the target, and whether ``k >= k_target``
    (None without a target)."""
    k_before, _ = k_anonymity(before, quasi_identifiers)
    k_after, groups = k_anonymity(after, quasi_identifiers)
    below = int(groups.loc[groups[SIZE] < k_target, SIZE].sum()) if k_target is not None else None
    return {
        "quasi_identifiers_before": [c for c in quasi_identifiers if c in before.columns],
        "quasi_identifiers": [c for c in quasi_identifiers if c in after.columns],
        "users": len(after),
        "before": k_before,
        "after": k_after,
        "groups": len(groups),
        "k_target": k_target,
        "met": None if k_target is None else bool(k_after >= k_target),
        "users_below_target": below,
    }
