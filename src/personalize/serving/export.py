"""Export the champion of an experiment or a tuning session as a self-contained MLflow model.

:func:`export_champion` tells the story:

1. **Candidates**: every model of the experiment (or session) with its validation value of the
   selection metric (``export.metric``, NDCG@10 by default; the mean over seeds) and the params
   it selected on validation (iterative models: the best epoch count), taken from its best seed.
2. **Champion**: the candidate with the highest value among the exportable ones (a model class
   with ``exportable = False`` -- Random, RecBole peers -- is listed but not eligible); ties go
   to the first listed.
3. **Refit** with those params and that seed on *all* the data (train + validation + test): the
   model that serves should know every interaction there is.
4. **State**: the model's :class:`~personalize.models.base.ScorerSpec` plus the ID maps, each
   user's seen items and the popularity fallback, written as plain files by the standalone
   scorer (:mod:`recsys_scorer`) that ships with the model.
5. **Log** a pyfunc model from code (``recsys_pyfunc.py``) with the scorer as ``code_paths`` and
   the state as an artifact, its signature (from the request / response types), an input example
   and pinned pip requirements (NumPy, pandas, SciPy, pyarrow, pydantic, + torch for NeuMF) into
   an ``export`` run nested under the experiment or session run, beside the candidates table and
   a plot of the selection.
6. **Register** it under one name and move the ``champion`` alias to it; the promotion (which
   run, metric, value, and the previous champion) is recorded as tags on the model version.

Serving needs only the model folder: ``mlflow.pyfunc.load_model("models:/<name>@champion")`` or
``mlflow models serve -m models:/<name>@champion --env-manager local``.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from personalize import columns as C
from personalize.data.ingest import Dataset, ingest
from personalize.data.matrix import IdIndex, InteractionData
from personalize.errors import ConfigError, PersonalizeError
from personalize.models.base import Recommender, ScorerSpec
from personalize.models.registry import create_model, get_model_class
from personalize.serving.config import ExportConfig
from personalize.tracking import registry
from personalize.tracking.store import (
    RunHandle,
    Tracker,
    flatten,
    git_state,
    metric_key,
    package_versions,
)
from personalize.tracking.store import tracking_uri as current_tracking_uri

Echo = Callable[[str], None]

STANDALONE = Path(__file__).resolve().parent / "standalone"
MODEL_CODE = STANDALONE / "recsys_pyfunc.py"
SCORER_CODE = STANDALONE / "recsys_scorer.py"
SERVING_PACKAGES = ("numpy", "pandas", "scipy", "pyarrow", "pydantic")

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


class ExportError(PersonalizeError):
    """The champion cannot be exported (no eligible model, changed data, a missing run)."""


@dataclass
class Candidate:
    """A model that may become the champion: what to refit, and how it did on validation."""

    label: str
    model_type: str
    params: dict[str, Any]  # the selected params (iterative models: epochs = best epoch)
    value: float  # validation value of the selection metric (higher is better)
    seed: int = 0
    run_id: str | None = None  # its model (or trial) run, for the record

    @property
    def exportable(self) -> bool:
        return bool(getattr(get_model_class(self.model_type), "exportable", True))

    @property
    def eligible(self) -> bool:
        return self.exportable and self.value is not None and math.isfinite(self.value)


@dataclass
class ExportResult:
    """Where the champion went: registry name, version and alias, and the model's URIs."""

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
    model: Recommender | None = field(default=None, repr=False)  # the refit model, in process

    def summary(self) -> str:
        prev = (
            f"version {self.previous['version']} ({self.previous['model']}, "
            f"{self.metric} {self.previous['value']})"
            if self.previous
            else "none"
        )
        return "\n".join(
            [
                f"Champion:   {self.champion.label} ({self.champion.model_type}), "
                f"valid {self.metric} = {self.champion.value:.4f}, seed {self.champion.seed}",
                f"Refit:      on all the data in {self.refit_seconds:.1f} s",
                f"Registered: {self.registered_model} version {self.version}"
                + (f", alias '{self.alias}'" if self.model_uri.endswith(f"@{self.alias}") else ""),
                f"Replaced:   {prev}",
                f"Load:       mlflow.pyfunc.load_model('{self.model_uri}')",
                f"Serve:      MLFLOW_TRACKING_URI={self.tracking_uri} "
                f"mlflow models serve -m '{self.model_uri}' --env-manager local --port 5001",
            ]
        )


# ------------------------------------------------------------------------------ candidates


