"""Serving: export the champion as a self-contained MLflow model, load it, serve it.

``export_experiment`` (candidates, their dataset and the experiment's config: the one path that
``personalize run``, ``personalize export`` and erasure's re-export share), ``export_run`` (a
logged run, through it) and ``export_champion`` (the export itself) choose, refit, log, register
and promote; ``standalone/`` holds the MLflow model file that ships with
the scoring package (:mod:`personalize.scoring`). Names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Candidate": "personalize.serving.champion",
    "ExportError": "personalize.serving.champion",
    "choose_champion": "personalize.serving.champion",
    "ExportResult": "personalize.serving.export",
    "export_champion": "personalize.serving.export",
    "export_experiment": "personalize.serving.export",
    "export_run": "personalize.serving.export",
    "recommendations_frame": "personalize.serving.export",
    "all_data": "personalize.serving.state",
    "refit_on_all_data": "personalize.serving.state",
    "write_state": "personalize.serving.state",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'personalize.serving' has no attribute {name!r}")
