"""Everything that talks to MLflow: the store, the run hierarchy, reports across runs."""

from personalize.tracking.store import (
    RunHandle,
    Tracker,
    artifact_root,
    run_url,
    tracking_uri,
    ui_command,
)

__all__ = ["RunHandle", "Tracker", "artifact_root", "run_url", "tracking_uri", "ui_command"]