def candidates_from_result(result: Any, metric: str = "ndcg@10") -> list[Candidate]:
    """Candidates of an :class:`~personalize.recipe.ExperimentResult`: per model the mean
    validation ``metric`` over seeds, and the selected params and seed of its best seed."""
    out = []
    for outcome in result.outcomes:
        seeds = outcome.seeds
        available = sorted(seeds[0].valid.summary)
        if metric not in seeds[0].valid.summary:
            raise ConfigError(f"export.metric {metric!r} is not evaluated; available: {available}")
        best = max(seeds, key=lambda s: s.valid.summary[metric])
        out.append(
            Candidate(
                label=outcome.label,
                model_type=outcome.model_type,
                params=dict(best.selected_params),
                value=float(np.mean([s.valid.summary[metric] for s in seeds])),
                seed=int(best.seed),
                run_id=outcome.run_id,
            )
        )
    return out


def choose_champion(candidates: Sequence[Candidate]) -> Candidate:
    """The eligible candidate with the highest value (ties: the first listed)."""
    eligible = [c for c in candidates if c.eligible]
    if not eligible:
        listed = ", ".join(f"{c.label} ({c.model_type})" for c in candidates) or "none"
        raise ExportError(
            f"no exportable model among the candidates ({listed}); Random and RecBole peers are "
            "never exported"
        )
    return max(eligible, key=lambda c: c.value)  # max keeps the first of equal values


def candidates_table(candidates: Sequence[Candidate], champion: Candidate, metric: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "model": c.label,
                "type": c.model_type,
                f"valid {metric}": c.value,
                "seed": c.seed,
                "exportable": c.exportable,
                "champion": c is champion,
                "params": yaml.safe_dump(c.params, default_flow_style=True, width=10_000).strip(),
                "run_id": c.run_id or "",
            }
            for c in candidates
        ]
    )


def selection_plot(table: pd.DataFrame, metric: str):
    """Validation value per candidate; the champion highlighted, non-exportable models hatched."""
    column = f"valid {metric}"
    table = table.sort_values(column)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(table) + 1.5))
    colours = ["tab:orange" if c else "tab:blue" for c in table["champion"]]
    bars = ax.barh(table["model"], table[column], color=colours)
    for bar, exportable in zip(bars, table["exportable"]):
        if not exportable:
            bar.set_hatch("//")
            bar.set_alpha(0.5)
    ax.set_xlabel(f"validation {metric} (orange: champion; hatched: not exportable)")
    ax.set_title("Champion selection")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------- refit


def all_data(dataset: Dataset) -> InteractionData:
    """Every interaction of the dataset (train + validation + test), indexed over every known
    user and the whole catalogue."""
    index = IdIndex.build(dataset.users, dataset.items, dataset.interactions)
    return InteractionData.build(dataset.interactions, index, dataset.users, dataset.items)


def refit_on_all_data(candidate: Candidate, data: InteractionData) -> Recommender:
    """The candidate's model, fitted with its selected params and seed on ``data``."""
    return create_model(candidate.model_type, candidate.params, candidate.seed).fit(data)


def scorer_tree(model: Recommender, spec: ScorerSpec | None = None) -> dict[str, Any]:
    """The model's scorer as the nested dicts the standalone scorer saves: the spec plus, per
    node, whether that model answers cold users itself (the parts of a hybrid are its fitted
    ``components_``)."""
    spec = model.export_spec() if spec is None else spec
    components = getattr(model, "components_", None)
    if not spec.parts or components is None or len(components) != len(spec.parts):
        components = [None] * len(spec.parts)
    return {
        "kind": spec.kind,
        "arrays": spec.arrays,
        "params": spec.params,
        "handles_cold_users": bool(type(model).handles_cold_users) if model is not None else False,
        "parts": [_part_tree(p, m) for p, m in zip(spec.parts, components)],
    }


def _part_tree(spec: ScorerSpec, model: Recommender | None) -> dict[str, Any]:
    if model is not None:
        return scorer_tree(model, spec)
    return {
        "kind": spec.kind,
        "arrays": spec.arrays,
        "params": spec.params,
        "handles_cold_users": False,
        "parts": [_part_tree(p, None) for p in spec.parts],
    }


def _uses(tree: dict[str, Any], kind: str) -> bool:
    return tree["kind"] == kind or any(_uses(p, kind) for p in tree["parts"])


def write_state(
    model: Recommender, folder: Path, config: ExportConfig, info: dict[str, Any] | None = None
) -> tuple[Path, dict[str, Any]]:
    """Write the fitted ``model``'s serving state to ``folder``; returns it and the tree."""
    from personalize.serving.standalone import recsys_scorer

    tree = scorer_tree(model)
    recsys_scorer.save_state(
        folder,
        tree,
        model.index_.users,
        model.index_.items,
        model.seen_,
        model.popularity_,
        settings={"default_k": config.default_k, "max_k": config.max_k, "max_rows": config.max_rows},
        info=info,
    )
    return folder, tree


