"""Side features of the two-tower model, encoded as bags of integer ids per user / item.

Every feature becomes one embedding table whose row 0 is "unknown" (missing value, or an ID
without training interactions), so that a user or item the training data never showed still
has a representation. One feature of ``n`` entities is a CSR matrix (entities x table rows)
whose row ``e`` lists the ids in entity ``e``'s bag: exactly one id for single-valued features,
one per value for list-valued ones (genres; an empty list becomes the unknown id).

Encodings, by column type:

- the entity ID (``user_id`` / ``item_id``): index + 1 for entities with training
  interactions, else 0 (unknown);
- numbers: buckets ``1 + digitize(x, edges)``, with fixed ``edges`` where given
  (``bucket_edges``, e.g. age: 18, 25, 35, 45, 50, 56) else equal-frequency edges
  (``numeric_buckets`` quantiles of the observed values); missing: 0;
- strings: one id per distinct value (sorted), after keeping the first ``prefix[column]``
  characters where given (zip code -> region); missing: 0;
- lists (genres): one id per distinct element, the bag holds every element;
- the user's history length (context): in training, the 0-based position of the example in its
  user's history (in the protocol's total order), bucketed by ``edges``; when scoring, the
  user's number of training interactions (0: cold). Cold users are thereby scored like users at
  the start of their history, who behave differently (new MovieLens users first rate the
  movies the sign-up page shows).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from personalize.core.errors import ConfigError


@dataclass
class FeatureTable:
    """One encoded feature: ``rows`` (entities x cardinality) lists each entity's ids."""

    name: str
    rows: sp.csr_matrix
    labels: list[str]  # label of every id (index 0: "<unknown>")

    @property
    def cardinality(self) -> int:
        return self.rows.shape[1]

    @functools.cached_property
    def single(self) -> np.ndarray | None:
        """The id of every entity when each has exactly one (else None)."""
        if (np.diff(self.rows.indptr) == 1).all():
            return self.rows.indices.astype(np.int64)
        return None


