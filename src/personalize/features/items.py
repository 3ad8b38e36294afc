"""Item content vectors: structured attributes, TF-IDF over text, dense sentence embeddings.

Every builder takes the item table (rows in catalogue order, as ``InteractionData.items``) and
returns one row per item. :func:`item_vectors` is the one entry point models use; its rows are
L2-normalised (an item with no content keeps a zero row), so that an inner product of two rows
is their cosine similarity.

Sources:

- ``genres``: genre one-hot (1 per genre of the item) next to a one-hot release-year bucket of
  ``year_bucket_years`` years scaled by ``year_weight``; an item without a year has no bucket.
- ``tfidf``: TF-IDF (scikit-learn, smoothed idf, sublinear tf) of the title words and, separately,
  of the genres (each genre one token); each block is L2-normalised, scaled by its weight, and
  the two are concatenated. IDF is computed over the catalogue, which is known at the cut-off.
- ``dense``: all-MiniLM-L6-v2 sentence embeddings of :func:`personalize.features.text.item_texts`
  (title, year and genres), cached on disk by (model name, texts) hash.

:func:`tfidf_text_vectors` is a fast dense stand-in for the sentence embeddings (milliseconds
per thousand items instead of minutes for a large catalogue): TF-IDF of the same item texts
(plus a free-text ``description`` column where the table has one) reduced to a fixed width by
a seeded truncated SVD (latent semantic analysis).
"""

from __future__ import annotations

import contextlib
import re
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from personalize.core import columns as C

VectorSource = Literal["genres", "tfidf", "dense"]
VECTOR_SOURCES: tuple[str, ...] = ("genres", "tfidf", "dense")
_WORD = re.compile(r"(?u)\b\w[\w']*\b")


def genre_lists(items: pd.DataFrame) -> list[list[str]]:
    """Each item's genres as a list (an empty list where missing)."""
    if C.GENRES not in items.columns:
        return [[] for _ in range(len(items))]
    return [
        [str(g) for g in v] if isinstance(v, (list, tuple, np.ndarray)) else []
        for v in items[C.GENRES].tolist()
    ]


