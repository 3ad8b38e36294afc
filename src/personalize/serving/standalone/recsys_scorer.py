"""Top-K recommendations from an exported model's state, without the training code.

This module is shipped inside every exported model (MLflow ``code_paths``) and imported there as
the top-level module ``recsys_scorer``. It imports only NumPy, pandas (+ pyarrow for Parquet) and
SciPy; PyTorch is imported only when the model contains a ``neumf`` part. It never imports the
package that trained the model.

State folder (written by :func:`save_state`, read by :meth:`TopKScorer.load`)::

    manifest.json          format, scorer tree (kinds, params, array files), settings
    users.parquet          user_id in index order (row i = user index i)
    items.parquet          item_id in index order (the catalogue)
    seen_indptr.npy        CSR row pointers of each known user's interacted items
    seen_indices.npy       CSR item indices of those items
    popularity.npy         interactions per item (float32), the fallback ranking
    scorer/<path>/...      arrays of the scorer tree: <name>.npy, a CSR matrix as
                           <name>.indptr/.indices/.data/.shape.npy, NeuMF weights as
                           state_dict.pt (a PyTorch state_dict)

Scoring (the same conventions as the training code; score of user u for every item i):

- ``static``: ``scores[i]`` for every user;
- ``item_item``: ``sum over the user's seen items j of weights[j, i]`` (``seen[u] @ weights``);
- ``factors``: ``users[u] . items[i]``;
- ``neumf``: ``out.w . [user_gmf[u] * item_gmf[i] ; MLP([user_mlp[u] ; item_mlp[i]])] + out.b``,
  the MLP being Linear + ReLU for each layer ``mlp.<j>`` (a logit: the sigmoid does not change
  the ranking); ``params``: ``factors``, ``mlp_embedding``, ``mlp_layers``;
- ``blend``: each part answers as a fitted model would (its own scores where it answers the user,
  popularity elsewhere), its scores are made comparable per user over the candidates (the items
  the user has not seen) by ``params["method"]`` -- ``minmax``: (s - min) / (max - min);
  ``rrf``: 1 / (rrf_k + rank) -- and weighted by ``params["weights"]``; with
  ``single_part_raw`` and one positive weight, that part's scores unchanged.

Answering a request: a user the model answers itself (a known user with history; any known user
when the model handles cold users; for a blend, a user any part answers) gets the model's scores,
any other user the popularity fallback with ``personalised = False``. The user's seen items and the
request's excluded items are removed, then the top ``k`` are taken, ties in score broken by item
index (lower first). ``-inf`` marks an item that cannot be recommended; such places are left out,
so a list can be shorter than ``k``.
"""

from __future__ import annotations

import contextlib
import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

FORMAT = 1
KINDS = ("static", "item_item", "factors", "neumf", "blend")
USER, ITEM, RANK, SCORE, PERSONALISED = "user_id", "item_id", "rank", "score", "personalised"
COLUMNS = (USER, ITEM, RANK, SCORE, PERSONALISED)
BLOCK_BYTES = 128 * 2**20  # scores of one scoring block stay under this


class RequestError(ValueError):
    """A request that cannot be answered as given (the message says which row and field)."""


# --------------------------------------------------------------------------- the scorer tree


@dataclass
class Context:
    """What every scorer may read: seen items, the popularity fallback, history lengths."""

    seen: sp.csr_matrix
    popularity: np.ndarray
    history: np.ndarray


