"""Scorers: how a fitted model scores the catalogue, one implementation per kind.

(One module: the kinds share the base class, the fallback rule and the registry of kinds; each
kind is one short class here, and its file format is :mod:`.codec`.)

A scorer is plain data (arrays and params) plus the one function that turns it into scores.
The models build their scorer from their learned state and score through it; the exported
model ships the same code and the same data, so training, evaluation and serving answer alike.

Score of user u for every item i (before seen items are excluded):

- ``static``: ``scores[i]`` for every user (popularity and its variants);
- ``item_item``: ``sum over the user's items j of history[u, j] * weights[j, i]``
  (``seen[u] @ weights``, the history holding each item's training weight, 1 without event
  weights; EASE, ItemKNN; ``weights`` dense or CSR);
- ``factors``: ``users[u] . items[i]`` (ALS, BPR, the content model's profiles, the two-tower's
  tower outputs);
- ``neumf``: ``out.w . [user_gmf[u] * item_gmf[i] ; MLP([user_mlp[u] ; item_mlp[i]])] + out.b``,
  the MLP being Linear + ReLU for each layer ``mlp.<j>`` (a logit: the sigmoid does not change
  the ranking), computed with PyTorch (imported only here);
- ``autoencoder``: ``tanh(mu w2 + b2) w3 + b3`` with ``mu = tanh(x w1 + b1) w_mu + b_mu`` and
  ``x`` the user's history row L2-normalised (Mult-VAE's mean forward pass, in NumPy);
- ``segmented``: ``scores[segment[u]]``, the scores of the user's segment (segment popularity);
- ``routed``: the answer of the part ``route[u]`` (the part chosen for the user's segment);
- ``blend``: each part answers as a fitted model would (its own scores where it answers the
  user, popularity elsewhere), its scores are made comparable per user over the candidates (the
  items not excluded from the user's ranking) by ``method`` -- ``minmax``: (s - min) / (max - min);
  ``rrf``: 1 / (rrf_k + rank) -- and weighted by ``weights``; with one positive weight, that
  part's answer unchanged.

The fallback rule (:meth:`Scorer.personalised`): a scorer answers a known user with history
itself, and every known user when it ``handles_cold_users``; a blend answers a user any of its
parts answers. Every other user (cold, or unknown: index -1) gets the popularity scores of the
:class:`Context`.

Fold-in (:mod:`.foldin`): in a fold-in context the rows are request users whose history was
updated after the fit, and ``Context.owners`` maps each row to the fitted model's user (-1: a
user it never saw). Item-item, static, autoencoder and segmented scorers read the updated history
(or the owner's segment); ``factors`` with a ``fold`` rule solve or recompute the user's vector from
it; NeuMF and factors without one (BPR, the two-tower) answer a known owner with the vectors
learned at fit time and give a user they never saw the fallback (``folds_in`` is False).

``-inf`` marks an item a scorer cannot recommend. Scores are float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from .ranking import csr_rows

BLOCK_BYTES = 128 * 2**20  # a serving block's scores (and a blend's parts) stay under this

#: exportable scorer kinds by name (filled by each kind's class definition)
KINDS: dict[str, type[Scorer]] = {}


@dataclass
class Context:
    """What every scorer may read besides its own data: each user's history (users x items,
    nonzero = an interaction, the value its training weight), the popularity fallback (per
    item), each user's history length, and the items left out of each user's ranking
    (``exclude``; None: the history's items. With event types, only the items of relevant
    events may be excluded, so an item only viewed can still be recommended)."""

    seen: sp.csr_matrix
    popularity: np.ndarray
    history: np.ndarray
    exclude: sp.csr_matrix | None = None
    owners: np.ndarray | None = None

    @classmethod
    def build(
        cls,
        seen: sp.spmatrix,
        popularity: np.ndarray,
        exclude: sp.spmatrix | None = None,
        owners: np.ndarray | None = None,
    ) -> Context:
        seen = sp.csr_matrix(seen)
        return cls(
            seen,
            np.asarray(popularity, dtype=np.float32),
            np.diff(seen.indptr).astype(np.int64),
            None if exclude is None else sp.csr_matrix(exclude),
            None if owners is None else np.asarray(owners, dtype=np.int64),
        )

    @property
    def folded(self) -> bool:
        """True for a fold-in context: its rows are histories updated after the fit, and
        ``owners`` gives each row's user index in the fitted model (-1: a user it never saw)."""
        return self.owners is not None

    def owner(self, rows: np.ndarray) -> np.ndarray:
        """The fitted model's user index of context rows ``rows`` (-1: unknown to it)."""
        return _owner(rows, self.owners)

    @property
    def excluded(self) -> sp.csr_matrix:
        """Items left out of each user's ranking (nonzero = left out)."""
        return self.seen if self.exclude is None else self.exclude

    @property
    def n_items(self) -> int:
        return self.seen.shape[1]


