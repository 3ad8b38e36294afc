"""Narrow views of results for notebooks: the few columns a reader needs (metric, interval,
p-value), formatted once, the same way everywhere.

Conventions: ``mean [low, high]`` cells (95% bootstrap interval over users); p-values to two
significant digits, the best model marked ``best``; a standard deviation over a single seed is
``-`` (undefined, not NaN); seeds read as ``3 seeds (0, 1, 2)`` or ``1 seed (0)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from personalize.core import columns as C
from personalize.evaluation.leaderboard import seeds_text


def interval(mean: float, low: float | None = None, high: float | None = None, digits: int = 4) -> str:
    """``0.1298 [0.1189, 0.1409]`` (just the mean when the interval is undefined)."""
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "-"
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def p_text(p: float | None) -> str:
    return "-" if p is None or pd.isna(p) else f"{p:.2g}"


def std_text(std: float | None, digits: int = 4) -> str:
    return "-" if std is None or pd.isna(std) else f"{std:.{digits}f}"


def leaderboard(
    table: pd.DataFrame,
    metric: str | None = None,
    extra: Sequence[str] = (),
    alpha: float = 0.05,
    slices: bool = True,
) -> pd.DataFrame:
    """The leaderboard as a reader needs it: model, family, seeds, ``metric`` with its interval,
    its standard deviation over seeds, the paired test against the best model (Holm-adjusted
    across the models of this leaderboard: the lab's one significance rule) and whether the
    model differs from the best at ``alpha``; then ``extra`` metrics (means) and, where the split
    has cold users, the warm and cold slices with their user counts."""
    metric = metric or next(c for c in table.columns if "@" in c and not c.endswith(("low", "high")))
    out = pd.DataFrame(
        {
            "model": table["model"],
            "family": table["family"],
            "seeds": table["seeds"].map(seeds_text),
            metric: [
                interval(m, lo, hi)
                for m, lo, hi in zip(table[metric], table.get(f"{metric} low"), table.get(f"{metric} high"))
            ],
            "std over seeds": table["std over seeds"].map(std_text),
            "p vs best (Holm)": ["best" if pd.isna(p) else p_text(p) for p in table["p vs best (Holm)"]],
            "differs from best": [
                "-" if pd.isna(p) else ("yes" if p < alpha else "no") for p in table["p vs best (Holm)"]
            ],
        }
    )
    for col in extra:
        if col in table.columns:
            out[col] = table[col].map(lambda v: f"{v:.4f}")
    if slices:
        for part in ("warm", "cold"):
            if f"{metric} {part}" in table.columns:
                out[f"{part} ({int(table[f'{part} users'].iloc[0])} users)"] = table[f"{metric} {part}"].map(
                    lambda v: f"{v:.4f}"
                )
    return out.reset_index(drop=True)


def comparison(table: pd.DataFrame, family: str) -> pd.DataFrame:
    """A paired comparison table (tuned vs default, hybrid vs parts): the difference with its
    interval and the p-values, ``family`` naming what the Holm adjustment is over."""
    out = pd.DataFrame()
    for col in table.columns:
        if col.endswith((" low", " high")):
            continue
        if f"{col} low" in table.columns:
            out[col] = [
                interval(m, lo, hi)
                for m, lo, hi in zip(table[col], table[f"{col} low"], table[f"{col} high"])
            ]
        elif col == "p" or col.startswith("p ("):
            out[col] = table[col].map(p_text)
        elif pd.api.types.is_float_dtype(table[col]):
            out[col] = table[col].map(lambda v: f"{v:.4f}")
        else:
            out[col] = table[col]
    out.attrs["note"] = f"Holm-adjusted across {family}"
    return out


def recommendations(frame: pd.DataFrame, titles: pd.Series | None = None) -> pd.DataFrame:
    """Recommendation rows with titles; the score column says what it is: the model's score
    where the model answered (``personalised``), the item's training interactions where the
    popularity fallback did (two scales, never mixed in one column)."""
    out = frame.copy()
    if titles is not None:
        out.insert(out.columns.get_loc(C.ITEM) + 1, "title", out[C.ITEM].map(titles))
    personal = out[C.PERSONALISED].to_numpy(dtype=bool)
    out["model score"] = np.where(personal, out[C.SCORE], np.nan)
    out["popularity (training interactions)"] = np.where(personal, np.nan, out[C.SCORE])
    out = out.drop(columns=[C.SCORE])
    for col in ("model score", "popularity (training interactions)"):
        if out[col].isna().all():
            out = out.drop(columns=[col])
    return out
