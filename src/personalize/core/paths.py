"""Every path the project uses, in one place.

The project root is found from this file for an editable install (the normal case: the
repository is cloned and installed with ``make``); ``PERSONALIZE_HOME`` overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The repository root (``PERSONALIZE_HOME`` if set)."""
    env = os.environ.get("PERSONALIZE_HOME")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "src" / "personalize").exists():
            return parent
    return Path.cwd().resolve()


def data_dir() -> Path:
    """``data/`` of the project (``PERSONALIZE_DATA_DIR`` overrides, e.g. in tests)."""
    env = os.environ.get("PERSONALIZE_DATA_DIR")
    return Path(env).resolve() if env else project_root() / "data"


def processed_dir() -> Path:
    """Validated tables and quarantine (Parquet); derived, never committed."""
    return data_dir() / "processed"


def cache_dir() -> Path:
    """Caches of derived data (e.g. text embeddings); safe to delete."""
    return data_dir() / "cache"


def mlruns_dir() -> Path:
    """The MLflow tracking store: ``mlflow.db`` plus artifacts."""
    return project_root() / "mlruns"


def experiments_dir() -> Path:
    return project_root() / "experiments"


def default_tracking_uri() -> str:
    return f"sqlite:///{mlruns_dir() / 'mlflow.db'}"


def default_artifact_root() -> Path:
    return mlruns_dir() / "artifacts"