@dataclass(kw_only=True)
class Scorer:
    """Base of every scorer. Subclasses set ``kind`` and implement :meth:`score`; exportable
    kinds also describe their data (:meth:`state` / :meth:`from_state`, :meth:`check`)."""

    kind: ClassVar[str] = ""
    exportable: ClassVar[bool] = True
    handles_cold_users: bool = False
    #: scores an updated history without refitting (the user side is the history itself, or
    #: is solved from it); a scorer that cannot answers a folded row from what it learned of
    #: the user at fit time, and a user it never saw gets the fallback
    folds_in: ClassVar[bool] = True
    #: names of the arrays in :meth:`state` with one row per fitted user (what the scorer
    #: learned of each user; :func:`without_users` leaves them out)
    user_arrays: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind and cls.exportable:
            KINDS[cls.kind] = cls

    # --------------------------------------------------------------------------- scoring

    def score(self, users: np.ndarray, ctx: Context) -> np.ndarray:
        """Scores (float32, len(users) x items) of known user indices ``users``."""
        raise NotImplementedError

    def personalised(
        self, users: np.ndarray, history: np.ndarray, owners: np.ndarray | None = None
    ) -> np.ndarray:
        """True where this scorer answers the user itself (see the module doc). ``owners``: the
        fitted model's user index of each row of a fold-in context (:attr:`Context.owners`)."""
        users = np.asarray(users, dtype=np.int64)
        known = users >= 0
        if owners is not None and not self.folds_in:
            known &= _owner(users, owners) >= 0
        if self.handles_cold_users:
            return known
        count = np.zeros(len(users), dtype=np.int64)
        count[known] = history[users[known]]
        return known & (count > 0)

    def answer(self, users: np.ndarray, ctx: Context) -> np.ndarray:
        """Scores with the fallback: the scorer's own where it answers, popularity elsewhere."""
        users = np.asarray(users, dtype=np.int64)
        out = np.empty((len(users), ctx.n_items), dtype=np.float32)
        mine = self.personalised(users, ctx.history, ctx.owners)
        if mine.any():
            out[mine] = self.score(users[mine], ctx)
        if (~mine).any():
            out[~mine] = ctx.popularity
        return out

    # -------------------------------------------------------------------------- the tree

    @property
    def parts(self) -> list[Scorer]:
        return []

    def uses(self, kind: str) -> bool:
        return self.kind == kind or any(p.uses(kind) for p in self.parts)

    def block_rows(self, n_items: int) -> int:
        """Users per serving block (a blend keeps every part's scores; NeuMF its activations)."""
        per_user = max(1, n_items) * 8 * (64 if self.uses("neumf") else 2 + 2 * len(self.parts))
        return max(1, min(2048, BLOCK_BYTES // per_user))

    # ------------------------------------------------------------------------ as data

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(arrays, params) to save; the parts of a blend are saved by the codec."""
        raise NotImplementedError(f"a {type(self).__name__} scorer cannot be exported")

    @classmethod
    def from_state(cls, arrays: dict[str, Any], params: dict[str, Any], parts: list[Scorer]) -> Scorer:
        raise NotImplementedError

    def check(self, n_users: int, n_items: int, path: str = "scorer") -> None:
        """Raise ValueError when the data do not match the index (before it is shipped)."""


def without_users(scorer: Scorer) -> Scorer:
    """``scorer`` (and every part of it) with its per-user arrays (:attr:`Scorer.user_arrays`)
    cut to zero rows: nothing it learned of the users it was fitted on is left, and it answers
    only rows whose history it is given (a fold-in context; a scorer that cannot fold in then
    answers every row with the fallback)."""
    arrays, params = scorer.state()
    for name in scorer.user_arrays:
        arrays[name] = np.asarray(arrays[name])[:0]
    return type(scorer).from_state(arrays, params, [without_users(p) for p in scorer.parts])


def user_arrays_of(scorer: Scorer) -> list[str]:
    """The per-user arrays of ``scorer`` and its parts that hold at least one row (paths)."""
    arrays, _ = scorer.state()
    found = [f"{scorer.kind}.{n}" for n in scorer.user_arrays if len(np.asarray(arrays[n]))]
    return found + [name for part in scorer.parts for name in user_arrays_of(part)]


def als_user_vectors(
    items: np.ndarray,
    history: sp.csr_matrix,
    regularization: float,
    alpha: float,
    gram: np.ndarray | None = None,
) -> np.ndarray:
    """Each history row's ALS user vector against fixed item factors Y (implicit's
    ``recalculate_user``): with confidence c_i = alpha * h_i for the row's items,
    ``x = (Y'Y + regularization * I + sum_i (c_i - 1) y_i y_i')^-1 sum_i c_i y_i``
    (a row without items gets the zero vector). float64 throughout."""
    y = np.asarray(items, dtype=np.float64)
    f = y.shape[1]
    base = (y.T @ y if gram is None else gram) + regularization * np.eye(f)
    if not sp.isspmatrix_csr(history):
        history = sp.csr_matrix(history)
    out = np.zeros((history.shape[0], f), dtype=np.float64)
    for r in range(history.shape[0]):
        lo, hi = history.indptr[r], history.indptr[r + 1]
        if hi == lo:
            continue
        yi = y[history.indices[lo:hi]]
        c = alpha * history.data[lo:hi].astype(np.float64)
        a = base + (yi.T * (c - 1.0)) @ yi
        out[r] = np.linalg.solve(a, yi.T @ c)
    return out


def _owner(rows: np.ndarray, owners: np.ndarray | None) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64)
    if owners is None:
        return rows
    out = np.full(len(rows), -1, dtype=np.int64)
    ok = rows >= 0
    out[ok] = owners[rows[ok]]
    return out


def _shape(arrays: dict[str, Any], name: str, kind: str, path: str) -> tuple[int, ...]:
    if arrays.get(name) is None:
        raise ValueError(f"{path}: a {kind!r} scorer needs array {name!r}")
    return tuple(arrays[name].shape)


def _expect(path: str, kind: str, name: str, got: tuple, want: tuple) -> None:
    if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
        raise ValueError(f"{path}: {kind} array {name!r} has shape {got}, expected {want}")


# ------------------------------------------------------------------------------- the kinds


@dataclass(kw_only=True)
class Static(Scorer):
    """The same scores for every user."""

    kind: ClassVar[str] = "static"
    scores: np.ndarray

    def score(self, users: np.ndarray, ctx: Context) -> np.ndarray:
        scores = np.asarray(self.scores, dtype=np.float32)
        return np.broadcast_to(scores, (len(users), scores.shape[0])).copy()

    def state(self):
        return {"scores": self.scores}, {}

    @classmethod
    def from_state(cls, arrays, params, parts):
        return cls(scores=arrays["scores"])

    def check(self, n_users, n_items, path="scorer"):
        got = _shape({"scores": self.scores}, "scores", self.kind, path)
        _expect(path, self.kind, "scores", got, (n_items,))


@dataclass(kw_only=True)
class ItemItem(Scorer):
    """``seen[u] @ weights``: the user's history times an item-item matrix."""

    kind: ClassVar[str] = "item_item"
    weights: np.ndarray | sp.csr_matrix

    def score(self, users: np.ndarray, ctx: Context) -> np.ndarray:
        product = csr_rows(ctx.seen, users) @ self.weights
        if sp.issparse(product):
            return np.asarray(product.todense(), dtype=np.float32)
        return np.asarray(product, dtype=np.float32)

    def state(self):
        return {"weights": self.weights}, {}

    @classmethod
    def from_state(cls, arrays, params, parts):
        return cls(weights=arrays["weights"])

    def check(self, n_users, n_items, path="scorer"):
        got = _shape({"weights": self.weights}, "weights", self.kind, path)
        _expect(path, self.kind, "weights", got, (n_items, n_items))


@dataclass(kw_only=True)
class Factors(Scorer):
    """``users[u] . items[i]``: a dot product of user and item vectors.

    ``fold`` says how a user's vector follows from an updated history (fold-in, without
    refitting the item side): ``"als"``, the user's weighted least-squares problem against the
    fixed item factors exactly as implicit's ALS solves it (:func:`als_user_vectors`, with the
    ``regularization`` and ``alpha`` of training); ``"profile"``, the L2-normalised weighted
    mean of the item vectors of the history (the content model's profile with the history's
    weights); None: the vectors learned at fit time only (BPR, the two-tower's user tower)."""

    kind: ClassVar[str] = "factors"
    user_arrays: ClassVar[tuple[str, ...]] = ("users",)
    users: np.ndarray
    items: np.ndarray
    fold: str | None = None
    regularization: float = 0.0
    alpha: float = 1.0

    @property
    def folds_in(self) -> bool:  # type: ignore[override]
        return self.fold is not None

    def user_vectors(self, users: np.ndarray, ctx: Context) -> np.ndarray:
        """The vectors of context rows ``users``: learned ones, or folded in from the rows'
        histories in a fold-in context (:attr:`Context.folded`)."""
        if not ctx.folded or self.fold is None:
            return self.users[ctx.owner(users)]
        history = csr_rows(ctx.seen, users)
        if self.fold == "als":
            return als_user_vectors(self._items64(), history, self.regularization, self.alpha, self._gram())
        if self.fold == "profile":
            profile = np.asarray(history @ self._items64())
            norm = np.linalg.norm(profile, axis=1, keepdims=True)
            return np.divide(profile, norm, out=np.zeros_like(profile), where=norm > 0)
        raise ValueError(f"unknown fold-in {self.fold!r}; expected 'als' or 'profile'")

    def _items64(self) -> np.ndarray:
        """The item vectors as float64 (cached: fold-in solves and scores in float64)."""
        y = getattr(self, "_items64_cache", None)
        if y is None or y.shape != self.items.shape:
            y = np.ascontiguousarray(self.items, dtype=np.float64)
            object.__setattr__(self, "_items64_cache", y)
        return y

    def _gram(self) -> np.ndarray:
        gram = getattr(self, "_gram_cache", None)
        if gram is None:
            y = self._items64()
            gram = y.T @ y
            object.__setattr__(self, "_gram_cache", gram)
        return gram

    def score(self, users: np.ndarray, ctx: Context) -> np.ndarray:
        vectors = self.user_vectors(users, ctx)
        items = self._items64() if vectors.dtype == np.float64 else self.items
        return np.asarray(vectors @ items.T, dtype=np.float32)

    def state(self):
        params = {}
        if self.fold is not None:
            params = {
                "fold": self.fold,
                "regularization": float(self.regularization),
                "alpha": float(self.alpha),
            }
        return {"users": self.users, "items": self.items}, params

    @classmethod
    def from_state(cls, arrays, params, parts):
        return cls(
            users=arrays["users"],
            items=arrays["items"],
            fold=params.get("fold"),
            regularization=float(params.get("regularization", 0.0)),
            alpha=float(params.get("alpha", 1.0)),
        )

    def check(self, n_users, n_items, path="scorer"):
        arrays = {"users": self.users, "items": self.items}
        _expect(path, self.kind, "users", _shape(arrays, "users", self.kind, path), (n_users, None))
        _expect(path, self.kind, "items", _shape(arrays, "items", self.kind, path), (n_items, None))
        if self.users.shape[1] != self.items.shape[1]:
            raise ValueError(f"{path}: factors of users and items differ in width")


@dataclass(kw_only=True)
class NeuMF(Scorer):
    """NeuMF logits from the network's ``state_dict`` (NumPy arrays or tensors) and its sizes.

    The first MLP layer is split into its user and item halves (W1 [p ; q] = W1_u p + W1_i q), so
    the item half is computed once per scorer, not per user; users are scored in chunks of at
    most ``block_elements`` activations.
    """

    kind: ClassVar[str] = "neumf"
    folds_in: ClassVar[bool] = False  # per-user embeddings: a new history needs retraining
    user_arrays: ClassVar[tuple[str, ...]] = ("user_gmf.weight", "user_mlp.weight")
    weights: dict[str, Any]
    factors: int
    mlp_embedding: int
    mlp_layers: list[int]
    block_elements: int = 1 << 23
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def _item_side(self):
        import torch

        if "item" not in self._cache:
            w = {
                k: torch.as_tensor(np.asarray(v)) if isinstance(v, np.ndarray) else v
                for k, v in self.weights.items()
            }
            m, f = self.mlp_embedding, self.factors
            with torch.no_grad():
                w_out = w["out.weight"].reshape(-1)
                item_first = w["item_mlp.weight"] @ w["mlp.0.weight"][:, m:].T
                item_gmf = w["item_gmf.weight"] * w_out[:f]
            self._cache["item"] = (w, item_first, w_out, item_gmf)
        return self._cache["item"]

    def score(self, users: np.ndarray, ctx: Context) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        w, item_first, w_out, item_gmf = self._item_side()
        m, f = self.mlp_embedding, self.factors
        n_items = item_first.shape[0]
        step = max(1, self.block_elements // max(1, n_items * max(self.mlp_layers)))
        u_all = torch.as_tensor(ctx.owner(users))
        parts = []
        with torch.no_grad():
            w1, b1 = w["mlp.0.weight"], w["mlp.0.bias"]
            for start in range(0, len(u_all), step):
                u = u_all[start : start + step]
                h = F.relu((w["user_mlp.weight"][u] @ w1[:, :m].T + b1)[:, None, :] + item_first[None])
                for j in range(1, len(self.mlp_layers)):
                    h = F.relu(F.linear(h, w[f"mlp.{j}.weight"], w[f"mlp.{j}.bias"]))
                parts.append(w["user_gmf.weight"][u] @ item_gmf.T + h @ w_out[f:] + w["out.bias"])
            out = torch.cat(parts) if parts else torch.empty(0, n_items)
        return out.numpy().astype(np.float32)

    def state(self):
        arrays = {
            k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
            for k, v in self.weights.items()
        }
        params = {
            "factors": self.factors,
            "mlp_embedding": self.mlp_embedding,
            "mlp_layers": list(self.mlp_layers),
        }
        return arrays, params

    @classmethod
    def from_state(cls, arrays, params, parts):
        missing = [k for k in ("factors", "mlp_embedding", "mlp_layers") if k not in params]
        if missing:
            raise ValueError(f"neumf params lack {missing}")
        return cls(
            weights=arrays,
            factors=int(params["factors"]),
            mlp_embedding=int(params["mlp_embedding"]),
            mlp_layers=[int(x) for x in params["mlp_layers"]],
        )

    def check(self, n_users, n_items, path="scorer"):
        for name, rows in (
            ("user_gmf.weight", n_users),
            ("item_gmf.weight", n_items),
            ("user_mlp.weight", n_users),
            ("item_mlp.weight", n_items),
        ):
            _expect(path, self.kind, name, _shape(self.weights, name, self.kind, path), (rows, None))


@dataclass(kw_only=True)
class Autoencoder(Scorer):
    """A variational autoencoder's mean forward pass over the user's history row (Mult-VAE):
    ``x = seen[u] / ||seen[u]||_2``, ``h = tanh(x w1 + b1)``, ``mu = h w_mu + b_mu`` (the mean;
    no sampling, no dropout), ``scores = tanh(mu w2 + b2) w3 + b3`` (logits: the softmax does not
    change the ranking). Weights are stored input x output. It reads the current history, so it
    folds in an updated one without refitting; users are scored in blocks of ``block_users``."""

    kind: ClassVar[str] = "autoencoder"
    w1: np.ndarray  # items x hidden
    b1: np.ndarray
    w_mu: np.ndarray  # hidden x latent
    b_mu: np.ndarray
    w2: np.ndarray  # latent x hidden
    b2: np.ndarray
    w3: np.ndarray  # hidden x items
    b3: np.ndarray
    block_users: int = 1024

    ARRAYS: ClassVar[tuple[str, ...]] = ("w1", "b1", "w_mu", "b_mu", "w2", "b2", "w3", "b3")

    def score(self, users: np.ndarray, ctx: Context) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        out = np.empty((len(users), self.w3.shape[1]), dtype=np.float32)
        for start in range(0, len(users), self.block_users):
            x = csr_rows(ctx.seen, users[start : start + self.block_users]).astype(np.float32)
            norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1), dtype=np.float32)).ravel()
            x = sp.diags(np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)) @ x
            h = np.tanh(np.asarray(x @ self.w1, dtype=np.float32) + self.b1)
            mu = h @ self.w_mu + self.b_mu
            out[start : start + len(x.indptr) - 1] = np.tanh(mu @ self.w2 + self.b2) @ self.w3 + self.b3
        return out

    def state(self):
        return {name: np.asarray(getattr(self, name)) for name in self.ARRAYS}, {}

    @classmethod
    def from_state(cls, arrays, params, parts):
        missing = [name for name in cls.ARRAYS if arrays.get(name) is None]
        if missing:
            raise ValueError(f"an autoencoder scorer needs arrays {missing}")
        return cls(**{name: arrays[name] for name in cls.ARRAYS})

    def check(self, n_users, n_items, path="scorer"):
        arrays = {name: getattr(self, name) for name in self.ARRAYS}
        shapes = {name: _shape(arrays, name, self.kind, path) for name in self.ARRAYS}
        _expect(path, self.kind, "w1", shapes["w1"], (n_items, None))
        hidden = shapes["w1"][1]
        _expect(path, self.kind, "b1", shapes["b1"], (hidden,))
        _expect(path, self.kind, "w_mu", shapes["w_mu"], (hidden, None))
        latent = shapes["w_mu"][1]
        _expect(path, self.kind, "b_mu", shapes["b_mu"], (latent,))
        _expect(path, self.kind, "w2", shapes["w2"], (latent, None))
        _expect(path, self.kind, "b2", shapes["b2"], (shapes["w2"][1],))
        _expect(path, self.kind, "w3", shapes["w3"], (shapes["w2"][1], n_items))
        _expect(path, self.kind, "b3", shapes["b3"], (n_items,))


