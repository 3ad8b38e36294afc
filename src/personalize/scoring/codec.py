"""Arrays and scorers as files: the one codec for saved models and exported states.

Arrays are ``.npy`` files; a sparse matrix is stored as CSR parts
``<name>.indptr.npy``, ``<name>.indices.npy``, ``<name>.data.npy``, ``<name>.shape.npy``.

A state folder (written by :func:`save_state`, read by :func:`load_state`)::

    manifest.json          format, the scorer tree (kinds, params, array files), settings, info
    users.parquet          user_id in index order (row i = user index i)
    items.parquet          item_id in index order (the catalogue)
    seen_indptr.npy        CSR row pointers of each known user's history (the items they
    seen_indices.npy       interacted with): CSR item indices of those items
    seen_data.npy          (optional) each history entry's training weight; absent: all 1
    exclude_indptr.npy     (optional) the items left out of each user's ranking, when they are
    exclude_indices.npy    not the history's items (event types: only relevant events exclude)
    segments/              (optional) user_segment.npy, scores.npy (segments x items) and the
                           demographics classifier (labeller/, :mod:`.trees`); names in manifest
    popularity.npy         the fallback scores per item (float32)
    no_personalisation.npy (optional) indices of the users without personalisation consent
                           (int64, sorted); present when the export applied a consent table,
                           and then a user not in the state has no consent record either
    scorer/<path>/...      arrays of each scorer of the tree (blend parts under part<i>/)

A private export (``manifest["private"]``) ships no histories: ``seen`` is empty, and either no
user at all (user-level: every row is answered from the history its request sends) or, with
``users_known``, the users whose learned vectors it carries (event-level: each counts as known,
since the number of their training events is not shipped either).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .kinds import KINDS, Context, Scorer
from .segments import SegmentFallback
from .trees import load_trees, save_trees

FORMAT = 1
USER, ITEM = "user_id", "item_id"
CSR_PARTS = ("indptr", "indices", "data")


# --------------------------------------------------------------------------------- arrays


def save_array(folder: Path, name: str, value: Any) -> dict[str, str]:
    """Write one array (dense or sparse) as ``folder/name``; returns its reference."""
    folder.mkdir(parents=True, exist_ok=True)
    if sp.issparse(value):
        csr = sp.csr_matrix(value)
        for part in CSR_PARTS:
            np.save(folder / f"{name}.{part}.npy", getattr(csr, part), allow_pickle=False)
        np.save(folder / f"{name}.shape.npy", np.asarray(csr.shape, dtype=np.int64))
        return {"file": name, "format": "csr"}
    np.save(folder / f"{name}.npy", np.asarray(value), allow_pickle=False)
    return {"file": f"{name}.npy", "format": "npy"}


def load_array(folder: Path, ref: dict[str, str]) -> Any:
    """Read an array written by :func:`save_array` from its reference."""
    if ref["format"] == "npy":
        return np.load(folder / ref["file"], allow_pickle=False)
    if ref["format"] == "csr":
        base = folder / ref["file"]
        parts = {p: np.load(f"{base}.{p}.npy", allow_pickle=False) for p in CSR_PARTS}
        shape = tuple(int(x) for x in np.load(f"{base}.shape.npy"))
        return sp.csr_matrix((parts["data"], parts["indices"], parts["indptr"]), shape=shape)
    if ref["format"] == "torch_state_dict":  # NeuMF weights as earlier exports wrote them (one file)
        import torch

        state = torch.load(folder / ref["file"], map_location="cpu", weights_only=True)
        return {k: v.detach().cpu().numpy() for k, v in state.items()}
    raise ValueError(f"unknown array format {ref['format']!r} in {folder}")


def save_arrays(folder: Path, arrays: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {name: save_array(folder, name, value) for name, value in arrays.items()}


def load_arrays(folder: Path) -> dict[str, Any]:
    """Every array in ``folder`` (CSR matrices from their parts)."""
    refs: dict[str, dict[str, str]] = {}
    sparse = {p.name[: -len(".indptr.npy")] for p in folder.glob("*.indptr.npy")}
    for name in sparse:
        refs[name] = {"file": name, "format": "csr"}
    for p in folder.glob("*.npy"):
        name = p.name[: -len(".npy")]
        stem, _, part = name.rpartition(".")
        if stem in sparse and part in (*CSR_PARTS, "shape"):
            continue
        refs[name] = {"file": p.name, "format": "npy"}
    return {name: load_array(folder, ref) for name, ref in refs.items()}


# --------------------------------------------------------------------------------- scorers


def save_scorer(scorer: Scorer, folder: Path, path: str = "scorer") -> dict[str, Any]:
    """Write a scorer tree's arrays under ``folder/path``; returns its manifest entry."""
    if not scorer.exportable or KINDS.get(scorer.kind) is not type(scorer):
        raise ValueError(f"unknown scorer kind {scorer.kind!r} at {path}; expected one of {sorted(KINDS)}")
    arrays, params = scorer.state()
    refs = {name: save_array(folder / path, name, value) for name, value in arrays.items()}
    return {
        "kind": scorer.kind,
        "params": params,
        "handles_cold_users": bool(scorer.handles_cold_users),
        "arrays": {name: {**ref, "file": f"{path}/{ref['file']}"} for name, ref in refs.items()},
        "parts": [save_scorer(part, folder, f"{path}/part{i}") for i, part in enumerate(scorer.parts)],
    }


