"""The user profile table: one row of features per user, computed from training data only, and the
scaling that turns it into the space segments are found in.

(The content model's profiles, weighted means of item vectors, are :mod:`.profiles`; this table
describes a user for segmentation and segment labelling.)

The feature set (version ``FEATURE_SET``), fixed before any number of segments is chosen:

behaviour (numeric; counts and spans on log scale, ``log1p``)
    ``recency_days``     days from the user's last interaction to the cut-off
    ``frequency``        interactions
    ``tenure_days``      days from the user's first to last interaction
    ``activity_rate``    interactions per week of tenure (a tenure under a week counts as one week)
    ``rating_mean``, ``rating_std``   the mean and spread of the user's ratings: the "monetary" of
                         an RFM table where there is no price (0 without ratings)
    ``session_length``   mean interactions per session (a gap over 30 minutes starts a session):
                         how bursty the user is
    ``niche_share``      share of the user's interactions on long-tail items (outside the items
                         that make 80% of training interactions)
demographics (categorical; missing -> "unknown")
    ``age_bucket``       <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+ (MovieLens-1M's buckets)
    ``gender``, ``occupation``
    ``region``           the first digit of a US zip code (its national area); other codes "other"
taste (inferred interests)
    ``genre:<g>``        share of the user's consumption per genre (an item with several genres
                         counts 1/n for each)
    ``embedding:<j>``    the mean sentence embedding (all-MiniLM-L6-v2) of the items consumed

:class:`ProfileScaler` is the pipeline (scikit-learn ``ColumnTransformer``): behaviour and genre
shares standardised, demographics one-hot, the embedding reduced by PCA (8 components) and
standardised; then every block (behaviour, demographics, taste) weighted to the same total variance
on the training users, so that no block dominates distances by its number of columns. It is fitted
on training users only and applies unchanged to new users.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from personalize.core import columns as C
from personalize.data.matrix import InteractionData
from personalize.features.items import genre_one_hot

FEATURE_SET = 1
SESSION_GAP_SECONDS = 30 * 60
HEAD_SHARE = 0.8  # the head: the most popular items that make this share of interactions
AGE_BUCKETS = [(0, 17, "<18"), (18, 24, "18-24"), (25, 34, "25-34"), (35, 44, "35-44"), (45, 49, "45-49"),
               (50, 55, "50-55"), (56, 200, "56+")]  # fmt: skip
BEHAVIOUR = [
    "recency_days",
    "frequency",
    "tenure_days",
    "activity_rate",
    "rating_mean",
    "rating_std",
    "session_length",
    "niche_share",
]
DEMOGRAPHICS = ["age_bucket", "gender", "occupation", "region"]
BLOCKS = ("behaviour", "demographics", "taste")


@dataclass
class ProfileTable:
    """Profile features per user (index: user_id) and where they came from."""

    table: pd.DataFrame
    cutoff: pd.Timestamp
    data_fingerprint: str
    feature_set: int = FEATURE_SET
    first_n: int | None = None

    @property
    def genre_columns(self) -> list[str]:
        return [c for c in self.table.columns if c.startswith("genre:")]

    @property
    def embedding_columns(self) -> list[str]:
        return [c for c in self.table.columns if c.startswith("embedding:")]

    def columns(self, block: str) -> list[str]:
        """The columns of one block: behaviour, demographics or taste."""
        if block == "behaviour":
            return list(BEHAVIOUR)
        if block == "demographics":
            return list(DEMOGRAPHICS)
        if block == "taste":
            return self.genre_columns + self.embedding_columns
        raise ValueError(f"unknown block {block!r}; expected one of {BLOCKS}")

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the table's content and provenance (the version logged with segments)."""
        digest = hashlib.sha256()
        digest.update(
            json.dumps(
                [
                    self.data_fingerprint,
                    str(self.cutoff),
                    self.feature_set,
                    self.first_n,
                    list(self.table.columns),
                ]
            ).encode()
        )
        digest.update(pd.util.hash_pandas_object(self.table, index=True).to_numpy().tobytes())
        return digest.hexdigest()

    def to_parquet(self, path) -> None:
        """Write the table with its provenance in the file's metadata."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(self.table.reset_index())
        meta = {
            b"personalize.profile": json.dumps(
                {
                    "cutoff": str(self.cutoff),
                    "data_fingerprint": self.data_fingerprint,
                    "feature_set": self.feature_set,
                    "first_n": self.first_n,
                    "fingerprint": self.fingerprint,
                }
            ).encode()
        }
        pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **meta}), path)


def build_profile_table(
    data: InteractionData,
    item_embeddings: np.ndarray | None,
    data_fingerprint: str = "",
    first_n: int | None = None,
) -> ProfileTable:
    """The profile table of every user with at least one interaction in ``data`` (the training
    part of a split: nothing of validation or test enters). ``first_n``: use only each user's
    first ``first_n`` interactions in the protocol's total order (recency is then measured from
    the last of them). ``item_embeddings``: rows aligned with ``data.items`` (None: no embedding
    columns)."""
    frame = data.frame
    if first_n is not None:
        if first_n < 1:
            raise ValueError(f"first_n must be >= 1, got {first_n}")
        rank = frame.groupby(C.USER_IDX, sort=False).cumcount().to_numpy()  # frame is in total order
        frame = frame[rank < first_n]
    users = frame[C.USER_IDX].to_numpy()
    items = frame[C.ITEM_IDX].to_numpy()
    present = np.unique(users)
    seconds = (frame[C.TIMESTAMP] - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    grouped = pd.DataFrame({"u": users, "t": seconds}).groupby("u")["t"]
    first, last, count = grouped.min(), grouped.max(), grouped.size()
    cutoff_s = (data.cutoff - pd.Timestamp(0, tz="UTC")).total_seconds()
    end = last if first_n is not None else pd.Series(cutoff_s, index=last.index)
    tenure_days = (last - first) / 86400.0
    out = pd.DataFrame(index=present)
    out["recency_days"] = np.log1p((end - last) / 86400.0)
    out["frequency"] = np.log1p(count)
    out["tenure_days"] = np.log1p(tenure_days)
    out["activity_rate"] = np.log1p(count / np.maximum(tenure_days / 7.0, 1.0))
    if C.RATING in frame.columns:
        ratings = pd.DataFrame({"u": users, "r": frame[C.RATING].to_numpy()}).groupby("u")["r"]
        out["rating_mean"] = ratings.mean()
        out["rating_std"] = ratings.std(ddof=0)
    else:
        out["rating_mean"] = 0.0
        out["rating_std"] = 0.0
    out["session_length"] = np.log1p(count / _sessions(users, seconds).reindex(present))
    out["niche_share"] = _niche_share(users, items, data.n_items).reindex(present)

    demographics = demographic_rows(data.users.iloc[present])
    for col in DEMOGRAPHICS:
        out[col] = demographics[col].to_numpy()

    consumed = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float64), (users, items)), shape=(data.n_users, data.n_items)
    )[present]
    taste = []
    genres, names = genre_one_hot(data.items)
    if len(names):
        share = genres / np.maximum(genres.sum(axis=1, keepdims=True), 1.0)
        affinity = np.asarray(consumed @ share)
        affinity /= np.maximum(affinity.sum(axis=1, keepdims=True), 1e-12)
        taste.append(pd.DataFrame(affinity, index=out.index, columns=[f"genre:{g}" for g in names]))
    if item_embeddings is not None:
        if item_embeddings.shape[0] != data.n_items:
            raise ValueError(f"item_embeddings has {item_embeddings.shape[0]} rows, expected {data.n_items}")
        mean = np.asarray(consumed @ item_embeddings.astype(np.float64)) / np.asarray(consumed.sum(axis=1))
        names = [f"embedding:{j}" for j in range(mean.shape[1])]
        taste.append(pd.DataFrame(mean.astype(np.float32), index=out.index, columns=names))
    out = pd.concat([out, *taste], axis=1)
    out.index = pd.Index(data.index.users[present], name=C.USER)
    for col in BEHAVIOUR:
        out[col] = out[col].astype(np.float64)
    return ProfileTable(out, data.cutoff, data_fingerprint, FEATURE_SET, first_n)


def demographic_rows(users: pd.DataFrame) -> pd.DataFrame:
    """The demographic columns of the profile table for rows of a users table (any users, with
    or without interactions; index: the users table's user_id)."""
    n = len(users)
    out = pd.DataFrame(index=pd.Index(users[C.USER].to_numpy(), name=C.USER))
    out["age_bucket"] = _age_buckets(users.get(C.AGE), n)
    for col in (C.GENDER, C.OCCUPATION):
        out[col] = users[col].astype("string").fillna("unknown").to_numpy() if col in users else "unknown"
    out["region"] = _regions(users.get(C.ZIP), n)
    return out


def _sessions(users: np.ndarray, seconds: np.ndarray) -> pd.Series:
    """Sessions per user: runs of interactions with gaps of at most ``SESSION_GAP_SECONDS``."""
    order = np.lexsort((seconds, users))
    u, t = users[order], seconds[order]
    new = np.ones(len(u), dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | (t[1:] - t[:-1] > SESSION_GAP_SECONDS)
    return pd.Series(new.astype(np.int64)).groupby(u).sum()


def _niche_share(users: np.ndarray, items: np.ndarray, n_items: int) -> pd.Series:
    counts = np.bincount(items, minlength=n_items)
    order = np.argsort(-counts, kind="stable")
    cumulative = np.cumsum(counts[order]) / max(1, counts.sum())
    head = np.zeros(n_items, dtype=bool)
    head[order[: int(np.searchsorted(cumulative, HEAD_SHARE)) + 1]] = True
    return pd.Series((~head[items]).astype(np.float64)).groupby(users).mean()


def _age_buckets(ages: pd.Series | None, n: int) -> np.ndarray:
    out = np.full(n, "unknown", dtype=object)
    if ages is None:
        return out
    values = pd.to_numeric(ages, errors="coerce").to_numpy(dtype=np.float64)
    for lo, hi, label in AGE_BUCKETS:
        out[(values >= lo) & (values <= hi)] = label
    return out


def _regions(zips: pd.Series | None, n: int) -> np.ndarray:
    if zips is None:
        return np.full(n, "unknown", dtype=object)
    text = zips.astype("string").str.strip()
    first = text.str[0]
    region = np.where(first.str.fullmatch(r"[0-9]").fillna(False), "zip " + first.fillna(""), "other")
    return np.where(text.isna().to_numpy(), "unknown", region).astype(object)


# --------------------------------------------------------------------------------- scaling


@dataclass
class ProfileScaler:
    """The scaling pipeline (module doc): ``fit`` on training users, ``transform`` any table of
    the same feature set. ``blocks`` limits the features to some blocks (behaviour only, taste
    only) for comparisons; ``embedding_components`` is the PCA size of the embedding."""

    blocks: tuple[str, ...] = BLOCKS
    embedding_components: int = 8
    seed: int = 0
    weights_: dict[str, float] = field(default_factory=dict)

    def _transformer(self, profiles: ProfileTable, weights: dict[str, float] | None):
        from sklearn.compose import ColumnTransformer
        from sklearn.decomposition import PCA
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        parts = []
        if "behaviour" in self.blocks:
            parts.append(("behaviour", StandardScaler(), list(BEHAVIOUR)))
        if "demographics" in self.blocks:
            parts.append(
                (
                    "demographics",
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                    list(DEMOGRAPHICS),
                )
            )
        if "taste" in self.blocks:
            if profiles.genre_columns:
                parts.append(("genres", StandardScaler(), profiles.genre_columns))
            if profiles.embedding_columns:
                n = min(self.embedding_components, len(profiles.embedding_columns))
                pca = make_pipeline(PCA(n, random_state=self.seed), StandardScaler())
                parts.append(("embedding", pca, profiles.embedding_columns))
        if not parts:
            raise ValueError(f"no profile features in blocks {self.blocks}")
        return ColumnTransformer(parts, transformer_weights=weights, sparse_threshold=0.0)

    def fit(self, profiles: ProfileTable) -> ProfileScaler:
        """Fit on ``profiles`` (training users), then weight the blocks to equal total variance."""
        first = self._transformer(profiles, None).fit(profiles.table)
        x = first.transform(profiles.table)
        weights: dict[str, float] = {}
        blocks = {name: cols for name, _, cols in first.transformers_ if name != "remainder"}
        taste = [n for n in ("genres", "embedding") if n in blocks]
        for name, sl in first.output_indices_.items():
            if name not in blocks or sl.stop == sl.start:
                continue
            variance = float(x[:, sl].var(axis=0).sum())
            share = 1.0 / len(taste) if name in taste else 1.0  # the taste block's parts share one weight
            weights[name] = float(np.sqrt(share / variance)) if variance > 0 else 0.0
        self.weights_ = weights
        self.pipeline_ = self._transformer(profiles, weights).fit(profiles.table)
        return self

    def transform(self, profiles: ProfileTable | pd.DataFrame) -> np.ndarray:
        table = profiles.table if isinstance(profiles, ProfileTable) else profiles
        return np.asarray(self.pipeline_.transform(table), dtype=np.float64)

    def fit_transform(self, profiles: ProfileTable) -> np.ndarray:
        return self.fit(profiles).transform(profiles)

    @property
    def feature_names(self) -> list[str]:
        return [str(n) for n in self.pipeline_.get_feature_names_out()]