@dataclass(kw_only=True)
class Blend(Scorer):
    """Weighted fusion of parts (see the module doc). ``cache``: transformed part scores keyed by
    the users asked for, kept while a caller tries many weights on the same users (fitting)."""

    kind: ClassVar[str] = "blend"
    members: list[Scorer]
    weights: np.ndarray
    method: str = "minmax"
    rrf_k: float = 60.0
    cache: dict[bytes, list[np.ndarray]] | None = field(default=None, repr=False)

    @property
    def parts(self) -> list[Scorer]:
        return self.members

    def personalised(
        self, users: np.ndarray, history: np.ndarray, owners: np.ndarray | None = None
    ) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        out = np.zeros(len(users), dtype=bool)
        for part in self.members:
            out |= part.personalised(users, history, owners)
        return out

    def single(self) -> int | None:
        """The one part with a positive weight, if only one has."""
        positive = np.flatnonzero(np.asarray(self.weights) > 0)
        return int(positive[0]) if len(positive) == 1 else None

    def score(self, users: np.ndarray, ctx: Context) -> np.ndarray:
        weights = np.asarray(self.weights, dtype=np.float64)
        if len(weights) != len(self.members):
            raise ValueError(f"blend has {len(self.members)} parts but {len(weights)} weights")
        one = self.single()
        if one is not None:
            return self.members[one].answer(users, ctx)
        parts = self.transformed(users, ctx)
        out = np.zeros((len(users), ctx.n_items), dtype=np.float64)
        veto = np.zeros(out.shape, dtype=bool)
        for weight, part in zip(weights, parts):
            if weight <= 0:
                continue
            finite = np.isfinite(part)
            veto |= ~finite
            out += weight * np.where(finite, part, 0.0)
        out[veto] = -np.inf
        return out.astype(np.float32)

    def transformed(self, users: np.ndarray, ctx: Context) -> list[np.ndarray | None]:
        """Each part's answer made comparable (:func:`transform`); parts with weight 0 are
        skipped (None) unless a cache keeps them for other weights."""
        key = np.asarray(users).tobytes()
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        seen = csr_rows(ctx.excluded, users)
        weights = np.asarray(self.weights)
        parts = [
            transform(part.answer(users, ctx), seen, self.method, self.rrf_k)
            if self.cache is not None or weight > 0
            else None
            for weight, part in zip(weights, self.members)
        ]
        if self.cache is not None:
            self.cache[key] = parts
        return parts

    def state(self):
        weights = [float(w) for w in self.weights]
        return {}, {"method": self.method, "weights": weights, "rrf_k": float(self.rrf_k)}

    @classmethod
    def from_state(cls, arrays, params, parts):
        if params.get("candidates", "unseen") != "unseen":
            raise ValueError(f"blend candidates {params['candidates']!r}: blends are over unseen items")
        return cls(
            members=parts,
            weights=np.asarray(params["weights"], dtype=np.float64),
            method=params.get("method", "minmax"),
            rrf_k=float(params.get("rrf_k", 60.0)),
        )

    def check(self, n_users, n_items, path="scorer"):
        if not self.members:
            raise ValueError(f"{path}: a blend needs parts")
        if len(self.weights) != len(self.members):
            raise ValueError(f"{path}: blend has {len(self.members)} parts but weights {list(self.weights)}")
        if self.method not in ("minmax", "rrf"):
            raise ValueError(f"{path}: unknown blend method {self.method!r}; expected 'minmax' or 'rrf'")
        for i, part in enumerate(self.members):
            part.check(n_users, n_items, f"{path}/part{i}")


