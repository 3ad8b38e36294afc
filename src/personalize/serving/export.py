"""Export the champion of an experiment or a tuning session as a self-contained MLflow model.

(One module: the export's steps below share the export run and its temporary state folder; the
choice is :mod:`.champion`, the state :mod:`.state`.)

One export path: :func:`export_experiment` (candidates, the dataset they were chosen on, the
experiment's config and the export settings) is what ``personalize run`` with ``export.enabled``
(:func:`personalize.recipe.export_result`), ``personalize export RUN_ID`` (:func:`export_run`, the
run's data rebuilt and checked) and erasure's re-export (:mod:`personalize.privacy.erasure`) all
call: it gives ``export.online`` the experiment's ``online:`` block as defaults
(:func:`with_online_defaults`) and takes the confidence, paired test and segmentation from the
experiment, then :func:`export_champion` (the export itself, also callable with an
:class:`ExportConfig` alone) tells the story:

1. **Candidates**: every model of the experiment (or session) with its validation value of the
   selection metric (``export.metric``, NDCG@10 by default; the mean over seeds) and the params
   it selected on validation (iterative models: the best epoch count), taken from its best seed.
2. **Champion**: the candidate with the highest value among the exportable ones (a model class
   with ``exportable = False`` -- Random, RecBole peers -- is listed but not eligible); ties go
   to the first listed.
3. **Refit** with those params and that seed on *all* the data (train + validation + test): the
   model that serves should know every interaction there is.
4. **State**: the model's scorer (:mod:`personalize.scoring`) plus the ID maps, each user's
   seen items and the popularity fallback, written as plain files by the scoring code that
   ships with the model (:mod:`personalize.serving.state`).
5. **Log** a pyfunc model from code (``recsys_pyfunc.py``) with the scoring package as
   ``code_paths`` and the state as an artifact, its signature (from the request / response
   types), an input example and pinned pip requirements (NumPy, pandas, SciPy, pyarrow,
   pydantic, + torch for NeuMF, + redis with ``export.online.enabled``) and the ``model_config``
   (:func:`model_config`: ID types, the state hash as the answer cache's model key, the online
   store) into an ``export`` run nested under the experiment or session run, beside the
   candidates table and a plot of the selection.
6. **Register** it under one name and move the ``champion`` alias to it; the promotion (which
   run, metric, value, and the previous champion) is recorded as tags on the model version.

Serving needs only the model folder: ``mlflow.pyfunc.load_model("models:/<name>@champion")`` or
``mlflow models serve -m models:/<name>@champion --env-manager local``. With an online store
(``PERSONALIZE_ONLINE_URL=redis://...`` in the serving environment, ``model_config={"online_url":
...}`` at load, or ``export.online.url``) each answer folds in the user's events since the fit
(``recsys_pyfunc.py``).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from tqdm.auto import tqdm

from personalize.config import ExportConfig, read_experiment
from personalize.config.experiment import ExperimentConfig
from personalize.config.online import OnlineConfig
from personalize.config.segments import SegmentsConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError
from personalize.core.metrics import MetricName
from personalize.data.ingest import Dataset, ingest
from personalize.models.base import Recommender
from personalize.serving.champion import (
    Candidate,
    ExportError,
    Selection,
    candidates_table,
    rank,
    selection_plot,
)
from personalize.serving.state import (
    MODEL_CODE,
    all_data,
    check_registrable,
    id_type,
    input_example,
    pip_requirements,
    read_info,
    refit_on_all_data,
    segment_data,
    ship_code,
    state_hash,
    write_state,
)
from personalize.tracking import artifacts, model_registry, records
from personalize.tracking.artifacts import free, per_user
from personalize.tracking.store import RunHandle, Tracker, flatten, git_state, package_versions
from personalize.tracking.store import tracking_uri as current_tracking_uri

Echo = Callable[[str], None]

artifacts.declare(
    __name__,
    free("candidates.csv", "each candidate's validation metric, intervals and choice"),
    free("plots/champion_selection.png", "each candidate's validation metric"),
    # the logged model's files: a version holding an erased user is deleted and exported again
    per_user(
        "artifacts/state/*", "the served state: ID maps, seen items, per-user arrays", "model", refit=True
    ),
    per_user("*input_example.json", "two known users' requests", "model", refit=True),
    free("MLmodel", "flavour, signature, model config and provenance (no user)", "model"),
    free("code/*", "the shipped scoring code", "model"),
    free("recsys_pyfunc.py", "the shipped model code", "model"),
    free("requirements.txt", "pinned requirements", "model"),
    free("python_env.yaml", "the Python environment", "model"),
    free("conda.yaml", "the Conda environment", "model"),
)

# The README's curl example (tests send it to a served model): two MovieLens users, one asking for
# 5 items, one excluding an item, and a user the model has never seen (popularity fallback).
EXAMPLE_REQUEST: dict[str, Any] = {
    "inputs": [
        {"user_id": 196, "k": 5},
        {"user_id": 186, "exclude_items": [302]},
        {"user_id": 100001, "k": 3},
    ],
    "params": {"k": 10},
}


@dataclass
class ExportResult:
    """Where the champion went: registry name, version and alias, the model's URIs, and why it
    is the champion (``selection``). ``unchanged``: the champion already served exactly this
    state, so no version was registered."""

    registered_model: str
    version: str
    alias: str
    model_uri: str  # models:/<name>@<alias> (or models:/<name>/<version> when not promoted)
    logged_model_uri: str  # models:/m-<id>
    run_id: str  # the export run
    champion: Candidate
    candidates: pd.DataFrame
    metric: str
    previous: dict[str, str] | None
    refit_seconds: float
    tracking_uri: str
    selection: Selection | None = None
    unchanged: bool = False
    state_hash: str = ""
    model: Recommender | None = field(default=None, repr=False)  # the refit model, in process
    model_config: dict[str, Any] = field(default_factory=dict)  # the MLflow model_config it serves with

    @property
    def reason(self) -> str:
        return self.selection.reason(self.metric) if self.selection else ""

    def summary(self) -> str:
        prev = (
            f"version {self.previous['version']} ({self.previous['model']}, "
            f"{self.metric} {self.previous['value']})"
            if self.previous
            else "none"
        )
        registered = (
            f"unchanged: version {self.version} already serves this exact state "
            f"(state, scoring code and settings hash {self.state_hash[:12]}); no new version"
            if self.unchanged
            else f"{self.registered_model} version {self.version}"
            + (f", alias '{self.alias}'" if self.model_uri.endswith(f"@{self.alias}") else "")
        )
        lines = [
            f"Champion:   {self.champion.label} ({self.champion.model_type}), "
            f"valid {self.metric} = {self.champion.value:.4f}, seed {self.champion.seed}",
            f"Why:        {self.reason}",
            f"Refit:      on all the data in {self.refit_seconds:.1f} s",
            f"Registered: {registered}",
        ]
        if not self.unchanged:
            lines.append(f"Replaced:   {prev}")
        lines += [
            f"Load:       mlflow.pyfunc.load_model('{self.model_uri}')",
            f"Serve:      MLFLOW_TRACKING_URI={self.tracking_uri} "
            f"mlflow models serve -m '{self.model_uri}' --env-manager local --port 5001",
        ]
        return "\n".join(lines)


# --------------------------------------------------------------------------------- export


def with_online_defaults(export: ExportConfig, online: OnlineConfig) -> ExportConfig:
    """``export.online`` with the experiment's ``online:`` block as its defaults: when the model
    ships the online client, a null ``url`` becomes ``online.redis_url`` (when that is set) and a
    null ``namespace`` becomes ``online.namespace`` (the stream workers' store). Both nulls survive a
    run's logged ``config.yaml``, so every export path resolves them alike."""
    served = export.online
    if not served.enabled:
        return export
    update = {}
    if served.url is None and online.redis_url is not None:
        update["url"] = online.redis_url
    if served.namespace is None:
        update["namespace"] = online.namespace
    if not update:
        return export
    return export.model_copy(update={"online": served.model_copy(update=update)})


def export_experiment(
    candidates: Sequence[Candidate],
    dataset: Dataset,
    experiment: ExperimentConfig,
    *,
    export: ExportConfig | None = None,
    parent_run_id: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    echo: Echo | None = print,
) -> ExportResult:
    """The one export path of an experiment's champion (module doc): ``export`` (default: the
    experiment's ``export:`` block) with the experiment's ``online:`` block as its defaults, the
    experiment's confidence, paired test and segmentation, then :func:`export_champion`.
    ``personalize run``, ``personalize export`` and erasure's re-export all come here."""
    config = with_online_defaults(export if export is not None else experiment.export, experiment.online)
    return export_champion(
        candidates,
        dataset,
        config=config,
        confidence=experiment.evaluation.confidence,
        paired_test=experiment.evaluation.paired_test,
        segments=experiment.segments,
        parent_run_id=parent_run_id,
        tracking_uri=tracking_uri,
        progress=progress,
        echo=echo,
    )


@dataclass
class _Finalist:
    """A candidate refit on all the data, its state written."""

    candidate: Candidate
    model: Recommender
    state: Path
    info: dict[str, Any]
    seconds: float


def export_champion(
    candidates: Sequence[Candidate],
    dataset: Dataset,
    *,
    config: ExportConfig | None = None,
    parent_run_id: str | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    confidence: float = 0.95,
    paired_test: str = "t",
    progress: bool = True,
    echo: Echo | None = print,
    segments: SegmentsConfig | None = None,
) -> ExportResult:
    """Choose (see :mod:`personalize.serving.champion` for the rule), refit on all of
    ``dataset``, log, register and promote the champion.

    ``segments``: the experiment's segmentation when it is enabled; every user is then labelled
    (fitted on all the data) before the refit, and with ``config.segments`` the state ships the
    labels, segment popularity and the demographics labeller (:mod:`personalize.scoring.segments`).

    The export run is nested under ``parent_run_id`` (the experiment or tuning session the
    candidates come from) when given, else it is filed in the MLflow ``experiment``. When the
    exported state, the shipped scoring code and the serving settings hash to what the current
    champion version holds, nothing is registered: the result says the champion is unchanged.
    """
    say = echo or (lambda _msg: None)
    config = config or ExportConfig()
    candidates = list(candidates)
    uri = tracking_uri or current_tracking_uri()
    parent_experiment_id = None
    if parent_run_id is not None:
        experiment, parent_experiment_id = records.experiment_of_run(parent_run_id, uri)
    selection = rank(candidates, confidence, paired_test)
    name = config.model_name(dataset.name)

    steps = tqdm(total=3, desc="export", disable=not progress, unit="step")
    try:
        tracker = Tracker(experiment or "exports", uri)
        parent = None
        if parent_run_id is not None:
            parent = RunHandle(tracker.client, parent_run_id, parent_experiment_id, "parent")
        with (
            tracker.run(
                f"export {selection.leader.label}", "export", parent=parent, tags={"registered_model": name}
            ) as run,
            tempfile.TemporaryDirectory() as tmp,
        ):
            steps.set_postfix_str("refit on all data")
            final = _refit_finalists(
                selection, dataset, config, parent_run_id, run.run_id, Path(tmp), segments, candidates
            )
            check_registrable(final.model, final.info)
            table = candidates_table(candidates, selection, config.metric, confidence)
            say(f"\nExport: {selection.reason(config.metric)}")
            code = ship_code(Path(tmp) / "code")
            requirements = pip_requirements(final.model.scorer(), online=config.online.enabled)
            digest = state_hash(final.state, code, config, requirements)
            served_config = model_config(final.model, config, digest)
            _log_selection(run, final, config, table, selection, digest, len(candidates))
            steps.update(1)

            common = {
                "registered_model": name,
                "alias": config.alias,
                "run_id": run.run_id,
                "champion": final.candidate,
                "candidates": table,
                "metric": config.metric,
                "refit_seconds": final.seconds,
                "tracking_uri": uri,
                "selection": selection,
                "state_hash": digest,
                "model": final.model,
                "model_config": served_config,
            }
            current = model_registry.current_version(name, config.alias, uri)
            if current is not None and current.tags.get("promotion.state_hash") == digest:
                run.set_tags({"export.outcome": "unchanged", "model_version": str(current.version)})
                result = ExportResult(
                    **common,
                    version=str(current.version),
                    model_uri=f"models:/{name}@{config.alias}",
                    logged_model_uri=str(current.source),
                    previous=None,
                    unchanged=True,
                )
            else:
                steps.set_postfix_str("log and register the MLflow model")
                result = _log_and_register(run, final, code, requirements, config, dataset, common, uri)
            steps.update(2)
    finally:
        steps.close()
    say(result.summary())
    return result


def _refit_finalists(
    selection: Selection,
    dataset: Dataset,
    config: ExportConfig,
    source_run_id: str | None,
    run_id: str,
    tmp: Path,
    segments: SegmentsConfig | None = None,
    candidates: Sequence[Candidate] | None = None,
) -> _Finalist:
    """Refit the leader (and the runner-up, when the two are within noise) on all the data and
    write their states; the champion is the leader, or the smaller state of a tie."""
    data = all_data(dataset)
    fallback = None
    if config.segments and (segments is None or not segments.enabled):
        raise ExportError("export.segments needs segments.enabled: true in the experiment")
    if segments is not None and segments.enabled:
        data, fallback = segment_data(data, segments, dataset.fingerprint)
        fallback = fallback if config.segments else None
    finalists = [selection.leader, selection.runner_up] if selection.tied else [selection.leader]
    fitted = []
    for i, candidate in enumerate(finalists):
        t0 = time.perf_counter()
        model = refit_on_all_data(candidate, data)
        seconds = time.perf_counter() - t0
        info = _provenance(candidate, config, dataset, source_run_id, run_id)
        state = write_state(
            model,
            tmp / f"candidate{i}" / "state",
            config,
            info,
            fallback,
            data.events,
            dataset.consent,
            candidates,
        )
        info = read_info(state)  # with what writing added (the privacy record, a private fallback)
        selection.sizes[candidate.label] = sum(f.stat().st_size for f in state.rglob("*") if f.is_file())
        fitted.append(_Finalist(candidate, model, state, info, seconds))
    champion = min(fitted, key=lambda f: selection.sizes[f.candidate.label] if selection.tied else 0)
    selection.champion = champion.candidate
    return champion


def _log_and_register(
    run: RunHandle,
    final: _Finalist,
    code: Path,
    requirements: list[str],
    config: ExportConfig,
    dataset: Dataset,
    common: dict[str, Any],
    uri: str,
) -> ExportResult:
    """Log the pyfunc model into the export run, register it, move the alias."""
    champion, model = final.candidate, final.model
    logged = model_registry.log_pyfunc_model(
        run,
        model_code=MODEL_CODE,
        code_paths=[code],
        artifacts={"state": str(final.state)},
        input_example=input_example(model, config),
        pip_requirements=requirements,
        metadata={k: v for k, v in final.info.items() if k != "params"},
        params={"model_type": champion.model_type, **flatten(champion.params)},
        model_config=common["model_config"],
        uri=uri,
    )
    selection = common["selection"]
    promotion = model_registry.promote(
        logged.model_uri,
        common["registered_model"],
        {
            "run_id": run.run_id,
            "source_run_id": final.info["source_run_id"] or "none",
            "candidate_run_id": champion.run_id or "none",
            "model": champion.label,
            "model_type": champion.model_type,
            "metric": f"valid_{MetricName.parse(config.metric)}",
            "value": f"{champion.value:.6f}",
            "data_fingerprint": dataset.fingerprint,
            "state_hash": common["state_hash"],
            "reason": selection.reason(config.metric),
        },
        alias=config.alias,
        move_alias=config.promote,
        description=(
            f"{champion.label} ({champion.model_type}) refit on all {len(dataset.interactions)} "
            f"interactions of {dataset.name}; valid {config.metric} {champion.value:.4f}"
        ),
        uri=uri,
    )
    run.set_tags(
        {"export.outcome": "registered", "model_version": promotion.version, "logged_model": logged.model_uri}
    )
    name = common["registered_model"]
    return ExportResult(
        **common,
        version=promotion.version,
        model_uri=promotion.uri if config.promote else f"models:/{name}/{promotion.version}",
        logged_model_uri=logged.model_uri,
        previous=promotion.previous,
    )


def model_config(model: Recommender, config: ExportConfig, digest: str) -> dict[str, Any]:
    """The MLflow ``model_config`` of the exported model: the request ID types, the cache's model
    key (the state hash), and the online store. ``online_url`` / ``online_namespace`` are always
    present (null) so that a loader may set them (MLflow overrides only logged keys); what export
    recorded is under ``export_online_*`` (precedence: :class:`personalize.config.serving.OnlineConfig`)."""
    online = config.online
    return {
        "user_id_type": id_type(model.index_.users),
        "item_id_type": id_type(model.index_.items),
        "model_key": digest,
        "online_url": None,
        "online_namespace": None,
        "export_online_url": online.url if online.enabled else None,
        "export_online_namespace": online.namespace,
        "online_timeout_seconds": online.timeout_seconds,
        "online_cache_ttl_seconds": online.cache_ttl_seconds,
    }


def _provenance(
    champion: Candidate, config: ExportConfig, dataset: Dataset, source_run_id: str | None, run_id: str
) -> dict[str, Any]:
    """What the exported state records about where it came from."""
    return {
        "model": champion.label,
        "model_type": champion.model_type,
        "params": champion.params,
        "seed": champion.seed,
        "selection_metric": f"valid {config.metric}",
        "selection_value": champion.value,
        "dataset": dataset.name,
        "data_fingerprint": dataset.fingerprint,
        "interactions": len(dataset.interactions),
        "source_run_id": source_run_id or "",
        "export_run_id": run_id,
    }


def _log_selection(
    run: RunHandle,
    final: _Finalist,
    config: ExportConfig,
    table: pd.DataFrame,
    selection: Selection,
    digest: str,
    n_candidates: int,
) -> None:
    """The export run's params, metrics, candidates table and selection plot."""
    champion = final.candidate
    run.set_tags({"model_type": champion.model_type, "champion": champion.label})
    run.log_params(
        {
            "champion": {k: v for k, v in final.info.items() if k != "params"},
            "params": champion.params,
            "export": config.model_dump(mode="json"),
            "selection": {"reason": selection.reason(config.metric), "state_hash": digest},
            **git_state(),
            "version": package_versions(),
        }
    )
    run.log_metrics(
        {
            f"champion_valid_{MetricName.parse(config.metric).key}": champion.value,
            "refit_seconds": final.seconds,
            "state_bytes": sum(p.stat().st_size for p in final.state.rglob("*") if p.is_file()),
            "n_candidates": n_candidates,
        }
    )
    run.log_table(table, "candidates.csv")
    run.log_figure(selection_plot(table, config.metric), "plots/champion_selection.png")


def export_run(
    run_id: str,
    *,
    overrides: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    echo: Echo | None = print,
) -> ExportResult:
    """Export the champion of a logged experiment (or tuning session) run.

    Rebuilds the data from the run's ``config.yaml`` and checks it against the run's
    ``data.fingerprint``; reads each model's validation value (model run) and the selected params
    of its best seed (seed runs); then :func:`export_experiment` with the run's config. ``overrides``
    change keys of the run's ``export:`` block (e.g. ``{"registered_model": "shop-recommender"}``).
    """
    say = echo or (lambda _msg: None)
    record = records.read_experiment(run_id, tracking_uri)
    experiment_config = read_experiment(data=yaml.safe_load(record.config_yaml))
    try:
        config = ExportConfig.model_validate(
            {**experiment_config.export.model_dump(), **(overrides or {}), "enabled": True}
        )
    except ValueError as exc:
        raise ConfigError(f"export options: {exc}") from None
    dataset = ingest(experiment_config.data)
    if dataset.fingerprint != record.fingerprint:
        d = experiment_config.data
        where = d.source if d.interactions is None else str(d.interactions.path)
        raise ExportError(
            f"the data changed since run {record.run_id}: its data.fingerprint is {record.fingerprint[:12]}, "
            f"the data its config.yaml describes ({where}) now has fingerprint {dataset.fingerprint[:12]}; "
            "rerun the experiment to export from the current data"
        )
    say(
        f"Run {record.run_id} ({record.kind}, experiment {record.experiment_name!r}): same data, fingerprint "
        f"{dataset.fingerprint[:12]}"
    )
    key = MetricName.parse(config.metric).prefixed("valid")
    candidates = []
    for m in record.models:
        if key not in m.valid or not m.seeds:
            raise ExportError(
                f"model run {m.run_id} ({m.label}) has no {key} or no seed runs; available: {sorted(m.valid)}"
            )
        best = max(m.seeds, key=lambda s: s.valid.get(key, float("-inf")))
        test_key = MetricName.parse(config.metric).prefixed("test")
        specs = [spec for spec in experiment_config.models if spec.label == m.label]
        grid_points = len(specs[0].combinations()) if specs else 1
        candidates.append(
            Candidate(
                m.label,
                m.model_type,
                best.selected_params,
                m.valid[key],
                best.seed,
                m.run_id,
                per_user=None
                if m.valid_per_user is None
                else m.valid_per_user.get(str(MetricName.parse(config.metric))),
                test_value=m.test.get(test_key),
                fits=grid_points * len(m.seeds),
            )
        )
    if not candidates:
        raise ExportError(f"run {record.run_id} has no model runs to export from")
    return export_experiment(
        candidates,
        dataset,
        experiment_config,
        export=config,
        parent_run_id=record.run_id,
        tracking_uri=tracking_uri,
        progress=progress,
        echo=echo,
    )


def recommendations_frame(predictions: Sequence[Any]) -> pd.DataFrame:
    """The pyfunc model's output (a list of recommendation rows) as a DataFrame."""
    rows = [p.model_dump() if hasattr(p, "model_dump") else dict(p) for p in predictions]
    return pd.DataFrame(rows, columns=[C.USER, C.ITEM, C.RANK, C.SCORE, C.PERSONALISED])