def load_scorer(entry: dict[str, Any], folder: Path) -> Scorer:
    """A scorer tree from its manifest entry."""
    kind = entry["kind"]
    if kind not in KINDS:
        raise ValueError(
            f"unknown scorer kind {kind!r} in {folder / 'manifest.json'}; expected one of {sorted(KINDS)}"
        )
    arrays: dict[str, Any] = {}
    for name, ref in entry.get("arrays", {}).items():
        value = load_array(folder, ref)
        if isinstance(value, dict):  # a whole state_dict in one file
            arrays.update(value)
        else:
            arrays[name] = value
    parts = [load_scorer(p, folder) for p in entry.get("parts", [])]
    scorer = KINDS[kind].from_state(arrays, dict(entry.get("params", {})), parts)
    scorer.handles_cold_users = bool(entry.get("handles_cold_users", False))
    return scorer


# ---------------------------------------------------------------------------------- states


@dataclass
class State:
    """An exported model's state: the scorer tree, the ID maps, the context, settings."""

    scorer: Scorer
    users: pd.Index
    items: pd.Index
    context: Context
    settings: dict[str, Any]
    info: dict[str, Any]
    segments: SegmentFallback | None = None
    no_personalisation: np.ndarray | None = None  # user indices without personalisation consent


def save_state(
    folder: str | Path,
    scorer: Scorer,
    users: pd.Index,
    items: pd.Index,
    seen: sp.spmatrix,
    popularity: np.ndarray,
    settings: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
    exclude: sp.spmatrix | None = None,
    segments: SegmentFallback | None = None,
    no_personalisation: np.ndarray | None = None,
    users_known: bool = False,
    private: bool = False,
) -> Path:
    """Write a state folder (see the module doc). ``users`` / ``items`` are the raw IDs in index
    order, ``seen`` the users x items history (nonzero = an interaction, the value its training
    weight), ``popularity`` the fallback scores per item, ``exclude`` the items left out of each
    user's ranking (None: the history's items), ``no_personalisation`` the indices of the users
    without personalisation consent (None: no consent table applied); ``settings`` may set
    ``default_k``, ``max_k`` and ``max_rows``; ``info`` is free provenance (JSON).
    ``users_known``: every user of ``users`` counts as known (a history length of 1 each) even
    though ``seen`` holds nothing of theirs; ``private``: a private export (module doc), which
    must ship no history at all."""
    if private and sp.csr_matrix(seen).nnz:
        raise ValueError("a private export ships no history: seen must be empty")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seen = _csr(seen, "seen", len(users), len(items))
    if len(popularity) != len(items):
        raise ValueError(f"popularity has {len(popularity)} entries, expected {len(items)}")
    scorer.check(len(users), len(items))
    pd.DataFrame({USER: np.asarray(users)}).to_parquet(folder / "users.parquet", index=False)
    pd.DataFrame({ITEM: np.asarray(items)}).to_parquet(folder / "items.parquet", index=False)
    np.save(folder / "seen_indptr.npy", seen.indptr.astype(np.int64))
    np.save(folder / "seen_indices.npy", seen.indices.astype(np.int32))
    if seen.nnz and not np.all(seen.data == 1):
        np.save(folder / "seen_data.npy", seen.data.astype(np.float32))
    if exclude is not None:
        exclude = _csr(exclude, "exclude", len(users), len(items))
        np.save(folder / "exclude_indptr.npy", exclude.indptr.astype(np.int64))
        np.save(folder / "exclude_indices.npy", exclude.indices.astype(np.int32))
    np.save(folder / "popularity.npy", np.asarray(popularity, dtype=np.float32))
    if no_personalisation is not None:
        withdrawn = np.unique(np.asarray(no_personalisation, dtype=np.int64))
        if len(withdrawn) and (withdrawn[0] < 0 or withdrawn[-1] >= len(users)):
            raise ValueError(f"no_personalisation holds indices outside 0..{len(users) - 1}")
        np.save(folder / "no_personalisation.npy", withdrawn)
    if segments is not None:
        segments.check(len(users), len(items))
        (folder / "segments").mkdir(exist_ok=True)
        np.save(folder / "segments" / "user_segment.npy", segments.user_segment.astype(np.int64))
        np.save(folder / "segments" / "scores.npy", np.asarray(segments.scores, dtype=np.float32))
        if segments.labeller is not None:
            save_trees(folder / "segments" / "labeller", *segments.labeller)
    manifest = {
        "format": FORMAT,
        "n_users": len(users),
        "n_items": len(items),
        "settings": {"default_k": 10, "max_k": 1000, "max_rows": 10_000, **(settings or {})},
        "scorer": save_scorer(scorer, folder),
        "info": info or {},
    }
    if users_known:
        manifest["users_known"] = True
    if private:
        manifest["private"] = True
    if segments is not None:
        manifest["segments"] = {"names": list(segments.names), "labeller": segments.labeller is not None}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=_json_default))
    return folder