def transform(scores: np.ndarray, seen: sp.csr_matrix, method: str, rrf_k: float = 60.0) -> np.ndarray:
    """One part's scores (users x items) made comparable across parts (float64).

    Candidates are the finite scores of items the user has not seen. ``minmax``:
    (s - min) / (max - min) over the candidates (0 for a constant row; seen items are mapped by
    the same formula); ``rrf``: 1 / (rrf_k + rank) with rank 1-based among the candidates by
    descending score, ties by item index, and 0 for seen items. ``-inf`` stays ``-inf``.
    """
    s = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(s)
    seen_mask = np.zeros(s.shape, dtype=bool)
    if seen.nnz:
        rows, cols = seen.nonzero()
        seen_mask[rows, cols] = True
    candidate = finite & ~seen_mask
    if method == "minmax":
        masked_lo = np.where(candidate, s, np.inf).min(axis=1, initial=np.inf)
        masked_hi = np.where(candidate, s, -np.inf).max(axis=1, initial=-np.inf)
        has = candidate.any(axis=1)
        lo = np.where(has, masked_lo, 0.0)[:, None]
        span = np.where(has, masked_hi - np.where(has, masked_lo, 0.0), 0.0)[:, None]
        out = np.divide(s - lo, span, out=np.zeros_like(s), where=(span > 0) & finite)
    elif method == "rrf":
        ranked = np.where(candidate, s, -np.inf)
        order = np.argsort(-ranked, axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(1, s.shape[1] + 1)[None, :], axis=1)
        out = np.where(candidate, 1.0 / (rrf_k + ranks), 0.0)
    else:
        raise ValueError(f"unknown blend method {method!r}; choose minmax or rrf")
    out[~finite] = -np.inf
    return out


