"""Event types: how each trains (its weight) and which count as relevant (the protocol, Data).

Rules, applied to the data after the split:

- Training weight of a row: the weight of its event type (``data.events.<type>.weight``,
  default 1), times the row's ``weight`` column when the file has one. A (user, item) pair
  weighs the maximum over its rows (a view and a purchase of one item weigh as the purchase),
  and that is the value the models that read the interaction matrix train on (ALS as
  confidence, EASE and ItemKNN as the entries of X; BPR uses which pairs exist).
- Relevant types: those configured ``relevant: true``; when none is, the heaviest types present
  (the strongest signal, e.g. purchases rather than views); a type configured
  ``relevant: false`` never is. Relevance is applied to the held-out parts.
- Excluded from a user's ranking ("seen"): the items of the user's relevant events in the data
  the model was fitted on (``data.seen: relevant``), or of any event (``any``). An item only
  viewed can then still be recommended and count as a hit.

Without an event column every row is relevant, weighs 1 (or its ``weight``), and excludes its
item: the behaviour of a single-kind dataset, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from personalize.config.data import DataConfig
from personalize.core import columns as C
from personalize.core.errors import DataError


@dataclass(frozen=True)
class EventPolicy:
    """Weights and relevance of the event types present in a dataset."""

    weights: dict[str, float]
    relevant: frozenset[str]
    seen: str = "relevant"

    @classmethod
    def build(cls, config: DataConfig, interactions: pd.DataFrame) -> EventPolicy | None:
        """The policy for ``interactions`` (None without an event column). Raises
        :class:`DataError` when ``data.events`` names a type no source has, or leaves no type
        relevant."""
        if C.EVENT not in interactions.columns:
            if config.events:
                raise DataError(
                    f"data.events configures {sorted(config.events)}, but the interactions have no "
                    "event type (give each source an 'event:' or map an event column)"
                )
            return None
        present = sorted(str(e) for e in interactions[C.EVENT].dropna().unique())
        unknown = sorted(set(config.events) - set(present))
        if unknown:
            raise DataError(
                f"data.events configures {unknown}, which no accepted interaction has "
                f"(event types present: {present})"
            )
        weights = {e: config.events[e].weight if e in config.events else 1.0 for e in present}
        explicit = {e for e in present if e in config.events and config.events[e].relevant}
        if explicit:
            relevant = explicit
        else:
            allowed = [e for e in present if not (e in config.events and config.events[e].relevant is False)]
            top = max((weights[e] for e in allowed), default=None)
            relevant = {e for e in allowed if weights[e] == top}
        if not relevant:
            raise DataError(f"data.events leaves no event type relevant (types present: {present})")
        return cls(weights, frozenset(relevant), config.seen)

    # ------------------------------------------------------------------------- per row

    def row_weights(self, frame: pd.DataFrame) -> np.ndarray:
        """Training weight of each row of ``frame`` (an ``event`` column)."""
        return frame[C.EVENT].map(self.weights).to_numpy(dtype=np.float64)

    def relevant_rows(self, frame: pd.DataFrame) -> np.ndarray:
        """True for rows of a relevant event type."""
        return frame[C.EVENT].isin(self.relevant).to_numpy(dtype=bool)

    def excluding_rows(self, frame: pd.DataFrame) -> np.ndarray | None:
        """True for rows whose item leaves the user's ranking; None: every row does."""
        if self.seen == "any" or self.relevant >= set(self.weights):
            return None
        return self.relevant_rows(frame)

    def describe(self) -> dict:
        """What a run logs: the weights, the relevant types and the 'seen' rule."""
        return {
            "event_weights": dict(sorted(self.weights.items())),
            "relevant_events": sorted(self.relevant),
            "seen": self.seen,
        }