def _csr(matrix: sp.spmatrix, name: str, n_users: int, n_items: int) -> sp.csr_matrix:
    matrix = sp.csr_matrix(matrix)
    matrix.sum_duplicates()
    matrix.sort_indices()
    if matrix.shape != (n_users, n_items):
        raise ValueError(f"{name} has shape {matrix.shape}, expected ({n_users}, {n_items})")
    return matrix


def _read_csr(
    folder: Path, name: str, shape: tuple[int, int], data: np.ndarray | None = None
) -> sp.csr_matrix:
    indices = np.load(folder / f"{name}_indices.npy")
    values = np.ones(len(indices), dtype=np.float32) if data is None else data.astype(np.float32)
    return sp.csr_matrix((values, indices, np.load(folder / f"{name}_indptr.npy")), shape=shape)


def load_state(folder: str | Path) -> State:
    """Read a state folder written by :func:`save_state`."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path} not found: not an exported state folder")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(
            f"{manifest_path}: state format {manifest.get('format')!r}; this scorer reads {FORMAT}"
        )
    users = pd.Index(pd.read_parquet(folder / "users.parquet")[USER])
    items = pd.Index(pd.read_parquet(folder / "items.parquet")[ITEM])
    shape = (len(users), len(items))
    weights = np.load(folder / "seen_data.npy") if (folder / "seen_data.npy").exists() else None
    seen = _read_csr(folder, "seen", shape, weights)
    exclude = _read_csr(folder, "exclude", shape) if (folder / "exclude_indptr.npy").exists() else None
    segments = None
    if "segments" in manifest:
        part = folder / "segments"
        segments = SegmentFallback(
            np.load(part / "user_segment.npy"),
            np.load(part / "scores.npy"),
            list(manifest["segments"].get("names", [])),
            load_trees(part / "labeller") if manifest["segments"].get("labeller") else None,
        )
    consent = folder / "no_personalisation.npy"
    context = Context.build(seen, np.load(folder / "popularity.npy"), exclude)
    if manifest.get("users_known"):
        context.history = np.ones(len(users), dtype=np.int64)
    return State(
        load_scorer(manifest["scorer"], folder),
        users,
        items,
        context,
        manifest.get("settings", {}),
        manifest.get("info", {}),
        segments,
        np.load(consent, allow_pickle=False) if consent.exists() else None,
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
