"""Serving: export the champion as a self-contained MLflow model, load it, serve it.

``export_champion`` (also ``personalize export RUN_ID`` and ``export: {enabled: true}`` in an
experiment file) chooses, refits, logs, registers and promotes; ``standalone/`` holds what ships
inside the model. Names are imported on first use, so that the typed ``export:`` config can be
imported by the experiment loader without importing the recipe.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ExportConfig": "personalize.serving.config",
    "Candidate": "personalize.serving.export",
    "ExportError": "personalize.serving.export",
    "ExportResult": "personalize.serving.export",
    "candidates_from_result": "personalize.serving.export",
    "choose_champion": "personalize.serving.export",
    "export_champion": "personalize.serving.export",
    "export_run": "personalize.serving.export",
    "recommendations_frame": "personalize.serving.export",
    "refit_on_all_data": "personalize.serving.export",
    "write_state": "personalize.serving.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'personalize.serving' has no attribute {name!r}")