def genre_one_hot(items: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """(items x genres) 0/1 float32 matrix and the genre vocabulary (sorted)."""
    lists = genre_lists(items)
    vocab = sorted({g for genres in lists for g in genres})
    col = {g: j for j, g in enumerate(vocab)}
    out = np.zeros((len(items), len(vocab)), dtype=np.float32)
    for i, genres in enumerate(lists):
        for g in genres:
            out[i, col[g]] = 1.0
    return out, vocab


def year_buckets(items: pd.DataFrame, years: int = 10) -> tuple[np.ndarray, list[str]]:
    """(items x buckets) one-hot release-year buckets of ``years`` years (e.g. '1990-1999').

    Buckets start at multiples of ``years``; an item without a year gets a zero row.
    """
    if years < 1:
        raise ValueError(f"year bucket width must be >= 1 year, got {years}")
    if C.YEAR not in items.columns:
        return np.zeros((len(items), 0), dtype=np.float32), []
    year = pd.to_numeric(items[C.YEAR], errors="coerce").to_numpy(dtype=np.float64)
    known = ~np.isnan(year)
    start = np.where(known, np.floor(np.where(known, year, 0) / years) * years, np.nan)
    labels = sorted({int(s) for s in start[known]})
    col = {s: j for j, s in enumerate(labels)}
    out = np.zeros((len(items), len(labels)), dtype=np.float32)
    for i in np.flatnonzero(known):
        out[i, col[int(start[i])]] = 1.0
    return out, [f"{s}-{s + years - 1}" for s in labels]


def structured_item_vectors(
    items: pd.DataFrame, year_bucket_years: int = 10, year_weight: float = 0.5
) -> np.ndarray:
    """[genre one-hot | year_weight * year-bucket one-hot], float32, not normalised."""
    genres, _ = genre_one_hot(items)
    years, _ = year_buckets(items, year_bucket_years)
    return np.hstack([genres, np.float32(year_weight) * years]).astype(np.float32)


def _titles(items: pd.DataFrame) -> list[str]:
    if C.TITLE not in items.columns:
        return ["" for _ in range(len(items))]
    return [t if isinstance(t, str) else "" for t in items[C.TITLE].tolist()]


def tfidf_item_vectors(
    items: pd.DataFrame, title_weight: float = 1.0, genre_weight: float = 1.0, min_df: int = 1
) -> sp.csr_matrix:
    """[title_weight * tfidf(title words) | genre_weight * tfidf(genres)] as CSR float32.

    Title words are lower-cased word tokens (English stop words removed); each genre is one
    token. TF-IDF: tf = 1 + log(count), idf = 1 + ln((1 + n) / (1 + df)), each block's rows
    L2-normalised before weighting. A block whose vocabulary is empty contributes nothing.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    blocks = []
    if title_weight > 0:
        titles = _titles(items)
        vec = TfidfVectorizer(
            token_pattern=_WORD.pattern,
            lowercase=True,
            stop_words="english",
            sublinear_tf=True,
            min_df=min_df,
            dtype=np.float32,
        )
        with contextlib.suppress(ValueError):  # an empty vocabulary contributes nothing
            blocks.append(title_weight * vec.fit_transform(titles))
    if genre_weight > 0:
        docs = genre_lists(items)
        if any(docs):
            vec = TfidfVectorizer(
                analyzer=lambda genres: genres, sublinear_tf=True, min_df=1, dtype=np.float32
            )
            blocks.append(genre_weight * vec.fit_transform(docs))
    if not blocks:
        return sp.csr_matrix((len(items), 0), dtype=np.float32)
    return sp.hstack(blocks, format="csr", dtype=np.float32)


TEXT_COLUMNS: tuple[str, ...] = ("description",)


def tfidf_text_vectors(
    items: pd.DataFrame, dim: int = 64, seed: int = 0, text_columns: tuple[str, ...] = TEXT_COLUMNS
) -> np.ndarray:
    """Dense (items x ``dim``) float32 text vectors: TF-IDF reduced by truncated SVD (LSA).

    Documents: :func:`personalize.features.text.item_texts` (title, year, genres), followed by
    the item's value of each of ``text_columns`` the table has (free text, e.g. a description).
    TF-IDF as in :func:`tfidf_item_vectors` (lower-cased word tokens, English stop words removed,
    tf = 1 + log(count), smoothed idf, rows L2-normalised); then scikit-learn's randomized
    ``TruncatedSVD`` with ``random_state=seed`` keeps the top min(dim, vocabulary - 1, items - 1)
    components (the rest of the ``dim`` columns stay zero, so the width is always ``dim``);
    finally rows are L2-normalised (an item without text keeps a zero row), like the sentence
    embeddings. Deterministic for a given item table, ``dim`` and ``seed``.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    from personalize.features.text import item_texts

    if dim < 1:
        raise ValueError(f"text vector width must be >= 1, got {dim}")
    docs = item_texts(items)
    for column in text_columns:
        if column in items.columns:
            extra = [v if isinstance(v, str) else "" for v in items[column].tolist()]
            docs = [f"{d}. {e}" if e else d for d, e in zip(docs, extra, strict=True)]
    out = np.zeros((len(items), dim), dtype=np.float32)
    vec = TfidfVectorizer(
        token_pattern=_WORD.pattern, lowercase=True, stop_words="english", sublinear_tf=True, dtype=np.float32
    )
    try:
        tfidf = vec.fit_transform(docs)
    except ValueError:  # an empty vocabulary: no text at all
        return out
    k = min(dim, tfidf.shape[1] - 1, len(items) - 1)
    if k < 1:
        out[:, : tfidf.shape[1]] = tfidf.toarray()[:, :dim]
    else:
        svd = TruncatedSVD(n_components=k, algorithm="randomized", random_state=seed)
        out[:, :k] = svd.fit_transform(tfidf)
    return l2_normalise(out)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (zero rows stay zero), float32."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


def item_vectors(
    items: pd.DataFrame,
    source: VectorSource = "tfidf",
    *,
    title_weight: float = 1.0,
    genre_weight: float = 1.0,
    min_df: int = 1,
    year_bucket_years: int = 10,
    year_weight: float = 0.5,
    cache: bool = True,
    progress: bool = False,
    device: str = "cpu",
) -> np.ndarray:
    """Dense, L2-normalised float32 item vectors (items x d) from ``source`` (see module doc);
    ``device`` (cpu, cuda or auto) is where the ``dense`` source's sentence encoder runs."""
    if source == "genres":
        raw = structured_item_vectors(items, year_bucket_years, year_weight)
    elif source == "tfidf":
        raw = tfidf_item_vectors(items, title_weight, genre_weight, min_df).toarray()
    elif source == "dense":
        from personalize.features.text import dense_item_embeddings

        raw = dense_item_embeddings(items, cache=cache, progress=progress, device=device)
    else:
        raise ValueError(f"unknown item vector source {source!r}; choose one of {', '.join(VECTOR_SOURCES)}")
    if raw.shape[1] == 0:
        raise ValueError(
            f"item vector source {source!r} found no content: the item table needs "
            f"'{C.TITLE}' and/or '{C.GENRES}' (and '{C.YEAR}') columns with values"
        )
    return l2_normalise(raw)
