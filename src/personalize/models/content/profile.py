"""Content-based recommender: cosine similarity between a user profile and item vectors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from personalize import scoring
from personalize.config.device import DEVICE_HELP, Device
from personalize.config.model import ModelConfig
from personalize.core import columns as C
from personalize.data.matrix import InteractionData
from personalize.features.items import VectorSource, item_vectors, l2_normalise
from personalize.features.profiles import user_profiles
from personalize.models.base import EpochMonitor, ErasureNeeds, Recommender

if TYPE_CHECKING:
    from personalize.features.index import VectorIndex


class ContentConfig(ModelConfig):
    vectors: VectorSource = Field(
        default="tfidf",
        description="Item vectors: tfidf (title + genres), dense (MiniLM embeddings), genres (+ year).",
    )
    half_life_days: float | None = Field(
        default=None,
        gt=0,
        description="Profile decay: an interaction this many days before the cut-off counts half (null: off)",
    )
    use_ratings: bool = Field(
        default=True, description="Weight each item by its rating (minus rating_offset)."
    )
    rating_offset: float = Field(
        default=0.0,
        ge=0,
        description="Rating weight = max(rating - offset, 0): e.g. 2 ignores items rated 1 or 2.",
    )
    max_history: int | None = Field(
        default=None, ge=1, description="Only the user's last N interactions (total order) form the profile."
    )
    title_weight: float = Field(default=1.0, ge=0, description="tfidf: weight of the title-word block.")
    genre_weight: float = Field(default=1.0, ge=0, description="tfidf: weight of the genre block.")
    year_bucket_years: int = Field(default=10, ge=1, description="genres: width of the release-year buckets.")
    year_weight: float = Field(default=0.5, ge=0, description="genres: weight of the year-bucket one-hot.")
    device: Device = Field(
        default="cpu", description="dense: where the sentence encoder runs (when not cached). " + DEVICE_HELP
    )


class ContentBased(Recommender):
    """Content-based: cosine between a user's content profile and each item's content vector.

    score(u, i) = cos(p_u, v_i), where v_i is item i's content vector (``vectors``, see
    :mod:`personalize.features.items`) and p_u the exponentially time-decayed, rating-weighted
    mean of the vectors of u's training items (:mod:`personalize.features.profiles`; age in
    days from the training cut-off ``data.cutoff``, weight 0.5 ** (age / half_life_days) *
    max(rating - rating_offset, 0)).

    Every catalogue item has a vector, so items with no interactions at all (new catalogue
    items) are scored and recommended like any other. Cold users (no training interactions,
    hence no profile) get the popularity fallback of the base class. An item without content
    scores 0.
    """

    name = "content"
    erasure = ErasureNeeds(item_side_from_all_users=False, per_user_state="content profiles")
    family = "content"
    Config = ContentConfig

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        c = self.config
        self.item_vectors_ = item_vectors(
            data.items,
            c.vectors,
            title_weight=c.title_weight,
            genre_weight=c.genre_weight,
            year_bucket_years=c.year_bucket_years,
            year_weight=c.year_weight,
            device=c.device,
        )
        profiles = user_profiles(
            data, self.item_vectors_, c.half_life_days, c.use_ratings, c.rating_offset, c.max_history
        )
        self.user_profiles_ = l2_normalise(profiles)
        self.__dict__.pop("_vector_index", None)

    def _scorer(self) -> scoring.Factors:
        return scoring.Factors(users=self.user_profiles_, items=self.item_vectors_, fold="profile")

    # ------------------------------------------------------------------ vector search

    @property
    def vector_index(self) -> VectorIndex:
        """A FAISS index over the item vectors (built on first use)."""
        self._check_fitted()
        if "_vector_index" not in self.__dict__:
            from personalize.features.index import VectorIndex

            self.__dict__["_vector_index"] = VectorIndex(self.item_vectors_, self.index_.items)
        return self.__dict__["_vector_index"]

    def similar_items(self, item_ids, k: int = 10) -> pd.DataFrame:
        """ "More like this": the ``k`` items most similar in content to each item ID."""
        return self.vector_index.similar_items(item_ids, k)

    def retrieve(self, user_ids, k: int = 10) -> pd.DataFrame:
        """Top-``k`` by FAISS search with each user's profile, seen items excluded after retrieval.

        Rows user_id, item_id, rank, score for users with a profile (cold and unknown users are
        left out: use :meth:`recommend` for the popularity fallback). Up to exact score ties at
        the retrieval boundary, the same lists as :meth:`recommend`.
        """
        self._check_fitted()
        user_ids = np.asarray(list(user_ids), dtype=object)
        idx = self.index_.user_index(user_ids)
        ok = self.personalised(idx)
        users = idx[ok]
        pos, sims = self.vector_index.search(self.user_profiles_[users], k, exclude=self.excluded_[users])
        rows, ranks = np.nonzero(pos >= 0)
        return pd.DataFrame(
            {
                C.USER: user_ids[ok][rows],
                C.ITEM: self.index_.items[pos[rows, ranks]].to_numpy(),
                C.RANK: (ranks + 1).astype(np.int32),
                C.SCORE: sims[rows, ranks],
            }
        )

    # -------------------------------------------------------------------- persistence

    def _state(self) -> dict[str, np.ndarray | sp.spmatrix]:
        return {"item_vectors": self.item_vectors_, "user_profiles": self.user_profiles_}

    def _set_state(self, state) -> None:
        self.item_vectors_ = np.asarray(state["item_vectors"], dtype=np.float32)
        self.user_profiles_ = np.asarray(state["user_profiles"], dtype=np.float32)
