"""Models in MLflow: logging an exported recommender, the Model Registry and its aliases.

- :func:`log_pyfunc_model` logs a model from code (MLflow 3's way: a Python file that calls
  ``mlflow.models.set_model``, its helper modules as ``code_paths`` and the fitted state as an
  artifact folder) into a run of ours.
- :func:`promote` registers a logged model under a name, moves an alias (``champion``) to the
  new version, and records the promotion as tags on that version: ``promotion.*`` (which export
  run, which experiment / session run and model run, which metric and value, when) and
  ``previous.*`` (the version, run, model and value that held the alias before, or ``none``); the
  version it replaced gets ``superseded_by``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from personalize.tracking.store import RunHandle, _client, tracking_uri

NONE = "none"


@contextmanager
def _importable(folders: list[Path]) -> Iterator[None]:
    """MLflow runs the model file while logging; its helper modules must be importable then."""
    added = [str(f) for f in folders if str(f) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for entry in added:
            if entry in sys.path:
                sys.path.remove(entry)


@dataclass
class LoggedModel:
    model_uri: str  # models:/m-<id>
    model_id: str
    run_id: str
    signature: Any


def log_pyfunc_model(
    run: RunHandle,
    *,
    model_code: Path,
    code_paths: list[Path],
    artifacts: dict[str, str],
    input_example: Any,
    pip_requirements: list[str],
    name: str = "model",
    metadata: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    model_config: dict[str, Any] | None = None,
    uri: str | None = None,
) -> LoggedModel:
    """Log a pyfunc model from code (``model_code``) into ``run``; returns its URIs."""
    import mlflow

    mlflow.set_tracking_uri(uri or tracking_uri())
    with _importable([Path(p).parent for p in code_paths]), mlflow.start_run(run_id=run.run_id):
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(model_code),
            code_paths=[str(p) for p in code_paths],
            artifacts=artifacts,
            input_example=input_example,
            pip_requirements=pip_requirements,
            metadata=metadata,
            params={k: str(v) for k, v in (params or {}).items()},
            tags=tags,
            model_config=model_config,
        )
    return LoggedModel(info.model_uri, info.model_id, run.run_id, info.signature)


# ------------------------------------------------------------------------------- registry


@dataclass
class Promotion:
    """A registered version and the champion it replaced (``previous`` is None for the first)."""

    name: str
    version: str
    alias: str
    previous: dict[str, str] | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


def _registry_client(uri: str | None = None):
    return _client(uri or tracking_uri())


def current_version(name: str, alias: str = "champion", uri: str | None = None):
    """The model version holding ``alias`` (None if the model or the alias does not exist)."""
    from mlflow.exceptions import MlflowException

    client = _registry_client(uri)
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def promote(
    model_uri: str,
    name: str,
    record: dict[str, Any],
    *,
    alias: str = "champion",
    move_alias: bool = True,
    description: str | None = None,
    uri: str | None = None,
) -> Promotion:
    """Register ``model_uri`` as a new version of ``name``; move ``alias`` to it (unless
    ``move_alias`` is false) and tag the version with ``record`` (as ``promotion.<key>``) and
    the previous holder of the alias (``previous.<key>``)."""
    from mlflow.exceptions import MlflowException

    client = _registry_client(uri)
    previous = current_version(name, alias, uri)
    previous_record = None
    if previous is not None:
        previous_record = {
            "version": str(previous.version),
            "run_id": previous.tags.get("promotion.run_id", previous.run_id or NONE),
            "model": previous.tags.get("promotion.model", NONE),
            "metric": previous.tags.get("promotion.metric", NONE),
            "value": previous.tags.get("promotion.value", NONE),
        }
    try:
        client.get_registered_model(name)
        created = False
    except MlflowException:
        client.create_registered_model(name)
        created = True
    version = _register(client, model_uri, name)
    number = str(version.version)
    if created:
        client.update_registered_model(
            name, description="Top-K recommender exported by the personalization lab."
        )
    tags = {f"promotion.{k}": str(v) for k, v in record.items()}
    tags["promotion.time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tags["promotion.alias"] = alias if move_alias else NONE
    for key in ("version", "run_id", "model", "metric", "value"):
        tags[f"previous.{key}"] = previous_record[key] if previous_record else NONE
    for key, value in tags.items():
        client.set_model_version_tag(name, number, key, value)
    if description:
        client.update_model_version(name, number, description=description)
    if move_alias:
        client.set_registered_model_alias(name, alias, number)
        if previous is not None:
            client.set_model_version_tag(name, str(previous.version), "superseded_by", number)
    return Promotion(name, number, alias, previous_record, tags)


def _register(client, model_uri: str, name: str):
    """A new version of ``name`` from a logged model (``models:/m-<id>``), linked both ways as
    ``mlflow.register_model`` links them, without its console messages."""
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    model_id = model_uri.removeprefix("models:/")
    logged = client.get_logged_model(model_id)
    version = client.create_model_version(
        name, source=model_uri, run_id=logged.source_run_id, model_id=model_id, await_creation_for=0
    )
    links = json.loads(logged.tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
    links.append({"name": version.name, "version": version.version})
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(links)})
    return version


def registry_table(name: str, uri: str | None = None) -> pd.DataFrame:
    """Every version of a registered model: aliases, source run, and its promotion tags."""
    client = _registry_client(uri)
    model = client.get_registered_model(name)
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for v in client.search_model_versions(f"name = '{name}'"):
        tags = v.tags or {}
        rows.append(
            {
                "version": int(v.version),
                "aliases": ", ".join(sorted(aliases.get(str(v.version), []))),
                "model": tags.get("promotion.model", ""),
                "metric": tags.get("promotion.metric", ""),
                "value": tags.get("promotion.value", ""),
                "export_run": tags.get("promotion.run_id", v.run_id or ""),
                "source_run": tags.get("promotion.source_run_id", ""),
                "previous_version": tags.get("previous.version", ""),
                "promoted_at": tags.get("promotion.time", ""),
                "superseded_by": tags.get("superseded_by", ""),
            }
        )
    return pd.DataFrame(rows).sort_values("version").reset_index(drop=True)


def load_model(model_uri: str, uri: str | None = None):
    """``mlflow.pyfunc.load_model`` on the store in force (or ``uri``)."""
    import mlflow

    mlflow.set_tracking_uri(uri or tracking_uri())
    return mlflow.pyfunc.load_model(model_uri)


def model_files(model_uri: str, uri: str | None = None) -> Path:
    """Download a logged model's folder (MLmodel, requirements, code, artifacts) to a temp dir."""
    import mlflow

    mlflow.set_tracking_uri(uri or tracking_uri())
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tempfile.mkdtemp()))
