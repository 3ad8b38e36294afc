"""Hyperparameter tuning with an equal budget: one seeded Optuna study per model, pruning of
iterative models, persistent and resumable studies, logged to MLflow, and a final comparison of
the tuned models on test.

``tune(config)`` (also ``personalize tune EXPERIMENT``) is the entry point (:mod:`.session`);
its parts are :mod:`.studies`, :mod:`.objective`, :mod:`.final`, :mod:`.results`,
:mod:`.storage`, :mod:`.compare` (what pruning saves) and :mod:`.plots`. Names are imported on
first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SearchDimension": "personalize.config.tuning",
    "TuningConfig": "personalize.config.tuning",
    "tune": "personalize.tuning.session",
    "TuningResult": "personalize.tuning.results",
    "StudyOutcome": "personalize.tuning.results",
    "cap_epochs": "personalize.tuning.session",
    "open_storage": "personalize.tuning.storage",
    "compare_pruning": "personalize.tuning.compare",
    "tuned_experiment": "personalize.tuning.final",
    "tuned_vs_default": "personalize.tuning.final",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'personalize.tuning' has no attribute {name!r}")