def pip_requirements(tree: dict[str, Any]) -> list[str]:
    """What the served model imports, pinned to the versions it was exported with (torch only
    when a NeuMF scorer needs it; never the training stack)."""
    names = [*SERVING_PACKAGES, *(["torch"] if _uses(tree, "neumf") else [])]
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in names]


def input_example(model: Recommender, config: ExportConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Two request rows for known users (one with its own k, one excluding an item) and the
    params default k."""
    users = model.index_.users[np.flatnonzero(model.user_history_ > 0)[:2]]
    if len(users) == 0:
        users = model.index_.users[:1]
    rows: list[dict[str, Any]] = [{"user_id": _native(users[0]), "k": min(5, config.max_k)}]
    if len(users) > 1:
        top = int(np.argmax(model.popularity_))
        rows.append({"user_id": _native(users[1]), "exclude_items": [_native(model.index_.items[top])]})
    return rows, {"k": config.default_k}


def id_type(ids: pd.Index) -> str:
    """'int' for integer IDs, else 'str': the type requests must use (the model's signature)."""
    return "int" if pd.api.types.is_integer_dtype(ids.dtype) else "str"


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------------------------------- export


def export_champion(
    source: Any,
    *,
    dataset: Dataset | None = None,
    config: ExportConfig | None = None,
    parent_run_id: str | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    echo: Echo | None = print,
) -> ExportResult:
    """Choose, refit on all data, log, register and promote the champion.

    ``source`` is an :class:`~personalize.recipe.ExperimentResult` (its dataset, parent run and
    store are used) or a sequence of :class:`Candidate` (then give ``dataset``, and the parent
    run -- e.g. a tuning session's -- as ``parent_run_id``, or an MLflow ``experiment`` name).
    """
    say = echo or (lambda _msg: None)
    config = config or ExportConfig()
    if isinstance(source, Sequence):
        candidates = list(source)
        if dataset is None:
            raise ExportError("export_champion(candidates) needs the dataset to refit on")
    else:  # an experiment result
        candidates = candidates_from_result(source, config.metric)
        dataset = dataset or source.dataset
        parent_run_id = parent_run_id or source.parent_run_id
        tracking_uri = tracking_uri or source.tracking_uri
        experiment = experiment or source.config.tracking.experiment or source.config.name
        if parent_run_id is None:
            raise ExportError("the experiment was run without tracking (--no-track): nothing to export from")
    uri = tracking_uri or current_tracking_uri()
    if parent_run_id is not None:
        experiment, parent_experiment_id = registry.experiment_of_run(parent_run_id, uri)
    champion = choose_champion(candidates)
    table = candidates_table(candidates, champion, config.metric)
    name = config.model_name(dataset.name)
    say(f"\nExport: champion by validation {config.metric} is {champion.label} ({champion.value:.4f})")

    steps = tqdm(total=4, desc="export", disable=not progress, unit="step")
    try:
        tracker = Tracker(experiment or "exports", uri)
        parent = None
        if parent_run_id is not None:
            parent = RunHandle(tracker.client, parent_run_id, parent_experiment_id, "parent")
        with (
            tracker.run(
                f"export {champion.label}",
                "export",
                parent=parent,
                tags={"model_type": champion.model_type, "registered_model": name},
            ) as run,
            tempfile.TemporaryDirectory() as tmp,
        ):
            steps.set_postfix_str(f"refit {champion.label} on all data")
            data = all_data(dataset)
            t0 = time.perf_counter()
            model = refit_on_all_data(champion, data)
            refit_seconds = time.perf_counter() - t0
            steps.update(1)

            steps.set_postfix_str("write state")
            info = {
                "model": champion.label,
                "model_type": champion.model_type,
                "params": champion.params,
                "seed": champion.seed,
                "selection_metric": f"valid {config.metric}",
                "selection_value": champion.value,
                "dataset": dataset.name,
                "data_fingerprint": dataset.fingerprint,
                "interactions": len(dataset.interactions),
                "source_run_id": parent_run_id or "",
                "export_run_id": run.run_id,
            }
            state, tree = write_state(model, Path(tmp) / "state", config, info)
            run.log_params(
                {
                    "champion": {k: v for k, v in info.items() if k != "params"},
                    "params": champion.params,
                    "export": config.model_dump(mode="json"),
                    **git_state(),
                    "version": package_versions(),
                }
            )
            run.log_metrics(
                {
                    f"champion_valid_{config.metric}": champion.value,
                    "refit_seconds": refit_seconds,
                    "state_bytes": sum(p.stat().st_size for p in state.rglob("*") if p.is_file()),
                    "n_candidates": len(candidates),
                }
            )
            run.log_table(table, "candidates.csv")
            fig = selection_plot(table, config.metric)
            run.log_figure(fig, "plots/champion_selection.png")
            plt.close(fig)
            steps.update(1)

            steps.set_postfix_str("log MLflow model")
            logged = registry.log_pyfunc_model(
                run,
                model_code=MODEL_CODE,
                code_paths=[SCORER_CODE],
                artifacts={"state": str(state)},
                input_example=input_example(model, config),
                pip_requirements=pip_requirements(tree),
                metadata={k: v for k, v in info.items() if k != "params"},
                params={"model_type": champion.model_type, **flatten(champion.params)},
                model_config={
                    "user_id_type": id_type(model.index_.users),
                    "item_id_type": id_type(model.index_.items),
                },
                uri=uri,
            )
            steps.update(1)

            steps.set_postfix_str("register and promote")
            promotion = registry.promote(
                logged.model_uri,
                name,
                {
                    "run_id": run.run_id,
                    "source_run_id": parent_run_id or "none",
                    "candidate_run_id": champion.run_id or "none",
                    "model": champion.label,
                    "model_type": champion.model_type,
                    "metric": f"valid_{config.metric}",
                    "value": f"{champion.value:.6f}",
                    "data_fingerprint": dataset.fingerprint,
                },
                alias=config.alias,
                move_alias=config.promote,
                description=(
                    f"{champion.label} ({champion.model_type}) refit on all {len(dataset.interactions)} "
                    f"interactions of {dataset.name}; valid {config.metric} {champion.value:.4f}"
                ),
                uri=uri,
            )
            run.set_tags({"model_version": promotion.version, "logged_model": logged.model_uri})
            steps.update(1)
    finally:
        steps.close()
    model_uri = promotion.uri if config.promote else f"models:/{name}/{promotion.version}"
    result = ExportResult(
        registered_model=name,
        version=promotion.version,
        alias=config.alias,
        model_uri=model_uri,
        logged_model_uri=logged.model_uri,
        run_id=run.run_id,
        champion=champion,
        candidates=table,
        metric=config.metric,
        previous=promotion.previous,
        refit_seconds=refit_seconds,
        tracking_uri=uri,
        model=model,
    )
    say(result.summary())
    return result


def export_after_run(result: Any, *, tracked: bool, progress: bool = True, echo: Echo | None = print) -> None:
    """The end of ``personalize run`` when the experiment has ``export: {enabled: true}``: export
    its champion and keep the :class:`ExportResult` in ``result.extras["export"]``."""
    if not tracked:
        if echo:
            echo("\nExport skipped: the run was not tracked (--no-track); there is no run to export from.")
        return
    config = result.config.export
    result.extras["export"] = export_champion(result, config=config, progress=progress, echo=echo)


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
    of its best seed (seed runs); then :func:`export_champion`. ``overrides`` change keys of the
    run's ``export:`` block (e.g. ``{"registered_model": "shop-recommender"}``).
    """
    from personalize.config import load_experiment

    say = echo or (lambda _msg: None)
    record = registry.read_experiment(run_id, tracking_uri)
    experiment_config = load_experiment(data=yaml.safe_load(record.config_yaml))
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
    key = "valid_" + metric_key(config.metric)
    candidates = []
    for m in record.models:
        if key not in m.valid or not m.seeds:
            raise ExportError(
                f"model run {m.run_id} ({m.label}) has no {key} or no seed runs; available: {sorted(m.valid)}"
            )
        best = max(m.seeds, key=lambda s: s.valid.get(key, float("-inf")))
        candidates.append(
            Candidate(m.label, m.model_type, best.selected_params, m.valid[key], best.seed, m.run_id)
        )
    if not candidates:
        raise ExportError(f"run {record.run_id} has no model runs to export from")
    return export_champion(
        candidates,
        dataset=dataset,
        config=config,
        parent_run_id=record.run_id,
        tracking_uri=tracking_uri,
        progress=progress,
        echo=echo,
    )


def recommendations_frame(predictions: Sequence[Any]) -> pd.DataFrame:
    """The pyfunc model's output (a list of recommendation rows) as a DataFrame."""
    rows = [p.model_dump() if hasattr(p, "model_dump") else dict(p) for p in predictions]
    return pd.DataFrame(rows, columns=[C.USER, C.ITEM, C.RANK, C.SCORE, C.PERSONALISED])
