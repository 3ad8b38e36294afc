"""Segments in a served model: each user's segment, and segment popularity as the fallback.

An exported state may carry (``export.segments``) the segment of every known user, the popularity
of every item within each segment, and the demographics-only segment classifier as plain arrays
(:mod:`.trees`). A response then names each row's segment, and a row the model does not answer
itself (a cold or unknown user) gets its segment's popular items instead of everyone's -- its
segment being the known user's, or the one the classifier gives the request's attributes (age,
gender, occupation, zip_code). A row with neither keeps the overall popularity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import trees

ATTRIBUTES = ("age", "gender", "occupation", "zip_code")


@dataclass
class SegmentFallback:
    """``user_segment``: per known user (-1: none); ``scores``: segments x items (popularity
    within each segment); ``names``: one per segment; ``labeller``: (arrays, params) of the
    demographics-only classifier, or None."""

    user_segment: np.ndarray
    scores: np.ndarray
    names: list[str] = field(default_factory=list)
    labeller: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None

    def check(self, n_users: int, n_items: int) -> None:
        if self.user_segment.shape != (n_users,):
            raise ValueError(
                f"segments: user_segment has shape {self.user_segment.shape}, expected ({n_users},)"
            )
        if self.scores.ndim != 2 or self.scores.shape[1] != n_items:
            raise ValueError(
                f"segments: scores has shape {self.scores.shape}, expected (segments, {n_items})"
            )
        if len(self.user_segment) and int(self.user_segment.max()) >= self.scores.shape[0]:
            raise ValueError("segments: a user's segment has no row in scores")

    def segments_for(
        self, users: np.ndarray, attributes: Sequence[Mapping[str, Any] | None] | None = None
    ) -> np.ndarray:
        """Each row's segment: the known user's, else the classifier's from the row's attributes
        (rows without any attribute, or without a classifier: -1)."""
        users = np.asarray(users, dtype=np.int64)
        out = np.full(len(users), -1, dtype=np.int64)
        known = users >= 0
        out[known] = self.user_segment[users[known]]
        if self.labeller is None or attributes is None:
            return out
        rows = [
            i
            for i in np.flatnonzero(out < 0)
            if attributes[i] is not None and any(attributes[i].get(a) is not None for a in ATTRIBUTES)
        ]
        if rows:
            arrays, params = self.labeller
            x = trees.encode_request([attributes[i] for i in rows], arrays, params)
            out[np.asarray(rows)] = trees.predict(arrays, params, x)
        return out

    def name(self, segment: int) -> str | None:
        return self.names[segment] if 0 <= segment < len(self.names) else None
