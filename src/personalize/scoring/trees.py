"""Gradient-boosted trees as plain data: the NumPy evaluator of an exported segment classifier
and the encoding of its inputs (profile columns or a request's raw attributes).

A model is two things: ``arrays`` (a dict of NumPy arrays) and ``params`` (JSON-serialisable).
Nothing else is needed to answer, so the model can be shipped without scikit-learn; this module
imports NumPy only.

Arrays (``T`` trees, ``M`` nodes over all trees, ``K`` raw outputs, ``C`` classes)::

    classes         (C,)    the class labels (segments), in output order
    baseline        (K,)    the raw prediction before any tree (the model's intercept)
    tree_start      (T,)    index of each tree's root in the node arrays; trees are stored
                            iteration by iteration, the K trees of one iteration in output order
    feature         (M,)    feature index a node splits on (-1 at leaves)
    threshold       (M,)    a value ``x <= threshold`` goes left, a larger one right
    missing_left    (M,)    bool: a missing value (NaN) goes left (else right)
    left, right     (M,)    absolute node indices of the children (-1 at leaves)
    is_leaf         (M,)    bool
    value           (M,)    a leaf's raw contribution (0 at split nodes)
    pca_mean        (E,)    the embedding projection: features ``(x - pca_mean) @ pca_components.T``
    pca_components  (P, E)  (E = P = 0 when the model has no embedding features)

Params: ``format``, ``loss`` (``multinomial``: K = C outputs, probabilities the softmax of the
raw sums; ``binomial``: K = 1, p(class 1) = 1 / (1 + exp(-raw))), ``feature_names``, and the
feature layout in this order: ``numeric`` (columns taken as they are), ``embedding`` (columns
projected to ``P`` components), ``age`` (the age bucket's position in ``age_buckets``, or
missing), ``categorical`` (one one-hot block per attribute, its vocabulary in order).

The raw prediction of a row is ``baseline + sum over trees of leaf value`` (each tree adding to
its output), summed iteration by iteration as scikit-learn does, so the result equals
``HistGradientBoostingClassifier.predict_proba`` to rounding.

Encoding rules: a categorical value outside its vocabulary, missing included, is an all-zero
block; the age bucket of a profile row is missing (NaN) when its label is not one of the buckets
(``unknown``); a request's age (years) falls in the bucket with ``lo <= age <= hi``, else it is
missing; a missing age is NaN and the trees send it the way each split learned for missing values
(or, for a feature without missing values in training, to the child with more training samples).
A zip code's region is its first character when that is a digit 0-9 (``zip 9``), ``other`` for any
other code, ``unknown`` when missing: the same rule as the profile table's ``region``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1
ARRAYS = (
    "classes",
    "baseline",
    "tree_start",
    "feature",
    "threshold",
    "missing_left",
    "left",
    "right",
    "is_leaf",
    "value",
    "pca_mean",
    "pca_components",
)
REQUEST_FIELDS = ("age", "gender", "occupation", "zip_code")  # raw attributes of a request
AGE_FEATURE = "age_bucket"
REGION = "region"
DIGITS = frozenset("0123456789")
BLOCK_ROWS = 4096  # rows evaluated at once (memory: rows x trees node indices)


# --------------------------------------------------------------------------------- evaluation


def raw_predict(arrays: Mapping[str, np.ndarray], params: Mapping[str, Any], x: np.ndarray) -> np.ndarray:
    """Raw predictions (rows, K): the baseline plus every tree's leaf value, added iteration by
    iteration. ``x``: encoded features (rows, len(feature_names)), float64, NaN for missing."""
    x = np.asarray(x, dtype=np.float64)
    names = params["feature_names"]
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValueError(f"features have shape {x.shape}; expected (rows, {len(names)}): {names}")
    baseline = np.asarray(arrays["baseline"], dtype=np.float64)
    k = len(baseline)
    starts = np.asarray(arrays["tree_start"], dtype=np.int64)
    if len(starts) % k:
        raise ValueError(f"{len(starts)} trees do not make whole iterations of {k} outputs")
    out = np.empty((len(x), k), dtype=np.float64)
    for lo in range(0, len(x), BLOCK_ROWS):
        block = x[lo : lo + BLOCK_ROWS]
        leaves = _leaf_values(arrays, starts, block).reshape(len(block), -1, k)
        raw = np.zeros((len(block), k), dtype=np.float64)
        raw += baseline
        for i in range(leaves.shape[1]):
            raw += leaves[:, i, :]
        out[lo : lo + BLOCK_ROWS] = raw
    return out


def _leaf_values(arrays: Mapping[str, np.ndarray], starts: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The leaf value each row reaches in each tree (rows, T): all rows and trees descend
    together, one level per step."""
    feature, threshold = arrays["feature"], arrays["threshold"]
    left, right = arrays["left"], arrays["right"]
    missing_left, is_leaf = arrays["missing_left"].astype(bool), arrays["is_leaf"].astype(bool)
    node = np.broadcast_to(starts, (len(x), len(starts))).copy()
    rows = np.arange(len(x))[:, None]
    for _ in range(len(feature) + 1):
        leaf = is_leaf[node]
        if leaf.all():
            return np.asarray(arrays["value"], dtype=np.float64)[node]
        value = x[rows, np.where(leaf, 0, feature[node])]
        with np.errstate(invalid="ignore"):
            go_left = np.where(np.isnan(value), missing_left[node], value <= threshold[node])
        node = np.where(leaf, node, np.where(go_left, left[node], right[node]))
    raise ValueError("tree arrays contain a cycle: a path from a root never reaches a leaf")