def _bag_matrix(bags: list[list[int]], cardinality: int) -> sp.csr_matrix:
    lengths = np.array([len(b) for b in bags], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = np.array([i for b in bags for i in b], dtype=np.int64)
    data = np.ones(len(indices), dtype=np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(len(bags), cardinality))


def _single(ids: np.ndarray, cardinality: int) -> sp.csr_matrix:
    n = len(ids)
    return sp.csr_matrix(
        (np.ones(n, dtype=np.float32), ids.astype(np.int64), np.arange(n + 1, dtype=np.int64)),
        shape=(n, cardinality),
    )


def id_feature(name: str, has_history: np.ndarray) -> FeatureTable:
    """Entity e -> e + 1 if it has training interactions, else 0 (the unknown row)."""
    n = len(has_history)
    ids = np.where(has_history, np.arange(1, n + 1), 0)
    return FeatureTable(name, _single(ids, n + 1), ["<unknown>", *map(str, range(n))])


def history_buckets(positions: np.ndarray, edges: list[int]) -> np.ndarray:
    """Bucket ids 1 + digitize(position, edges) of 0-based positions in a user's history."""
    return 1 + np.digitize(np.asarray(positions), np.asarray(sorted(edges)), right=False)


def history_feature(counts: np.ndarray, edges: list[int]) -> FeatureTable:
    """Serving-time history bucket of every user: the position their next interaction would
    have (= their number of training interactions; 0 for cold users)."""
    ids = history_buckets(counts, edges)
    bounds = [0, *sorted(edges), np.inf]
    labels = ["<unknown>"] + [f"[{lo:g}, {hi:g})" for lo, hi in itertools.pairwise(bounds)]
    return FeatureTable("history", _single(ids, len(edges) + 2), labels)


def _is_list(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def encode_column(
    frame: pd.DataFrame,
    column: str,
    *,
    table: str,
    bucket_edges: list[float] | None = None,
    numeric_buckets: int = 8,
    prefix: int | None = None,
) -> FeatureTable:
    """Encode ``frame[column]`` (rows aligned with the entity index) as a feature table."""
    if column not in frame.columns:
        available = ", ".join(c for c in frame.columns) or "none"
        raise ConfigError(f"{table} feature {column!r} is not a column of the {table} table ({available})")
    values = frame[column]
    non_null = values[values.map(lambda v: _is_list(v) or not pd.isna(v))]
    if len(non_null) and non_null.map(_is_list).all():
        vocab = sorted({str(x) for v in non_null for x in v if not pd.isna(x)})
        code = {g: j + 1 for j, g in enumerate(vocab)}
        bags = [
            [code[str(x)] for x in v if not pd.isna(x)] or [0] if _is_list(v) else [0]
            for v in values.to_numpy(dtype=object)
        ]
        return FeatureTable(column, _bag_matrix(bags, len(vocab) + 1), ["<unknown>", *vocab])
    if pd.api.types.is_numeric_dtype(values) and prefix is None:
        x = values.to_numpy(dtype=np.float64)
        observed = x[~np.isnan(x)]
        if bucket_edges is not None:
            edges = np.asarray(sorted(bucket_edges), dtype=np.float64)
        elif len(observed):
            qs = np.quantile(observed, np.linspace(0, 1, numeric_buckets + 1)[1:-1])
            edges = np.unique(qs)
        else:
            edges = np.zeros(0)
        ids = np.where(np.isnan(x), 0, 1 + np.digitize(np.nan_to_num(x), edges))
        bounds = [-np.inf, *edges.tolist(), np.inf]
        labels = ["<unknown>"] + [f"[{lo:g}, {hi:g})" for lo, hi in itertools.pairwise(bounds)]
        return FeatureTable(column, _single(ids, len(edges) + 2), labels)
    text = [None if pd.isna(v) else str(v).strip().upper() for v in values.to_numpy(dtype=object)]
    if prefix is not None:
        text = [None if v is None else v[:prefix] for v in text]
    vocab = sorted({v for v in text if v})
    code = {v: j + 1 for j, v in enumerate(vocab)}
    ids = np.array([code.get(v, 0) if v else 0 for v in text], dtype=np.int64)
    return FeatureTable(column, _single(ids, len(vocab) + 1), ["<unknown>", *vocab])


@dataclass
class EntityFeatures:
    """All sparse features of one side (users or items), plus optional dense vectors."""

    tables: list[FeatureTable]
    dense: np.ndarray | None = None  # (entities, d) float32

    def gather(
        self,
        entities: np.ndarray,
        drop_id: np.ndarray | None = None,
        override: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Jagged ids of ``entities`` in KeyedJaggedTensor layout (feature-major):
        ``values``, ``lengths`` (features x batch, flattened) and the dense rows.

        ``drop_id``: boolean mask of batch entries whose ID (the first table) is replaced by
        the unknown id 0 (ID dropout). ``override``: per-entry ids of single-valued tables
        that depend on the example rather than the entity (context, e.g. history length)."""
        values, lengths = [], []
        for j, table in enumerate(self.tables):
            single = table.single
            if override is not None and table.name in override:
                ids = np.asarray(override[table.name], dtype=np.int64)
                counts = np.ones(len(entities), dtype=np.int64)
            elif single is not None:  # one id per entity: a plain lookup
                ids = single[entities]
                counts = np.ones(len(entities), dtype=np.int64)
            else:
                sub = table.rows[entities]
                ids = sub.indices.astype(np.int64)
                counts = np.diff(sub.indptr).astype(np.int64)
            if j == 0 and drop_id is not None:
                ids = np.where(drop_id, 0, ids)  # the ID table has exactly one id per entity
            values.append(ids)
            lengths.append(counts)
        dense = None if self.dense is None else self.dense[entities]
        return np.concatenate(values), np.concatenate(lengths), dense
