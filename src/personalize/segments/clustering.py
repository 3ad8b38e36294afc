"""Clustering the scaled user profile into segments: the methods, the choice of the number of
segments ``k``, its stability, and the fitted model that labels new users.

The space
    Every distance is Euclidean in the scaled profile (:class:`ProfileScaler` output: blocks
    weighted to equal total variance on the training users). :func:`profile_scaler` builds the
    scaler a :class:`~personalize.config.segments.ProfileConfig` describes.

The methods (:func:`cluster`)
    ``kmeans``  scikit-learn K-Means (k-means++, ``n_init`` restarts, the lowest inertia kept);
    ``ward``    agglomerative clustering with Ward linkage (deterministic: no seed).
    Both run on one thread (``threadpoolctl``): on tables of this size the OpenMP pool costs
    more than it saves, and the result does not depend on the machine's thread count.

Segments (:func:`segments_of`)
    A method's segments are the centroids (means) of its clusters, and every user -- training
    or new -- belongs to the segment of the nearest centroid: one rule for both methods, so
    that the segments scored in the selection table are the ones the model assigns. For
    K-Means this is the fitted partition (a converged K-Means partition is its own
    nearest-centroid partition). Ward clusters are not nearest-centroid cells: the rule moves
    the users whose Ward cluster is not their nearest centroid (``reassigned_share`` in the
    table, ``reassigned`` in the model), which can be many users where the structure is weak.

Segment numbers (:func:`canonical_labels`)
    Segment 0 is the largest, then by decreasing size; equal sizes are ordered by their
    centroids' coordinates (lexicographic, rounded to 1e-9). A relabelled partition, a
    different seed that finds the same partition, or a shuffled row order therefore give the
    same number to the same users.

The selection table (:func:`selection_table`), one row per (method, k), of the segments above
    ``silhouette``          mean over users of (b - a) / max(a, b), a = mean distance to the
                            own segment, b = to the nearest other segment; in [-1, 1], higher
                            is better;
    ``davies_bouldin``      mean over segments of the largest (s_i + s_j) / d(c_i, c_j), s the
                            mean distance to the centroid; >= 0, lower is better;
    ``calinski_harabasz``   between- over within-segment dispersion, each divided by its
                            degrees of freedom; higher is better;
    ``smallest_share``      share of users in the smallest segment;
    ``reassigned_share``    share of users the nearest-centroid rule moves out of their cluster;
    ``seed_ari`` (``_std``) the adjusted Rand index of each other seed's segments against the
                            segments of ``seed`` (mean and standard deviation over the seeds;
                            Ward has no seed, so 1);
    ``bootstrap_ari`` (``_std``)  the method fitted on a bootstrap resample of the users (drawn
                            with replacement, ``config.bootstrap`` times, the same resamples for
                            every method and k), every user assigned to the nearest centroid of
                            the resample's clusters (for K-Means, ``predict``), adjusted Rand
                            index against the full-data segments (mean and standard deviation
                            over the resamples).
    The adjusted Rand index is 1 for identical partitions and about 0 for chance agreement.

The choice (:func:`choose_k`)
    Among the ks of ``config.method`` in ``config.choose_from`` (inclusive), the highest
    silhouette among those whose bootstrap ARI reaches ``config.min_stability``; if none does,
    the most stable one, and the choice says that the target was missed. Ties go to the
    smaller k.

The model (:class:`SegmentModel`)
    The fitted scaler, the method, k, the seed and one centroid per segment in the scaled
    space; :meth:`SegmentModel.assign` labels any user by the nearest centroid, and gives the
    training users their fitted segments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from personalize.config.segments import ClusteringConfig, ProfileConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError, DataError
from personalize.features.profile_table import ProfileScaler, ProfileTable

METHODS = ("kmeans", "ward")
TABLE_COLUMNS = [
    "method",
    "k",
    "silhouette",
    "davies_bouldin",
    "calinski_harabasz",
    "smallest_share",
    "reassigned_share",
    "seed_ari",
    "seed_ari_std",
    "bootstrap_ari",
    "bootstrap_ari_std",
]
SEGMENT = "segment"


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run native numeric code (BLAS, OpenMP) on one thread inside the block."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


# ------------------------------------------------------------------------------ clustering


def cluster(x: np.ndarray, method: str, k: int, seed: int = 0, n_init: int = 20) -> np.ndarray:
    """Labels (0..k-1, int64, one per row of ``x``) of ``method`` with ``k`` segments.

    ``kmeans``: K-Means, ``n_init`` k-means++ restarts seeded by ``seed``, the lowest inertia
    kept. ``ward``: agglomerative clustering, Ward linkage (``seed`` and ``n_init`` unused)."""
    x = _check_matrix(x)
    if method not in METHODS:
        raise ConfigError(f"unknown clustering method {method!r}; expected one of {list(METHODS)}")
    if not 2 <= k <= len(x):
        raise ConfigError(f"k must be between 2 and the number of users ({len(x)}), got {k}")
    with one_thread():
        if method == "kmeans":
            from sklearn.cluster import KMeans

            labels = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)
        else:
            from sklearn.cluster import AgglomerativeClustering

            labels = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)
    return np.asarray(labels, dtype=np.int64)


def centroids_of(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The mean of each segment's rows (k x d); a segment without rows gets NaN."""
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, labels, x)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def nearest_centroid(x: np.ndarray, centroids: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Index of the nearest centroid (squared Euclidean distance, computed exactly as sums of
    squared differences) for each row of ``x``; ties go to the lower index."""
    out = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        d = ((part[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
        out[start : start + chunk] = np.argmin(d, axis=1)
    return out


def _order(sizes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Old segment numbers in canonical order: by size (largest first), then by the centroids'
    coordinates (lexicographic, rounded to 1e-9)."""
    rounded = np.round(centroids, 9)
    keys = [rounded[:, j] for j in range(rounded.shape[1] - 1, -1, -1)] + [-sizes]
    return np.lexsort(keys)


def canonical_labels(labels: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``labels`` renumbered 0..m-1: segment 0 the largest, then by decreasing size, equal sizes
    by their centroids' coordinates in ``x`` (lexicographic). The result depends only on the
    partition and ``x``, not on the original numbering or the row order."""
    labels = np.asarray(labels)
    if labels.shape != (len(x),):
        raise DataError(f"labels has shape {labels.shape}, expected ({len(x)},) (one per row of x)")
    values, codes = np.unique(labels, return_inverse=True)
    sizes = np.bincount(codes, minlength=len(values))
    order = _order(sizes, centroids_of(np.asarray(x, dtype=np.float64), codes, len(values)))
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values))
    return rank[codes]


# ------------------------------------------------------------------------------- selection


def bootstrap_resamples(n: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` bootstrap resamples of ``n`` rows (row indices drawn with replacement), from
    ``numpy.random.default_rng(seed)``: the same resamples for every method, k and route."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, size=n) for _ in range(count)]


def segments_of(
    x: np.ndarray, method: str, k: int, seed: int = 0, n_init: int = 20
) -> tuple[np.ndarray, np.ndarray, int]:
    """The segments ``method`` defines on ``x``: the centroids (means) of its k clusters, every
    row in the segment of the nearest centroid (:func:`nearest_centroid`), and how many rows
    that moves out of their cluster (0 for K-Means at convergence). Returns (labels,
    centroids, moved)."""
    fitted = cluster(x, method, k, seed, n_init)
    centroids = centroids_of(x, fitted, k)
    labels = nearest_centroid(x, centroids)
    return labels, centroids, int((labels != fitted).sum())


def fit_and_assign(x_fit: np.ndarray, x_all: np.ndarray, method: str, k: int, seed: int, n_init: int):
    """The segments of ``x_fit`` (:func:`segments_of`) extended to every row of ``x_all``: the
    nearest of their centroids (for K-Means, ``predict``)."""
    _, centroids, _ = segments_of(x_fit, method, k, seed, n_init)
    return nearest_centroid(x_all, centroids)


def bootstrap_stability(
    x: np.ndarray,
    reference: np.ndarray,
    method: str,
    k: int,
    resamples: Sequence[np.ndarray],
    seed: int = 0,
    n_init: int = 20,
) -> np.ndarray:
    """Adjusted Rand index against ``reference`` of the partition found on each resample and
    extended to every row (:func:`fit_and_assign`); one value per resample."""
    from sklearn.metrics import adjusted_rand_score

    return np.array(
        [
            adjusted_rand_score(reference, fit_and_assign(x[idx], x, method, k, seed, n_init))
            for idx in resamples
        ]
    )


def selection_table(
    x: np.ndarray, config: ClusteringConfig, seed: int = 0, progress: bool = False
) -> pd.DataFrame:
    """One row per (method, k) of ``config`` with the internal indices, the stability across
    ``config.seeds`` against the solution of ``seed`` and the bootstrap stability (columns and
    formulas: the module doc). ``x``: the scaled profile (users x features)."""
    from sklearn.metrics import (
        adjusted_rand_score,
        calinski_harabasz_score,
        davies_bouldin_score,
        silhouette_score,
    )

    x = _check_matrix(x)
    if max(config.ks) >= len(x):
        raise ConfigError(f"clustering.ks goes up to {max(config.ks)} but there are only {len(x)} users")
    resamples = bootstrap_resamples(len(x), config.bootstrap, seed)
    others = [s for s in config.seeds if s != seed]
    cells = [(method, k) for method in config.methods for k in config.ks]
    rows = []
    for method, k in _progress(cells, progress, "selection"):
        labels, _, moved = segments_of(x, method, k, seed, config.n_init)
        seed_ari = [
            adjusted_rand_score(labels, segments_of(x, method, k, s, config.n_init)[0]) for s in others
        ]
        boot = bootstrap_stability(x, labels, method, k, resamples, seed, config.n_init)
        found = len(np.unique(labels))
        with one_thread():
            indices = (
                (
                    silhouette_score(x, labels),
                    davies_bouldin_score(x, labels),
                    calinski_harabasz_score(x, labels),
                )
                if found > 1
                else (np.nan, np.nan, np.nan)
            )
        rows.append(
            {
                "method": method,
                "k": k,
                "silhouette": float(indices[0]),
                "davies_bouldin": float(indices[1]),
                "calinski_harabasz": float(indices[2]),
                "smallest_share": float(np.bincount(labels, minlength=k).min() / len(labels)),
                "reassigned_share": moved / len(labels),
                "seed_ari": float(np.mean(seed_ari)) if seed_ari else np.nan,
                "seed_ari_std": float(np.std(seed_ari)) if seed_ari else np.nan,
                "bootstrap_ari": float(boot.mean()),
                "bootstrap_ari_std": float(boot.std()),
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


@dataclass(frozen=True)
class Choice:
    """The number of segments chosen by :func:`choose_k` and why."""

    method: str
    k: int
    silhouette: float
    bootstrap_ari: float
    stability_met: bool
    choose_from: tuple[int, int]
    min_stability: float
    reason: str


def choose_k(table: pd.DataFrame, config: ClusteringConfig) -> Choice:
    """The k of ``config.method`` by the rule of ``config.choose_from`` / ``min_stability``
    (module doc): among the ks in the range (inclusive), the highest silhouette of those whose
    bootstrap ARI reaches the minimum; if none does, the highest bootstrap ARI, with
    ``stability_met`` false. Ties go to the smaller k."""
    missing = [c for c in ("method", "k", "silhouette", "bootstrap_ari") if c not in table.columns]
    if missing:
        raise DataError(
            f"selection table has no column(s) {missing}; expected the columns of selection_table"
        )
    lo, hi = config.choose_from
    rows = table[(table["method"] == config.method) & table["k"].between(lo, hi)]
    if rows.empty:
        raise ConfigError(
            f"the selection table has no row of method {config.method!r} with k in [{lo}, {hi}] "
            f"(clustering.choose_from); it has {sorted(set(zip(table['method'], table['k'])))}"
        )
    rows = rows.sort_values("k", kind="stable")
    stable = rows[rows["bootstrap_ari"] >= config.min_stability]
    met = not stable.empty
    if met:
        best = stable.loc[stable["silhouette"].idxmax()]
        reason = (
            f"k={int(best['k'])}: the highest silhouette ({best['silhouette']:.3f}) among k in "
            f"[{lo}, {hi}] whose bootstrap ARI reaches {config.min_stability:.2f}"
        )
    else:
        best = rows.loc[rows["bootstrap_ari"].idxmax()]
        reason = (
            f"no k in [{lo}, {hi}] reaches bootstrap ARI {config.min_stability:.2f}; k={int(best['k'])} "
            f"is the most stable ({best['bootstrap_ari']:.3f}), target missed"
        )
    return Choice(
        method=config.method,
        k=int(best["k"]),
        silhouette=float(best["silhouette"]),
        bootstrap_ari=float(best["bootstrap_ari"]),
        stability_met=met,
        choose_from=(lo, hi),
        min_stability=config.min_stability,
        reason=reason,
    )


# ----------------------------------------------------------------------------------- model


def profile_scaler(profile_config: ProfileConfig, seed: int = 0) -> ProfileScaler:
    """The (unfitted) scaler of ``profile_config``: its blocks and embedding PCA size."""
    return ProfileScaler(
        blocks=tuple(profile_config.blocks),
        embedding_components=profile_config.embedding_components,
        seed=seed,
    )


def clustering_input(profiles: ProfileTable, profile_config: ProfileConfig | None = None) -> ProfileTable:
    """The profiles segments are found in: rows sorted by user ID (so that nothing depends on
    the row order), without the embedding columns when ``profile_config.embedding`` is false."""
    if not isinstance(profiles, ProfileTable):
        raise DataError(f"expected a ProfileTable (build_profile_table), got {type(profiles).__name__}")
    table = profiles.table
    if table.empty:
        raise DataError("the profile table has no users; segments need at least two")
    if not table.index.is_unique:
        dup = table.index[table.index.duplicated()].unique()[:5].tolist()
        raise DataError(f"the profile table has duplicate user IDs, e.g. {dup}")
    table = table.sort_index(kind="stable")
    if profile_config is not None and not profile_config.embedding:
        table = table.drop(columns=profiles.embedding_columns)
    return ProfileTable(
        table, profiles.cutoff, profiles.data_fingerprint, profiles.feature_set, profiles.first_n
    )


@dataclass
class SegmentModel:
    """A fitted segmentation: every user belongs to the segment of the nearest centroid in the
    scaled profile space (module doc). ``labels``: the training users' segments."""

    scaler: ProfileScaler
    method: str
    k: int
    centroids: np.ndarray
    seed: int
    labels: pd.Series
    profile_fingerprint: str
    silhouette: float
    reassigned: int = 0
    feature_names: list[str] = field(default_factory=list)

    @property
    def sizes(self) -> pd.Series:
        """Training users per segment."""
        return self.labels.value_counts().reindex(range(self.k), fill_value=0).rename_axis(SEGMENT)

    def transform(self, profiles: ProfileTable) -> np.ndarray:
        """The scaled profile of ``profiles`` (rows in the table's order); the scaler is not refitted."""
        if not isinstance(profiles, ProfileTable):
            raise DataError(f"expected a ProfileTable (build_profile_table), got {type(profiles).__name__}")
        needed = [
            c for name, _, cols in self.scaler.pipeline_.transformers_ if name != "remainder" for c in cols
        ]
        missing = [c for c in needed if c not in profiles.table.columns]
        if missing:
            raise DataError(
                f"the profile table lacks {len(missing)} column(s) the segments were fitted on, e.g. "
                f"{missing[:5]}; expected the same feature set (version {profiles.feature_set})"
            )
        x = self.scaler.transform(profiles)
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            users = profiles.table.index[bad][:5].tolist()
            raise DataError(
                f"{int(bad.sum())} user profile(s) have missing or infinite features, e.g. {users}"
            )
        return x

    def assign(self, profiles: ProfileTable) -> pd.Series:
        """user_id -> segment for every user in ``profiles`` (new, changed or training users):
        the nearest centroid in the scaled space, without re-clustering."""
        if profiles.table.empty:
            return pd.Series([], index=profiles.table.index, dtype=np.int64, name=SEGMENT)
        if not profiles.table.index.is_unique:
            dup = profiles.table.index[profiles.table.index.duplicated()].unique()[:5].tolist()
            raise DataError(f"the profile table has duplicate user IDs, e.g. {dup}")
        labels = nearest_centroid(self.transform(profiles), self.centroids)
        return pd.Series(labels, index=profiles.table.index.rename(C.USER), name=SEGMENT)


def fit_segment_model(
    profiles: ProfileTable,
    profile_config: ProfileConfig,
    clustering_config: ClusteringConfig,
    seed: int = 0,
    progress: bool = False,
) -> tuple[SegmentModel, pd.DataFrame, Choice]:
    """Scale the training users' profiles, score every (method, k) (:func:`selection_table`),
    choose k (:func:`choose_k`) and fit the segments of ``clustering_config.method`` with that k
    and ``seed``. Returns the model, the selection table and the choice."""
    data = clustering_input(profiles, profile_config)
    scaler = profile_scaler(profile_config, seed)
    with one_thread():
        x = scaler.fit_transform(data)
    x = _check_matrix(x, data.table.index)
    if clustering_config.k is not None:  # fixed by a study: nothing to choose
        table = pd.DataFrame()
        k = clustering_config.k
        choice = Choice(
            clustering_config.method,
            k,
            float("nan"),
            float("nan"),
            True,
            (k, k),
            clustering_config.min_stability,
            f"k={k}: fixed by segments.clustering.k",
        )
    else:
        table = selection_table(x, clustering_config, seed, progress)
        choice = choose_k(table, clustering_config)
        k = choice.k
    labels, centroids, reassigned = segments_of(x, choice.method, k, seed, clustering_config.n_init)
    order = _order(np.bincount(labels, minlength=k), centroids)
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    labels, centroids = rank[labels], centroids[order]
    from sklearn.metrics import silhouette_score

    with one_thread():
        silhouette = float(silhouette_score(x, labels)) if len(np.unique(labels)) > 1 else float("nan")
    model = SegmentModel(
        scaler=scaler,
        method=choice.method,
        k=k,
        centroids=centroids,
        seed=seed,
        labels=pd.Series(labels, index=data.table.index.rename(C.USER), name=SEGMENT),
        profile_fingerprint=profiles.fingerprint,
        silhouette=silhouette,
        reassigned=reassigned,
        feature_names=scaler.feature_names,
    )
    return model, table, choice


def subset_silhouettes(
    profiles: ProfileTable,
    profile_config: ProfileConfig,
    clustering_config: ClusteringConfig,
    k: int,
    seed: int = 0,
    subsets: Sequence[str] = ("behaviour", "taste"),
) -> pd.DataFrame:
    """Silhouette at ``k`` (method ``clustering_config.method``) of the full profile (the blocks
    of ``profile_config``) beside profiles of single blocks, each scaled by its own
    :class:`ProfileScaler` and clustered in its own space. Columns: profile, blocks,
    dimensions, silhouette. For reading the structure only: segments use the full profile."""
    from sklearn.metrics import silhouette_score

    data = clustering_input(profiles, profile_config)
    variants = [("full", tuple(profile_config.blocks))] + [(b, (b,)) for b in subsets]
    rows = []
    for name, blocks in variants:
        scaler = ProfileScaler(
            blocks=blocks, embedding_components=profile_config.embedding_components, seed=seed
        )
        with one_thread():
            x = _check_matrix(scaler.fit_transform(data), data.table.index)
        labels, _, _ = segments_of(x, clustering_config.method, k, seed, clustering_config.n_init)
        with one_thread():
            score = float(silhouette_score(x, labels)) if len(np.unique(labels)) > 1 else float("nan")
        rows.append(
            {"profile": name, "blocks": ", ".join(blocks), "dimensions": x.shape[1], "silhouette": score}
        )
    return pd.DataFrame(rows, columns=["profile", "blocks", "dimensions", "silhouette"])


# --------------------------------------------------------------------------------- helpers


def _check_matrix(x: np.ndarray, users: pd.Index | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise DataError(f"expected a users x features matrix with at least two users, got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        where = users[bad][:5].tolist() if users is not None else np.flatnonzero(bad)[:5].tolist()
        raise DataError(
            f"{int(bad.sum())} user profile(s) have missing or infinite scaled features, e.g. "
            f"{'users' if users is not None else 'rows'} {where}"
        )
    return x


def _progress(items: list, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc)