def predict_proba(arrays: Mapping[str, np.ndarray], params: Mapping[str, Any], x: np.ndarray) -> np.ndarray:
    """Class probabilities (rows, C): softmax of the raw sums (``multinomial``), or for two
    classes ``[1 - p, p]`` with ``p = 1 / (1 + exp(-raw))`` (``binomial``)."""
    raw = raw_predict(arrays, params, x)
    if params["loss"] == "binomial":
        p = 1.0 / (1.0 + np.exp(-raw[:, 0]))
        return np.column_stack([1.0 - p, p])
    shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def predict(arrays: Mapping[str, np.ndarray], params: Mapping[str, Any], x: np.ndarray) -> np.ndarray:
    """The most probable class of each row (the first in class order on ties)."""
    return np.asarray(arrays["classes"])[np.argmax(predict_proba(arrays, params, x), axis=1)]


# --------------------------------------------------------------------------------- encoding


def is_missing(value: Any) -> bool:
    """None, NaN, NaT or pandas' NA (whose comparison has no truth value)."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return True


def one_hot(values: Sequence[Any], vocabulary: Sequence[str]) -> np.ndarray:
    """(rows, len(vocabulary)) of 0/1: column j is 1 where the value (as text) is vocabulary[j];
    a value outside the vocabulary, missing included, gives an all-zero row."""
    position = {v: j for j, v in enumerate(vocabulary)}
    out = np.zeros((len(values), len(vocabulary)), dtype=np.float64)
    for i, value in enumerate(values):
        j = None if is_missing(value) else position.get(str(value))
        if j is not None:
            out[i, j] = 1.0
    return out


def age_bucket_label(age: Any, buckets: Sequence[Sequence[Any]], row: int = 0) -> str | None:
    """The label of the bucket ``lo <= age <= hi`` (age in years) that holds ``age``; None when
    the age is missing or in no bucket. A value that is not a number is an error."""
    if is_missing(age):
        return None
    try:
        years = float(age)
    except (TypeError, ValueError):
        raise ValueError(f"request row {row}: age {age!r} is not a number of years (or missing)") from None
    if years != years:
        return None
    for lo, hi, label in buckets:
        if lo <= years <= hi:
            return str(label)
    return None


def age_codes(labels: Sequence[Any], buckets: Sequence[Sequence[Any]]) -> np.ndarray:
    """Each age bucket label's position in ``buckets`` (float64); NaN for a label that is no
    bucket (``unknown``, missing)."""
    position = {str(label): float(j) for j, (_, _, label) in enumerate(buckets)}
    return np.array(
        [np.nan if is_missing(v) else position.get(str(v), np.nan) for v in labels], dtype=np.float64
    )


def zip_region(zip_code: Any) -> str:
    """The region of a zip code (module doc): ``zip <first digit>``, ``other`` or ``unknown``."""
    if is_missing(zip_code):
        return "unknown"
    text = str(zip_code).strip()
    return f"zip {text[0]}" if text[:1] in DIGITS else "other"


def encode(
    columns: Mapping[str, Sequence[Any]], arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]
) -> np.ndarray:
    """The feature matrix (rows, len(feature_names)) of rows given as columns: every name in
    ``params['numeric']`` and ``params['embedding']`` (numbers), ``age_bucket`` (bucket labels)
    when the model uses age, and each attribute of ``params['categorical']``."""
    needed = [*params["numeric"], *params["embedding"], *params["categorical"]]
    if params.get("age"):
        needed.append(params["age"])
    absent = [c for c in needed if c not in columns]
    if absent:
        raise ValueError(f"rows lack the model's input columns {absent}")
    n = len(columns[needed[0]]) if needed else 0
    parts = []
    for name in params["numeric"]:
        parts.append(_numbers(columns[name], name)[:, None])
    if params["embedding"]:
        emb = np.column_stack([_numbers(columns[c], c) for c in params["embedding"]])
        mean = np.asarray(arrays["pca_mean"], dtype=np.float64)
        components = np.asarray(arrays["pca_components"], dtype=np.float64)
        parts.append((emb - mean) @ components.T)
    if params.get("age"):
        parts.append(age_codes(list(columns[params["age"]]), params["age_buckets"])[:, None])
    for name, vocabulary in params["categorical"].items():
        parts.append(one_hot(list(columns[name]), vocabulary))
    x = np.hstack(parts) if parts else np.zeros((n, 0))
    if x.shape[1] != len(params["feature_names"]):
        raise ValueError(f"encoded {x.shape[1]} features; the model has {len(params['feature_names'])}")
    return x


def _numbers(values: Sequence[Any], name: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"column {name!r} holds values that are not numbers") from None


def request_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """A request's raw attributes (``age`` in years, ``gender``, ``occupation``, ``zip_code``;
    an absent key is a missing value) as columns: ``age`` as given (bucketed by
    :func:`encode_request`), ``gender``, ``occupation``, and ``region`` from the zip code."""
    return {
        "age": [row.get("age") for row in rows],
        "gender": [row.get("gender") for row in rows],
        "occupation": [row.get("occupation") for row in rows],
        REGION: [zip_region(row.get("zip_code")) for row in rows],
    }


def encode_request(
    rows: Sequence[Mapping[str, Any]], arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]
) -> np.ndarray:
    """The feature matrix of a demographics-only model for rows of raw attributes (module doc):
    the age bucketed by ``params['age_buckets']``, the zip code turned into its region, the rest
    one-hot with the model's vocabularies. A model that needs profile features cannot encode a
    request (ValueError)."""
    if params["numeric"] or params["embedding"]:
        raise ValueError(
            "this model reads profile features (interactions); only a demographics-only model "
            "encodes a request's raw attributes"
        )
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"request row {i} is {type(row).__name__}; expected a mapping of attributes")
    raw = request_columns(rows)
    columns: dict[str, list[Any]] = {k: v for k, v in raw.items() if k != "age"}
    if params.get("age"):
        columns[params["age"]] = [
            age_bucket_label(age, params["age_buckets"], i) for i, age in enumerate(raw["age"])
        ]
    return encode(columns, arrays, params)


# --------------------------------------------------------------------------------- files


def save_trees(folder: str | Path, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> Path:
    """Write the model as ``<name>.npy`` files and ``params.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ARRAYS:
        np.save(folder / f"{name}.npy", np.asarray(arrays[name]), allow_pickle=False)
    (folder / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True))
    return folder


def load_trees(folder: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a model written by :func:`save_trees`."""
    folder = Path(folder)
    params = json.loads((folder / "params.json").read_text())
    if params.get("format") != FORMAT:
        raise ValueError(f"{folder / 'params.json'}: format {params.get('format')!r}; expected {FORMAT}")
    arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in ARRAYS}
    return arrays, params
