"""Reading back logged runs: what an exporter needs from an experiment (or tuning session) run.

:func:`read_experiment` returns a parent run's ``config.yaml``, data fingerprint, and each model
run's validation metrics and selected params (from the best seed run).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from personalize.core import columns as C
from personalize.core.errors import PersonalizeError
from personalize.core.metrics import is_metric_name
from personalize.tracking.runs import VALID_PER_USER
from personalize.tracking.store import KIND_TAG, PARENT_TAG, _client, tracking_uri


@dataclass
class SeedRunRecord:
    seed: int
    valid: dict[str, float]  # valid_* metrics of this seed
    selected_params: dict[str, Any]  # params selected on validation (epochs = best epoch)


@dataclass
class ModelRunRecord:
    """One model of a logged experiment, as an exporter sees it."""

    label: str
    model_type: str
    run_id: str
    valid: dict[str, float]  # valid_* metrics of the model run (means over seeds)
    seeds: list[SeedRunRecord]
    test: dict[str, float] = field(default_factory=dict)  # test_* metrics (means over seeds)
    valid_per_user: pd.DataFrame | None = None  # per-user validation metrics (mean over seeds)


@dataclass
class ExperimentRecord:
    run_id: str
    experiment_id: str
    experiment_name: str
    kind: str
    config_yaml: str
    fingerprint: str
    models: list[ModelRunRecord]


def experiment_of_run(run_id: str, uri: str | None = None) -> tuple[str, str]:
    """(experiment name, experiment id) of a run."""
    from mlflow.exceptions import MlflowException

    client = _client(uri or tracking_uri())
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise PersonalizeError(f"no run {run_id!r} in {uri or tracking_uri()}") from None
    return client.get_experiment(run.info.experiment_id).name, run.info.experiment_id


def latest_parent_run(experiment: str, uri: str | None = None) -> str:
    """The newest finished top-level run (an experiment or a tuning session) of ``experiment``."""
    client = _client(uri or tracking_uri())
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise PersonalizeError(f"no MLflow experiment named {experiment!r} in {uri or tracking_uri()}")
    runs = client.search_runs(
        [found.experiment_id],
        "attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    top = [
        r
        for r in runs
        if r.data.tags.get(KIND_TAG) in ("experiment", "session") and PARENT_TAG not in r.data.tags
    ]
    if not top:
        raise PersonalizeError(f"experiment {experiment!r} has no finished experiment or session run")
    return top[0].info.run_id


def read_experiment(run_id: str, uri: str | None = None) -> ExperimentRecord:
    """What :func:`personalize.serving.export_run` needs from a parent run: its config.yaml,
    data fingerprint, and per model its validation metrics and each seed's selected params.

    A tuning session is read through its final comparison (the ``experiment`` run nested in it).
    """
    from mlflow.exceptions import MlflowException

    client = _client(uri or tracking_uri())
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise PersonalizeError(f"no run {run_id!r} in {uri or tracking_uri()}") from None
    kind = run.data.tags.get(KIND_TAG, "")
    if kind == "session":
        nested = _children(client, run, "experiment")
        if not nested:
            raise PersonalizeError(f"tuning session {run_id} has no final comparison run to export from")
        run = max(nested, key=lambda r: r.info.start_time)
    elif kind != "experiment":
        raise PersonalizeError(
            f"run {run_id} is a {kind or 'untagged'!s} run; give the parent run of an experiment "
            "or a tuning session"
        )
    if run.info.status != "FINISHED":
        raise PersonalizeError(f"run {run.info.run_id} is {run.info.status}; export needs a finished run")
    fingerprint = run.data.params.get("data.fingerprint")
    if not fingerprint:
        raise PersonalizeError(f"run {run.info.run_id} has no data.fingerprint param")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run.info.run_id, "config.yaml", tmp)
        except Exception as exc:
            raise PersonalizeError(f"run {run.info.run_id} has no config.yaml artifact ({exc})") from None
        config_yaml = Path(local).read_text()
    models = []
    for model_run in sorted(_children(client, run, "model"), key=lambda r: r.info.start_time):
        seeds = [
            SeedRunRecord(
                seed=int(r.data.params.get("seed", 0)),
                valid=_valid(r.data.metrics),
                selected_params=unflatten_params(r.data.params, "selected"),
            )
            for r in sorted(_children(client, model_run, "seed"), key=lambda r: r.info.start_time)
        ]
        models.append(
            ModelRunRecord(
                label=model_run.data.tags.get("mlflow.runName", model_run.info.run_name),
                model_type=model_run.data.tags.get("model_type", ""),
                run_id=model_run.info.run_id,
                valid=_valid(model_run.data.metrics),
                seeds=seeds,
                test={k: v for k, v in model_run.data.metrics.items() if k.startswith("test_")},
                valid_per_user=_valid_per_user(client, model_run.info.run_id),
            )
        )
    experiment = client.get_experiment(run.info.experiment_id)
    return ExperimentRecord(
        run.info.run_id,
        run.info.experiment_id,
        experiment.name,
        kind,
        config_yaml,
        fingerprint,
        models,
    )


def _valid_per_user(client, run_id: str) -> pd.DataFrame | None:
    """A model run's per-user validation metrics, each user's values averaged over the seeds
    that evaluated them (None for runs logged without them)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, VALID_PER_USER, tmp)
        except Exception:  # an older run
            return None
        frame = pd.read_parquet(local)
    frame = frame[frame["evaluated"].astype(bool)]
    metrics = [c for c in frame.columns if is_metric_name(c)]
    return frame.groupby(C.USER)[metrics].mean()


def _valid(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith("valid_")}


def _children(client, run, kind: str) -> list:
    return client.search_runs(
        [run.info.experiment_id],
        f"tags.`{PARENT_TAG}` = '{run.info.run_id}' and tags.`{KIND_TAG}` = '{kind}'",
        max_results=5000,
    )


def unflatten_params(params: dict[str, str], prefix: str) -> dict[str, Any]:
    """Invert :func:`personalize.tracking.store.flatten` for the params under ``prefix``:
    {'selected.factors': '16', 'selected.mlp_layers': '[64, 32]'} -> {'factors': 16, ...}.
    Values are read as JSON where they parse, else kept as strings."""
    if prefix in params:  # an empty dict is logged as one param '{}'
        value = _json_or_text(params[prefix])
        return value if isinstance(value, dict) else {}
    out: dict[str, Any] = {}
    for key, text in params.items():
        if not key.startswith(prefix + "."):
            continue
        path = key[len(prefix) + 1 :].split(".")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _json_or_text(text)
    return out


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text