@dataclass(kw_only=True)
class Segmented(Scorer):
    """``scores[segment[u]]``: the same scores for every user of a segment (segment popularity).

    ``segment`` holds each known user's segment (-1: none); a user without one (or unknown) gets
    the context's popularity. Answers cold users itself (their segment may come from their
    attributes)."""

    kind: ClassVar[str] = "segmented"
    user_arrays: ClassVar[tuple[str, ...]] = ("segment",)
    scores: np.ndarray  # segments x items
    segment: np.ndarray  # per known user, -1: none

    def segments_of(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        out = np.full(len(users), -1, dtype=np.int64)
        known = users >= 0
        out[known] = self.segment[users[known]]
        return out

    def personalised(
        self, users: np.ndarray, history: np.ndarray, owners: np.ndarray | None = None
    ) -> np.ndarray:
        return self.segments_of(_owner(users, owners)) >= 0

    def score(self, users: np.ndarray, ctx: Context) -> np.ndarray:
        return np.asarray(self.scores, dtype=np.float32)[self.segments_of(ctx.owner(users))]

    def state(self):
        return {"scores": self.scores, "segment": self.segment}, {}

    @classmethod
    def from_state(cls, arrays, params, parts):
        return cls(scores=arrays["scores"], segment=arrays["segment"])

    def check(self, n_users, n_items, path="scorer"):
        arrays = {"scores": self.scores, "segment": self.segment}
        _expect(path, self.kind, "scores", _shape(arrays, "scores", self.kind, path), (None, n_items))
        _expect(path, self.kind, "segment", _shape(arrays, "segment", self.kind, path), (n_users,))
        if len(self.segment) and int(np.max(self.segment)) >= self.scores.shape[0]:
            raise ValueError(f"{path}: a user's segment has no row in scores")


@dataclass(kw_only=True)
class Routed(Scorer):
    """Each user answered by one part, chosen by their segment: ``route[u]`` is the part of
    known user u (an unknown user gets part ``default``); the part answers as the fitted model
    would (its own scores, or its fallback)."""

    kind: ClassVar[str] = "routed"
    user_arrays: ClassVar[tuple[str, ...]] = ("route",)
    members: list[Scorer]
    route: np.ndarray  # per known user: index into members
    default: int = 0

    @property
    def parts(self) -> list[Scorer]:
        return list(self.members)

    def routes_of(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        out = np.full(len(users), self.default, dtype=np.int64)
        known = users >= 0
        out[known] = self.route[users[known]]
        return out

    def personalised(
        self, users: np.ndarray, history: np.ndarray, owners: np.ndarray | None = None
    ) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        routes = self.routes_of(_owner(users, owners))
        out = np.zeros(len(users), dtype=bool)
        for i, member in enumerate(self.members):
            rows = routes == i
            if rows.any():
                out[rows] = member.personalised(users[rows], history, owners)
        return out

    def answer(self, users: np.ndarray, ctx: Context) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        routes = self.routes_of(ctx.owner(users))
        out = np.empty((len(users), ctx.n_items), dtype=np.float32)
        for i, member in enumerate(self.members):
            rows = routes == i
            if rows.any():
                out[rows] = member.answer(users[rows], ctx)
        return out

    def score(self, users: np.ndarray, ctx: Context) -> np.ndarray:
        return self.answer(users, ctx)

    def state(self):
        return {"route": self.route}, {"default": int(self.default)}

    @classmethod
    def from_state(cls, arrays, params, parts):
        return cls(members=parts, route=arrays["route"], default=int(params.get("default", 0)))

    def check(self, n_users, n_items, path="scorer"):
        _expect(path, self.kind, "route", _shape({"route": self.route}, "route", self.kind, path), (n_users,))
        if not self.members:
            raise ValueError(f"{path}: a routed scorer needs parts")
        if len(self.route) and not (
            int(np.min(self.route)) >= 0 and int(np.max(self.route)) < len(self.members)
        ):
            raise ValueError(f"{path}: a route names no part")
        if not 0 <= self.default < len(self.members):
            raise ValueError(f"{path}: the default route names no part")
        for i, part in enumerate(self.members):
            part.check(n_users, n_items, f"{path}/part{i}")


@dataclass(kw_only=True)
class Computed(Scorer):
    """Scores computed by a function of the users (models that are compared but never exported:
    the random floor, peers' models run by their own library)."""

    kind: ClassVar[str] = "computed"
    exportable: ClassVar[bool] = False
    function: Any

    def score(self, users: np.ndarray, ctx: Context) -> np.ndarray:
        return np.asarray(self.function(users), dtype=np.float32)
