"""User profiles in item-vector space: time-decayed, rating-weighted means of item vectors.

For user u with training interactions r (in the protocol's total order: timestamp, then item),
each of the item vectors v_r gets the weight

    w_r = 0.5 ** (age_r / half_life_days) * max(rating_r - rating_offset, 0)

where age_r is the interaction's age in days measured back from the training cut-off
(``InteractionData.cutoff``, the latest training timestamp); without a half-life the decay
factor is 1, and without ratings (or with ``use_ratings=False``) the rating factor is 1. With
``max_history`` only the user's last ``max_history`` interactions in the total order count.
The profile is the weighted mean

    p_u = sum_r w_r v_r / sum_r w_r.

If every weight of a user is 0 (e.g. all ratings at or below the offset), the user's
interactions are weighted by the decay factor alone, so a user with history never has an
empty profile. A user without interactions gets a zero profile.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from personalize.core import columns as C
from personalize.data.matrix import InteractionData


def interaction_weights(
    data: InteractionData,
    half_life_days: float | None = None,
    use_ratings: bool = True,
    rating_offset: float = 0.0,
    max_history: int | None = None,
) -> np.ndarray:
    """Weight w_r of every row of ``data.frame`` (see module doc), float64, rows in frame order."""
    frame = data.frame
    n = len(frame)
    decay = np.ones(n, dtype=np.float64)
    if half_life_days is not None:
        if half_life_days <= 0:
            raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
        decay = np.exp2(-np.maximum(data.days_before_cutoff(), 0.0) / half_life_days)
    weights = decay.copy()
    if use_ratings and C.RATING in frame.columns:
        rating = frame[C.RATING].to_numpy(dtype=np.float64)
        weights = decay * np.maximum(np.nan_to_num(rating, nan=rating_offset) - rating_offset, 0.0)
        users = frame[C.USER_IDX].to_numpy()
        total = np.bincount(users, weights=weights, minlength=data.n_users)
        empty = total[users] <= 0
        weights[empty] = decay[empty]
    if max_history is not None:
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        weights[~last_n_mask(data, max_history)] = 0.0
    return weights


def last_n_mask(data: InteractionData, n: int) -> np.ndarray:
    """True for each row among its user's last ``n`` rows in the total order (timestamp, item)."""
    frame = data.frame
    users = frame[C.USER_IDX].to_numpy()
    age = data.days_before_cutoff()  # later interactions are younger
    items = frame[C.ITEM_IDX].to_numpy()
    order = np.lexsort((items, -age, users))  # by user, then the total order (timestamp, item)
    sorted_users = users[order]
    counts = np.bincount(sorted_users, minlength=data.n_users)
    ends = np.cumsum(counts)[sorted_users]  # end position of each row's user block
    pos = np.arange(len(order))
    keep_sorted = ends - pos <= n
    out = np.zeros(len(frame), dtype=bool)
    out[order] = keep_sorted
    return out


def user_profiles(
    data: InteractionData,
    item_vectors: np.ndarray,
    half_life_days: float | None = None,
    use_ratings: bool = True,
    rating_offset: float = 0.0,
    max_history: int | None = None,
) -> np.ndarray:
    """(users x d) float32 weighted-mean profiles p_u (module doc); rows follow ``data.index``."""
    if item_vectors.shape[0] != data.n_items:
        raise ValueError(
            f"item_vectors has {item_vectors.shape[0]} rows, expected one per catalogue item ({data.n_items})"
        )
    w = interaction_weights(data, half_life_days, use_ratings, rating_offset, max_history)
    frame = data.frame
    users = frame[C.USER_IDX].to_numpy()
    items = frame[C.ITEM_IDX].to_numpy()
    weights = sp.csr_matrix((w, (users, items)), shape=(data.n_users, data.n_items), dtype=np.float64)
    weights.sum_duplicates()
    total = np.asarray(weights.sum(axis=1)).ravel()
    profile = np.asarray(weights @ item_vectors.astype(np.float64))
    profile = np.divide(profile, total[:, None], out=np.zeros_like(profile), where=total[:, None] > 0)
    return profile.astype(np.float32)