@dataclass
class Node:
    """One scorer of the tree: its kind, arrays, params, (``blend``) parts, and whether it
    answers known users without history itself (``handles_cold_users``)."""

    kind: str
    arrays: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    parts: list[Node] = field(default_factory=list)
    handles_cold_users: bool = False
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def personalised(self, users: np.ndarray, history: np.ndarray) -> np.ndarray:
        """True where this scorer answers the user itself: a blend where any part does; any
        other scorer for known users with history (every known user if it handles cold users)."""
        users = np.asarray(users, dtype=np.int64)
        if self.kind == "blend" and self.parts:
            out = np.zeros(len(users), dtype=bool)
            for part in self.parts:
                out |= part.personalised(users, history)
            return out
        known = users >= 0
        if self.handles_cold_users:
            return known
        count = np.zeros(len(users), dtype=np.int64)
        count[known] = history[users[known]]
        return known & (count > 0)

    def answer(self, users: np.ndarray, ctx: Context) -> np.ndarray:
        """Scores with the fallback: the scorer's own where it answers, popularity elsewhere."""
        out = np.empty((len(users), ctx.seen.shape[1]), dtype=np.float32)
        mine = self.personalised(users, ctx.history)
        if mine.any():
            out[mine] = self.score(users[mine], ctx)
        if (~mine).any():
            out[~mine] = ctx.popularity
        return out

    def score(self, users: np.ndarray, ctx: Context) -> np.ndarray:
        """Scores (float32, len(users) x items) of known user indices ``users``."""
        if self.kind == "static":
            scores = np.asarray(self.arrays["scores"], dtype=np.float32)
            return np.broadcast_to(scores, (len(users), scores.shape[0])).copy()
        if self.kind == "item_item":
            product = seen_rows(ctx.seen, users) @ self.arrays["weights"]
            if sp.issparse(product):
                return np.asarray(product.todense(), dtype=np.float32)
            return np.asarray(product, dtype=np.float32)
        if self.kind == "factors":
            return np.asarray(self.arrays["users"][users] @ self.arrays["items"].T, dtype=np.float32)
        if self.kind == "neumf":
            return _neumf_scores(self, users)
        if self.kind == "blend":
            return _blend_scores(self, users, ctx)
        raise ValueError(f"unknown scorer kind {self.kind!r}; expected one of {KINDS}")

    def block_rows(self, n_items: int) -> int:
        """Users per scoring block (a blend keeps every part's scores; NeuMF its activations)."""
        per_user = max(1, n_items) * 8 * (64 if self.uses("neumf") else 2 + 2 * len(self.parts))
        return max(1, min(2048, BLOCK_BYTES // per_user))

    def uses(self, kind: str) -> bool:
        return self.kind == kind or any(p.uses(kind) for p in self.parts)


def seen_rows(seen: sp.csr_matrix, users: np.ndarray) -> sp.csr_matrix:
    """``seen[users]``; one row is sliced directly (SciPy's fancy indexing costs ~0.3 ms)."""
    if len(users) == 1:
        u = int(users[0])
        start, stop = seen.indptr[u], seen.indptr[u + 1]
        return sp.csr_matrix(
            (seen.data[start:stop], seen.indices[start:stop], np.array([0, stop - start])),
            shape=(1, seen.shape[1]),
        )
    return seen[users]


def _blend_scores(node: Node, users: np.ndarray, ctx: Context) -> np.ndarray:
    """Weighted fusion of the parts (each answered with its own fallback, as a fitted model
    would); an item that a part with positive weight scores -inf stays -inf."""
    method = node.params.get("method", "minmax")
    weights = np.asarray(node.params["weights"], dtype=np.float64)
    if len(weights) != len(node.parts):
        raise ValueError(f"blend has {len(node.parts)} parts but {len(weights)} weights")
    positive = np.flatnonzero(weights > 0)
    if node.params.get("single_part_raw", False) and len(positive) == 1:
        return node.parts[int(positive[0])].answer(users, ctx)
    seen = seen_rows(ctx.seen, users)
    candidates = node.params.get("candidates", "unseen")
    out = np.zeros((len(users), ctx.seen.shape[1]), dtype=np.float64)
    veto = np.zeros(out.shape, dtype=bool)
    for weight, part in zip(weights, node.parts):
        if weight <= 0:
            continue
        fused = fusion_transform(
            part.answer(users, ctx), seen, method, float(node.params.get("rrf_k", 60.0)), candidates
        )
        finite = np.isfinite(fused)
        veto |= ~finite
        out += weight * np.where(finite, fused, 0.0)
    out[veto] = -np.inf
    return out.astype(np.float32)


def fusion_transform(
    scores: np.ndarray, seen: sp.csr_matrix, method: str, rrf_k: float = 60.0, candidates: str = "unseen"
) -> np.ndarray:
    """One part's scores made comparable across parts (float64, users x items).

    Candidates: the finite scores of items the user has not seen (``candidates="all"``: of every
    item). ``minmax``: (s - min) / (max - min) over the candidates, 0 for a constant row, other
    finite items mapped by the same formula; ``rrf``: 1 / (rrf_k + rank), rank 1-based among the
    candidates by descending score with ties by item index, 0 for non-candidates. -inf stays -inf.
    """
    s = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(s)
    candidate = finite.copy()
    if candidates == "unseen" and seen.nnz:
        rows, cols = seen.nonzero()
        candidate[rows, cols] = False
    elif candidates not in ("unseen", "all"):
        raise ValueError(f"unknown blend candidates {candidates!r}; expected 'unseen' or 'all'")
    if method == "minmax":
        has = candidate.any(axis=1)
        low = np.where(has, np.where(candidate, s, np.inf).min(axis=1, initial=np.inf), 0.0)
        high = np.where(has, np.where(candidate, s, -np.inf).max(axis=1, initial=-np.inf), 0.0)
        span = np.where(has, high - low, 0.0)[:, None]
        out = np.divide(s - low[:, None], span, out=np.zeros_like(s), where=(span > 0) & finite)
    elif method == "rrf":
        ranked = np.where(candidate, s, -np.inf)
        order = np.argsort(-ranked, axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(1, s.shape[1] + 1)[None, :], axis=1)
        out = np.where(candidate, 1.0 / (rrf_k + ranks), 0.0)
    else:
        raise ValueError(f"unknown blend method {method!r}; expected 'minmax' or 'rrf'")
    out[~finite] = -np.inf
    return out


def _neumf_scores(node: Node, users: np.ndarray) -> np.ndarray:
    """NeuMF logits for every catalogue item, in PyTorch from the state_dict.

    score(u, i) = out.w . [user_gmf[u] * item_gmf[i] ; MLP([user_mlp[u] ; item_mlp[i]])] + out.b,
    the MLP being Linear + ReLU per layer ``mlp.<j>``. The first layer is split into its user and
    item halves (W1 [p ; q] = W1_u p + W1_i q), so the item half is computed once per model
    (cached with the weights), not per request.
    """
    import torch
    import torch.nn.functional as F

    factors = int(node.params["factors"])
    m = int(node.params["mlp_embedding"])
    n_layers = len(node.params["mlp_layers"])
    if "torch" not in node.cache:
        state = node.arrays["state_dict"]
        w = {k: torch.as_tensor(np.asarray(v)) for k, v in state.items()}
        with torch.no_grad():
            w_out = w["out.weight"].reshape(-1)
            item_first = w["item_mlp.weight"] @ w["mlp.0.weight"][:, m:].T
            item_gmf = w["item_gmf.weight"] * w_out[:factors]
        node.cache["torch"] = (w, item_first, w_out, item_gmf)
    w, item_first, w_out, item_gmf = node.cache["torch"]
    u = torch.as_tensor(np.asarray(users, dtype=np.int64))
    with torch.no_grad():
        w1, b1 = w["mlp.0.weight"], w["mlp.0.bias"]
        h = F.relu((w["user_mlp.weight"][u] @ w1[:, :m].T + b1)[:, None, :] + item_first[None])
        for j in range(1, n_layers):
            h = F.relu(F.linear(h, w[f"mlp.{j}.weight"], w[f"mlp.{j}.bias"]))
        out = w["user_gmf.weight"][u] @ item_gmf.T + h @ w_out[factors:] + w["out.bias"]
    return out.numpy().astype(np.float32)


# ------------------------------------------------------------------------------ persistence


def save_state(
    folder: str | Path,
    scorer: dict[str, Any],
    users: pd.Index,
    items: pd.Index,
    seen: sp.csr_matrix,
    popularity: np.ndarray,
    settings: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write a state folder.

    ``scorer`` is the scorer tree as nested dicts: ``kind``, ``arrays`` (name -> array or CSR
    matrix; for ``neumf`` the state_dict as arrays), ``params``, ``parts`` (for ``blend``) and
    ``handles_cold_users``. ``users`` / ``items`` are the raw IDs in index order, ``seen`` the
    users x items matrix of interactions (nonzero = seen), ``popularity`` the fallback scores per
    item; ``settings`` may set ``default_k``, ``max_k`` and ``max_rows``; ``info`` is free
    provenance (JSON).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seen = sp.csr_matrix(seen)
    seen.sum_duplicates()
    seen.sort_indices()
    if seen.shape != (len(users), len(items)):
        raise ValueError(f"seen has shape {seen.shape}, expected ({len(users)}, {len(items)})")
    if len(popularity) != len(items):
        raise ValueError(f"popularity has {len(popularity)} entries, expected {len(items)}")
    pd.DataFrame({USER: np.asarray(users)}).to_parquet(folder / "users.parquet", index=False)
    pd.DataFrame({ITEM: np.asarray(items)}).to_parquet(folder / "items.parquet", index=False)
    np.save(folder / "seen_indptr.npy", seen.indptr.astype(np.int64))
    np.save(folder / "seen_indices.npy", seen.indices.astype(np.int32))
    np.save(folder / "popularity.npy", np.asarray(popularity, dtype=np.float32))
    manifest = {
        "format": FORMAT,
        "n_users": len(users),
        "n_items": len(items),
        "settings": {"default_k": 10, "max_k": 1000, "max_rows": 10_000, **(settings or {})},
        "scorer": _save_node(scorer, folder, "scorer", len(users), len(items)),
        "info": info or {},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=_json_default))
    return folder


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _save_node(node: dict[str, Any], folder: Path, path: str, n_users: int, n_items: int) -> dict[str, Any]:
    kind = node["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown scorer kind {kind!r} at {path}; expected one of {KINDS}")
    arrays = dict(node.get("arrays", {}))
    params = dict(node.get("params", {}))
    _check_node(kind, arrays, params, node.get("parts", []), path, n_users, n_items)
    target = folder / path
    target.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    if kind == "neumf":
        import torch

        state = {k: torch.as_tensor(np.array(v)) for k, v in arrays.items()}
        torch.save(state, target / "state_dict.pt")
        files["state_dict"] = {"file": f"{path}/state_dict.pt", "format": "torch_state_dict"}
    else:
        for name, value in arrays.items():
            if sp.issparse(value):
                csr = sp.csr_matrix(value)
                for part in ("indptr", "indices", "data"):
                    np.save(target / f"{name}.{part}.npy", getattr(csr, part), allow_pickle=False)
                np.save(target / f"{name}.shape.npy", np.asarray(csr.shape, dtype=np.int64))
                files[name] = {"file": f"{path}/{name}", "format": "csr"}
            else:
                np.save(target / f"{name}.npy", np.asarray(value), allow_pickle=False)
                files[name] = {"file": f"{path}/{name}.npy", "format": "npy"}
    return {
        "kind": kind,
        "params": params,
        "handles_cold_users": bool(node.get("handles_cold_users", False)),
        "arrays": files,
        "parts": [
            _save_node(part, folder, f"{path}/part{i}", n_users, n_items)
            for i, part in enumerate(node.get("parts", []))
        ],
    }


def _check_node(
    kind: str, arrays: dict, params: dict, parts: list, path: str, n_users: int, n_items: int
) -> None:
    """Catch a scorer that does not match the index before it is shipped."""

    def shape(name: str) -> tuple[int, ...]:
        if name not in arrays:
            raise ValueError(f"{path}: a {kind!r} scorer needs array {name!r}; got {sorted(arrays)}")
        return tuple(arrays[name].shape)

    expected: dict[str, tuple[int | None, ...]] = {
        "static": {"scores": (n_items,)},
        "item_item": {"weights": (n_items, n_items)},
        "factors": {"users": (n_users, None), "items": (n_items, None)},
        "neumf": {
            "user_gmf.weight": (n_users, None),
            "item_gmf.weight": (n_items, None),
            "user_mlp.weight": (n_users, None),
            "item_mlp.weight": (n_items, None),
        },
    }.get(kind, {})
    for name, want in expected.items():
        got = shape(name)
        if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
            raise ValueError(f"{path}: {kind} array {name!r} has shape {got}, expected {want}")
    if kind == "factors" and shape("users")[1] != shape("items")[1]:
        raise ValueError(f"{path}: factors of users and items differ in width")
    if kind == "neumf":
        missing = [k for k in ("factors", "mlp_embedding", "mlp_layers") if k not in params]
        if missing:
            raise ValueError(f"{path}: neumf params lack {missing}")
    if kind == "blend":
        if not parts:
            raise ValueError(f"{path}: a blend needs parts")
        if len(params.get("weights", [])) != len(parts):
            raise ValueError(f"{path}: blend has {len(parts)} parts but weights {params.get('weights')}")


def _load_node(entry: dict[str, Any], folder: Path) -> Node:
    arrays: dict[str, Any] = {}
    for name, ref in entry["arrays"].items():
        if ref["format"] == "npy":
            arrays[name] = np.load(folder / ref["file"], allow_pickle=False)
        elif ref["format"] == "csr":
            base = folder / ref["file"]
            parts = {p: np.load(f"{base}.{p}.npy", allow_pickle=False) for p in ("indptr", "indices", "data")}
            shape = tuple(int(x) for x in np.load(f"{base}.shape.npy"))
            arrays[name] = sp.csr_matrix((parts["data"], parts["indices"], parts["indptr"]), shape=shape)
        elif ref["format"] == "torch_state_dict":
            import torch

            state = torch.load(folder / ref["file"], map_location="cpu", weights_only=True)
            arrays[name] = {k: v.detach().cpu().numpy() for k, v in state.items()}
        else:
            raise ValueError(f"unknown array format {ref['format']!r} in {folder / 'manifest.json'}")
    return Node(
        entry["kind"],
        arrays,
        dict(entry.get("params", {})),
        [_load_node(p, folder) for p in entry.get("parts", [])],
        bool(entry.get("handles_cold_users", False)),
    )


# ------------------------------------------------------------------------------- answering


class TopKScorer:
    """Answers top-K requests from a state folder (see the module docstring)."""

    def __init__(
        self,
        root: Node,
        users: pd.Index,
        items: pd.Index,
        seen: sp.csr_matrix,
        popularity: np.ndarray,
        settings: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
    ):
        settings = settings or {}
        self.root = root
        self.users = users
        self.items = items
        self.ctx = Context(seen, np.asarray(popularity, dtype=np.float32), np.diff(seen.indptr))
        self.default_k = int(settings.get("default_k", 10))
        self.max_k = int(settings.get("max_k", 1000))
        self.max_rows = int(settings.get("max_rows", 10_000))
        self.info = info or {}
        self._block = root.block_rows(len(items))
        self._item_ids = items.to_numpy()

    @classmethod
    def load(cls, folder: str | Path) -> TopKScorer:
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
        indptr = np.load(folder / "seen_indptr.npy")
        indices = np.load(folder / "seen_indices.npy")
        seen = sp.csr_matrix(
            (np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(len(users), len(items))
        )
        return cls(
            _load_node(manifest["scorer"], folder),
            users,
            items,
            seen,
            np.load(folder / "popularity.npy"),
            manifest.get("settings", {}),
            manifest.get("info", {}),
        )

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def seen(self) -> sp.csr_matrix:
        return self.ctx.seen

    @property
    def popularity(self) -> np.ndarray:
        return self.ctx.popularity

    # ---------------------------------------------------------------------- ID handling

    def user_index(self, ids: list[Any]) -> np.ndarray:
        """Indices of raw user IDs (-1: unknown); '196' finds user 196 and 196 finds '196'."""
        return _positions(self.users, ids)

    def item_index(self, ids: list[Any]) -> np.ndarray:
        return _positions(self.items, ids)

    def personalised(self, users: np.ndarray) -> np.ndarray:
        """True where the model answers the user itself, False where the fallback does."""
        return self.root.personalised(np.asarray(users, dtype=np.int64), self.ctx.history)

    def score(self, users: np.ndarray) -> np.ndarray:
        """Scores (float32, users x items) of user indices (-1: unknown), fallback included,
        seen items not removed (as ``Recommender.score``)."""
        return self.root.answer(np.asarray(users, dtype=np.int64), self.ctx)

    # ------------------------------------------------------------------------- requests

    def check_request(
        self, user_ids: list[Any], ks: list[Any] | None = None, exclude_items: list[Any] | None = None
    ) -> tuple[list[Any], np.ndarray, list[list[Any]]]:
        """Validate a request; returns (user IDs, k per row, excluded item IDs per row).

        Raises :class:`RequestError` naming the row and field at fault.
        """
        n = len(user_ids)
        if n > self.max_rows:
            raise RequestError(f"a request may hold at most {self.max_rows} rows, got {n}")
        for row, uid in enumerate(user_ids):
            if not _is_id(uid):
                raise RequestError(
                    f"row {row}: user_id must be an integer or a string, got {type(uid).__name__} {uid!r}"
                )
        ks = [None] * n if ks is None else list(ks)
        if len(ks) != n:
            raise RequestError(f"got {len(ks)} values of k for {n} rows")
        k_out = np.empty(n, dtype=np.int64)
        for row, k in enumerate(ks):
            k = self.default_k if k is None else k
            if isinstance(k, bool) or not isinstance(k, numbers.Integral):
                raise RequestError(f"row {row}: k must be an integer, got {type(k).__name__} {k!r}")
            if not 1 <= int(k) <= self.max_k:
                raise RequestError(
                    f"row {row}: k must be between 1 and {self.max_k} (the catalogue has "
                    f"{self.n_items} items), got {int(k)}"
                )
            k_out[row] = int(k)
        excludes: list[list[Any]] = []
        extras = [None] * n if exclude_items is None else list(exclude_items)
        if len(extras) != n:
            raise RequestError(f"got {len(extras)} exclude_items values for {n} rows")
        for row, extra in enumerate(extras):
            if extra is None:
                excludes.append([])
                continue
            if isinstance(extra, (str, bytes, dict)) or not hasattr(extra, "__iter__"):
                raise RequestError(
                    f"row {row}: exclude_items must be a list of item IDs, got {type(extra).__name__}"
                )
            extra = list(extra)
            bad = [x for x in extra if not _is_id(x)]
            if bad:
                raise RequestError(f"row {row}: exclude_items must hold integers or strings, got {bad[0]!r}")
            excludes.append(extra)
        return list(user_ids), k_out, excludes

    def recommend(
        self,
        user_ids: list[Any],
        k: int | list[Any] | None = None,
        exclude_items: list[Any] | None = None,
        exclude_seen: bool = True,
    ) -> pd.DataFrame:
        """Top-k for raw user IDs: rows user_id, item_id, rank, score, personalised.

        ``k`` is one value for every row or one per row (``None``: the default k);
        ``exclude_items`` one list of item IDs per row (or ``None``). Rows come out in request
        order, ranks 1..k within a row.
        """
        return _frame(*self.recommend_columns(user_ids, k, exclude_items, exclude_seen))

    def recommend_columns(
        self,
        user_ids: list[Any],
        k: int | list[Any] | None = None,
        exclude_items: list[Any] | None = None,
        exclude_seen: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`recommend` as five aligned arrays (user_id, item_id, rank, score, personalised),
        without building a DataFrame (the serving path)."""
        user_ids = list(user_ids)
        ks = k if isinstance(k, (list, tuple, np.ndarray)) else [k] * len(user_ids)
        user_ids, ks_arr, excludes = self.check_request(user_ids, ks, exclude_items)
        n = len(user_ids)
        if n == 0:
            empty = np.zeros(0, dtype=np.int64)
            return (
                np.zeros(0, dtype=object),
                self._item_ids[empty],
                empty.astype(np.int32),
                empty.astype(np.float32),
                empty.astype(bool),
            )
        idx = self.user_index(user_ids)
        personal = self.personalised(idx)
        seen = self.ctx.seen
        k_max = int(ks_arr.max())
        top_items = np.full((n, k_max), -1, dtype=np.int64)
        top_scores = np.full((n, k_max), -np.inf, dtype=np.float32)
        for start in range(0, n, self._block):
            rows = np.arange(start, min(n, start + self._block))
            scores = self.score(idx[rows])
            for r, row in enumerate(rows):
                u = idx[row]
                if exclude_seen and u >= 0:
                    scores[r, seen.indices[seen.indptr[u] : seen.indptr[u + 1]]] = -np.inf
                if excludes[row]:
                    extra = self.item_index(excludes[row])
                    scores[r, extra[extra >= 0]] = -np.inf
            top_items[rows], top_scores[rows] = top_k(scores, k_max)
        keep = (top_items >= 0) & (np.arange(k_max)[None, :] < ks_arr[:, None])
        rows, ranks = np.nonzero(keep)
        ids = np.empty(n, dtype=object)
        ids[:] = user_ids
        return (
            ids[rows],
            self._item_ids[top_items[rows, ranks]],
            (ranks + 1).astype(np.int32),
            top_scores[rows, ranks],
            personal[rows],
        )


def _frame(users, items, ranks, scores, personal) -> pd.DataFrame:
    return pd.DataFrame(
        {
            USER: np.asarray(users, dtype=object),
            ITEM: np.asarray(items),
            RANK: np.asarray(ranks, dtype=np.int32),
            SCORE: np.asarray(scores, dtype=np.float32),
            PERSONALISED: np.asarray(personal, dtype=bool),
        }
    )


def _is_id(value: Any) -> bool:
    return isinstance(value, (str, numbers.Integral)) and not isinstance(value, bool)


def _positions(index: pd.Index, ids: list[Any]) -> np.ndarray:
    """Positions of ``ids`` in ``index`` (-1 where absent). Integer indexes accept digit strings;
    string indexes accept integers (as their decimal text)."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    integer = pd.api.types.is_integer_dtype(index.dtype)
    if len(ids) <= 8:  # a hash lookup per ID beats building an Index for a few
        out = np.full(len(ids), -1, dtype=np.int64)
        for i, value in enumerate(ids):
            key = _as_int(value) if integer else str(value)
            if key is not None:
                with contextlib.suppress(KeyError):
                    out[i] = index.get_loc(key)
        return out
    if integer:
        keys = np.zeros(len(ids), dtype=np.int64)
        valid = np.zeros(len(ids), dtype=bool)
        for i, value in enumerate(ids):
            number = _as_int(value)
            if number is not None:
                keys[i], valid[i] = number, True
        out = index.get_indexer(keys).astype(np.int64)
        out[~valid] = -1
        return out
    keys = pd.Index([str(v) for v in ids], dtype=index.dtype)
    return index.get_indexer(keys).astype(np.int64)


def _as_int(value: Any) -> int | None:
    """An int64 from an integer or a decimal string, else None."""
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("-").isdecimal():
            return None
        value = int(text)
    value = int(value)
    return value if -(2**63) <= value < 2**63 else None


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best items per row: ``(items, values)``, both ``(rows, k)``; items ``-1`` where
    fewer than ``k`` items have a finite score. Exact: every item tied with the k-th score is a
    candidate and ties are broken by item index."""
    n_rows, n_items = scores.shape
    items = np.full((n_rows, k), -1, dtype=np.int64)
    values = np.full((n_rows, k), -np.inf, dtype=np.float32)
    if n_rows == 0 or n_items == 0 or k == 0:
        return items, values
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; a scorer must return finite scores or -inf")
    k_eff = min(k, n_items)
    if k_eff < n_items:
        kth = np.partition(scores, n_items - k_eff, axis=1)[:, n_items - k_eff]
        rows, cols = np.nonzero(scores >= kth[:, None])
    else:
        rows, cols = np.divmod(np.arange(n_rows * n_items), n_items)
    vals = scores[rows, cols]
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, np.arange(n_rows))
    pos = np.arange(len(rows)) - starts[rows]
    keep = (pos < k_eff) & np.isfinite(vals)
    items[rows[keep], pos[keep]] = cols[keep]
    values[rows[keep], pos[keep]] = vals[keep]
    return items, values
