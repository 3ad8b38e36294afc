"""MovieLens-100K, read from the copy that ships inside the recbole wheel (no download).

Files (RecBole atomic format, tab-separated, typed headers):
``ml-100k.inter`` (user_id, item_id, rating 1-5, timestamp in epoch seconds),
``ml-100k.user`` (age, gender, occupation, zip_code),
``ml-100k.item`` (movie_title, release_year, class = space-separated genres).
Quirks handled here: item 267's title and year are the token 'unkonwn' (sic) and two items
have the genre 'unknown'; both become missing values, reported as such by ingestion.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from personalize.config.data import FILE_OPTIONS, DataConfig, InteractionSource, TableSource
from personalize.core import columns as C
from personalize.core.errors import DataError

NAME = "ml-100k"


def movielens_100k_dir() -> Path:
    """Directory of the ML-100K files inside the installed recbole package."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("MovieLens-100K ships inside the 'recbole' package, which is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / NAME
    if not (path / f"{NAME}.inter").exists():
        raise DataError(f"MovieLens-100K files not found under {path}")
    return path


def movielens_100k_config(options: DataConfig | None = None) -> DataConfig:
    """The ingestion config for the embedded ML-100K files, keeping the options of ``options``
    (a ``data:`` block with ``source: movielens-100k``) that apply to any files: timestamps,
    conflicts, events, seen, merge_duplicate_items, sample_users, write_processed."""
    root = movielens_100k_dir()
    options = options or DataConfig()
    kept = options.model_dump(include=set(FILE_OPTIONS))
    return DataConfig(
        source="files",
        name=NAME,
        interactions=InteractionSource(path=root / f"{NAME}.inter", format="recbole"),
        users=TableSource(path=root / f"{NAME}.user", format="recbole"),
        items=TableSource(
            path=root / f"{NAME}.item",
            format="recbole",
            columns={C.TITLE: "movie_title", C.YEAR: "release_year", C.GENRES: "class"},
            list_separator=" ",
            missing_values=["unkonwn", "unknown"],
        ),
        rating_range=(1, 5),
        **kept,
    )
