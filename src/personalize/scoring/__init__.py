"""Scoring: the one implementation of how a fitted model answers, shared by training,
evaluation and the exported model.

This package imports nothing else of ``personalize`` (NumPy, pandas, SciPy; PyTorch only
inside the NeuMF scorer), and uses relative imports only: it is shipped as code with every
exported MLflow model and imported there under another name. Modules:

- :mod:`.kinds`: the scorer kinds (static, item-item, factors, NeuMF, blend), the context they
  read, and the cold-user fallback rule;
- :mod:`.ranking`: exact top-k with the protocol's tie-break, masking;
- :mod:`.foldin`: fold-in contexts (a history plus events after the fit), event weights;
- :mod:`.serve`: answering requests (``rank_rows``), the served :class:`TopKScorer`;
- :mod:`.codec`: arrays and scorer trees as files (saved models, exported states);
- :mod:`.ids`: raw IDs to indices.
"""

from .codec import FORMAT, State, load_arrays, load_state, save_arrays, save_state
from .foldin import EventRules, added_matrices, fold_context
from .ids import positions
from .kinds import (
    KINDS,
    Autoencoder,
    Blend,
    Computed,
    Context,
    Factors,
    ItemItem,
    NeuMF,
    Routed,
    Scorer,
    Segmented,
    Static,
    als_user_vectors,
    transform,
    user_arrays_of,
    without_users,
)
from .ranking import block_size, csr_rows, mask, topk
from .segments import SegmentFallback
from .serve import COLUMNS, RequestError, TopKScorer, frame, rank_rows

__all__ = [
    "COLUMNS",
    "FORMAT",
    "KINDS",
    "Autoencoder",
    "Blend",
    "Computed",
    "Context",
    "EventRules",
    "Factors",
    "ItemItem",
    "NeuMF",
    "RequestError",
    "Routed",
    "Scorer",
    "SegmentFallback",
    "Segmented",
    "State",
    "Static",
    "TopKScorer",
    "added_matrices",
    "als_user_vectors",
    "block_size",
    "csr_rows",
    "fold_context",
    "frame",
    "load_arrays",
    "load_state",
    "mask",
    "positions",
    "rank_rows",
    "save_arrays",
    "save_state",
    "topk",
    "transform",
    "user_arrays_of",
    "without_users",
]
