"""``tune(config)``: one seeded Optuna study per model with an equal budget, then a final
comparison of the tuned models on test.

The story, per model with a ``search:`` space:

1. open (or rejoin) the study ``<prefix>/<model>`` in the configured storage; a study created
   under another search space, data, split, seed or metric is refused (start a new prefix);
2. run trials until the study holds ``tuning.trials`` finished ones (complete, pruned or failed
   with an error; a trial whose worker died does not count and is retried with its params). The
   first trial is the model's untuned params (``tuning.start_from_defaults``), so the tuned model
   is never worse than its default on validation.
   Each trial is the recipe's own step (:func:`personalize.recipe.fit_and_evaluate` on train,
   evaluated on validation) with the trial's params; iterative models report the validation
   metric every ``training.eval_every`` epochs, where the pruner may stop them;
3. log the study (history, importances, best params as YAML) and keep the best params (for
   iterative models the best epoch count replaces the epoch budget).

Models without a search space are evaluated once, untuned. Finally every model is refit with
its best params on train + validation and evaluated once on test, with every seed for
stochastic models (:func:`personalize.recipe.run_experiment`, nested under the session), beside
its untuned self, and each tuned model is tested against its default with a paired test.

The session is told in this module; its parts are :mod:`.studies` (persistence, resume, the
budget), :mod:`.objective` (one trial), :mod:`.final` (the comparison on test) and
:mod:`.results`. Trials run with the experiment's first seed (split and model seed). The TPE sampler is
re-seeded before each trial from ``tuning.seed`` and the number of trials so far (trials of
dead workers aside), so a study resumed after a kill draws the same params as one that never
stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from personalize.config import ExperimentConfig, ModelSpec
from personalize.core.errors import ConfigError
from personalize.data.ingest import Dataset
from personalize.evaluation.leaderboard import format_leaderboard
from personalize.models.registry import get_model_class
from personalize.recipe import PreparedSplit, load_data, load_experiment, prepare_split, reload
from personalize.tracking.tuning import TuningLogger, session_logger, study_metrics, trials_table
from personalize.tuning import plots
from personalize.tuning.final import comparison, format_comparison, run_final
from personalize.tuning.objective import Objective
from personalize.tuning.results import StudyOutcome, TuningResult
from personalize.tuning.storage import StorageSpec, open_storage, parse_storage, worker_name
from personalize.tuning.studies import (
    counted,
    fail_stale,
    fingerprint,
    lost_run_ids,
    open_study,
    requeue_lost,
    run_trials,
    start_from_defaults,
    summarise,
    wait_for_attr,
)

Echo = Callable[[str], None]


@dataclass
class TuningContext:
    """What every study of a session shares: the data and split (the first seed's), the metric,
    the storage, the sampler seed, the study prefix and the session's logger."""

    config: ExperimentConfig
    trial_config: ExperimentConfig  # trials monitor (early-stop, prune) the metric they maximise
    metric: str
    seed: int
    sampler_seed: int
    store: StorageSpec
    storage: Any
    prefix: str
    dataset: Dataset
    prepared: PreparedSplit
    progress: bool = True
    keep_per_user: bool = False
    logger: TuningLogger | None = None

    @classmethod
    def open(cls, config: ExperimentConfig, *, keep_per_user: bool, progress: bool) -> TuningContext:
        tuning = config.tuning
        metric = tuning.metric or config.evaluation.primary_metric
        seed = config.seeds[0]
        store = parse_storage(tuning.storage)
        dataset = load_data(config)
        return cls(
            config=config,
            trial_config=config.model_copy(
                update={"training": config.training.model_copy(update={"monitor_metric": metric})}
            ),
            metric=metric,
            seed=seed,
            sampler_seed=seed if tuning.seed is None else tuning.seed,
            store=store,
            storage=open_storage(store, tuning.heartbeat_seconds, tuning.grace, tuning.max_retry),
            prefix=tuning.study_prefix or config.name,
            dataset=dataset,
            prepared=prepare_split(dataset, config, seed),
            progress=progress,
            keep_per_user=keep_per_user,
        )


def tune(
    config: ExperimentConfig | str | Path,
    overrides: list[str] | None = None,
    *,
    models: list[str] | None = None,
    search_only: bool = False,
    track: bool = True,
    progress: bool = True,
    echo: Echo | None = print,
    keep_per_user: bool = False,
) -> TuningResult:
    """Tune every model of an experiment with the same budget and compare the tuned models on test.

    ``models`` restricts the session to some model labels. ``search_only`` (a worker) runs trials
    and returns without the final comparison; any number of workers may share the studies
    (journal or PostgreSQL storage). ``track=False`` logs nothing to MLflow.
    """
    if not isinstance(config, ExperimentConfig):
        config = load_experiment(config, overrides)
    elif overrides:
        config = reload(config, overrides)
    say = echo or (lambda _msg: None)
    tuning = config.tuning
    specs = _selected(config, models)
    ctx = TuningContext.open(config, keep_per_user=keep_per_user, progress=progress)
    dataset, metric, store = ctx.dataset, ctx.metric, ctx.store
    say(
        f"\nData: {dataset.name} (fingerprint {dataset.fingerprint[:12]}); "
        f"split {config.split.name}, seed {ctx.seed}"
    )
    budget = f"{tuning.trials} trials per model" + (
        f", at most {tuning.timeout_minutes:g} min per model (wall time: not reproducible)"
        if tuning.timeout_minutes
        else ""
    )
    say(f"Tuning on validation {metric}: {budget}; storage {store.display}; studies '{ctx.prefix}/<model>'")

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar and tables say it
    try:
        if track:
            marker, created = open_study(ctx.storage, ctx.prefix, tuning, ctx.sampler_seed)
            ctx.logger = session_logger(
                config,
                marker,
                created,
                storage=store.display,
                metric=metric,
                data_name=dataset.name,
                data_fingerprint=dataset.fingerprint,
                split_params=ctx.prepared.split.params,
            )
        logger = ctx.logger
    except BaseException:
        optuna.logging.set_verbosity(verbosity)
        raise
    outcomes: list[StudyOutcome] = []
    try:
        for spec in specs:
            if not spec.search:
                outcomes.append(
                    StudyOutcome(
                        spec.label, spec.type, tuned=False, best_params=dict(spec.params), grid=spec.grid
                    )
                )
                continue
            outcomes.append(_tune_model(ctx, spec))
        result = TuningResult(config, metric, outcomes, storage=store.display)
        say("\nStudies (validation):")
        say(result.table.drop(columns=["best params"]).to_markdown(index=False))
        if search_only or not tuning.final:
            if logger:
                _finish_session(logger, result, end=not search_only)
            return _attach(result, logger)
        say("\nFinal comparison: best params refit on train + validation, tested once per seed")
        result.final = run_final(config, outcomes, logger, progress=progress, echo=echo, dataset=dataset)
        result.comparison = comparison(result)
        if result.comparison is not None and len(result.comparison):
            say("\nTuned versus default (test, paired over users):")
            say(format_comparison(result.comparison).to_markdown(index=False))
        if logger:
            _finish_session(logger, result)
    except KeyboardInterrupt:
        if logger:
            logger.fail(interrupted=True)
        raise
    except BaseException:
        if logger:
            logger.fail()
        raise
    finally:
        optuna.logging.set_verbosity(verbosity)
    return _attach(result, logger)


def cap_epochs(config: ExperimentConfig, max_epochs: int) -> ExperimentConfig:
    """The experiment with every iterative model's epoch budget (``iterations`` or ``epochs``)
    capped at ``max_epochs`` (quick looks and tests)."""
    data = config.model_dump(mode="json")
    for model in data["models"]:
        fields = get_model_class(model["type"]).Config.model_fields
        for key in ("iterations", "epochs"):
            if key in fields:
                default = fields[key].default
                model["params"][key] = min(int(model["params"].get(key, default)), int(max_epochs))
    return load_experiment(data=data)


def _selected(config: ExperimentConfig, labels: list[str] | None) -> list[ModelSpec]:
    if not labels:
        return list(config.models)
    known = {m.label: m for m in config.models}
    missing = [x for x in labels if x not in known]
    if missing:
        raise ConfigError(f"no model named {missing} in the experiment; models: {sorted(known)}")
    return [known[x] for x in labels]


def _attach(result: TuningResult, logger) -> TuningResult:
    if logger is not None:
        result.session_run_id = logger.session.run_id
        result.experiment_id = logger.experiment_id
        result.ui_command = logger.ui_command()
        result.tracking_uri = logger.tracker.uri
    return result


def _tune_model(ctx: TuningContext, spec: ModelSpec) -> StudyOutcome:
    """Open (or rejoin) the model's study, run its trials, summarise and log it."""
    config, metric, logger, store = ctx.trial_config, ctx.metric, ctx.logger, ctx.store
    tuning = config.tuning
    name = f"{ctx.prefix}/{spec.label}"
    study, created = open_study(ctx.storage, name, tuning, ctx.sampler_seed)
    stamp = fingerprint(spec, config, metric, ctx.dataset.fingerprint, ctx.seed)
    if created:
        start_from_defaults(study, spec, tuning)
        study.set_user_attr("fingerprint", stamp)
        study.set_user_attr("model_type", spec.type)
        study.set_user_attr("metric", metric)
        study.set_user_attr("search", {k: v.model_dump(mode="json") for k, v in spec.search.items()})
    else:
        known = wait_for_attr(study, "fingerprint")
        if known is not None and known != stamp:
            raise ConfigError(
                f"study {name!r} in {store.display} was created for another search space, data, split, "
                "seed, metric or training setup; set tuning.study_prefix to start a new one "
                "(or delete the study)"
            )
    cls = get_model_class(spec.type)
    model_run = None
    if logger is not None:
        model_run = logger.start_model(
            study,
            created,
            spec.label,
            tags={
                "model_type": spec.type,
                "family": cls.family,
                "optuna.study": name,
                "optuna.storage": store.display,
            },
            params={
                "model": {"type": spec.type, "family": cls.family, "label": spec.label},
                "params": spec.params,
                "search": {k: v.model_dump(mode="json", exclude_none=True) for k, v in spec.search.items()},
                "metric": metric,
                "study": name,
                "pruner": tuning.pruner if cls.iterative else "none (not iterative)",
            },
        )
    fail_stale(study)
    requeue_lost(study, tuning.max_retry)
    before = counted(study.get_trials(deepcopy=False))
    if logger is not None:
        logger.close_dead_trials(lost_run_ids(study))

    def start_run(trial: optuna.Trial, params: dict):
        run = logger.start_trial(
            model_run,
            spec.label,
            trial.number,
            tags={
                "optuna.study": name,
                "optuna.trial_number": trial.number,
                "model_type": spec.type,
                "worker": worker_name(),
            },
            params={"trial": trial.number, **params},
        )
        trial.set_user_attr("mlflow_run_id", run.handle.run_id)
        return run

    objective = Objective(
        spec,
        ctx.seed,
        ctx.prepared,
        config,
        metric,
        start_run if logger else None,
        keep_per_user=ctx.keep_per_user,
    )
    t0 = time.perf_counter()
    timed_out = run_trials(
        study, objective, tuning, ctx.sampler_seed, progress=ctx.progress, label=spec.label
    )
    outcome = summarise(study, spec)
    outcome.resumed, outcome.trials_before = not created, before
    outcome.new_trials = counted(study.get_trials(deepcopy=False)) - before
    outcome.seconds = time.perf_counter() - t0
    outcome.timed_out = timed_out
    outcome.per_user = objective.per_user
    outcome.study = study
    if logger is not None:
        logger.close_dead_trials(lost_run_ids(study))
        outcome.run_id = model_run.run_id
        _log_study(logger, model_run, study, outcome, metric, cls.iterative)
    return outcome


def _log_study(
    logger: TuningLogger, handle, study: optuna.Study, outcome: StudyOutcome, metric: str, iterative: bool
) -> None:
    """The study's plots, trials, metrics and pasteable best params on its model run."""
    figures = {
        "plots/optimization_history.png": plots.optimization_history(
            study, f"{outcome.label}: validation {metric.upper()} by trial", metric
        ),
        "plots/param_importances.png": plots.param_importances(
            study, f"{outcome.label}: parameter importances", metric
        ),
    }
    if iterative:
        figures["plots/intermediate_values.png"] = plots.intermediate_values(
            study, f"{outcome.label}: validation {metric.upper()} per epoch", metric
        )
    text = (
        f"# {outcome.label}: best of {outcome.counts['complete']} complete trials "
        f"in study {outcome.study_name}\n"
        f"# valid {metric} = {outcome.best_value} (trial {outcome.best_trial}); paste under models:\n"
        + yaml.safe_dump([outcome.spec()], sort_keys=False, default_flow_style=None)
    )
    logger.finish_model(
        handle,
        study_metrics(outcome.summary(), metric),
        {k: json.dumps(v) for k, v in outcome.best_params.items()},
        figures,
        {"trials.csv": trials_table(study)},
        {"best_params.yaml": text},
    )


def _finish_session(logger: TuningLogger, result: TuningResult, end: bool = True) -> None:
    """The session run's tables (studies, tuned versus default, the final leaderboard), the best
    model on test, and every model's best params."""
    tables = {"studies.csv": result.table}
    if result.comparison is not None:
        tables["tuned_vs_default.csv"] = result.comparison
        tables["tuned_vs_default.md"] = format_comparison(result.comparison)
    metrics: dict[str, float] = {}
    params: dict[str, Any] = {}
    if result.final is not None:
        tables["leaderboard.md"] = format_leaderboard(result.final.leaderboard)
        tables["leaderboard.csv"] = result.final.leaderboard
        best = result.best_on_test()
        primary = result.config.evaluation.primary
        params = {"best_on_test": best["label"], "final_run_id": result.final.parent_run_id}
        metrics[primary.prefixed("best_test")] = best[f"test_{primary}"]
    logger.finish(metrics, params, tables, {"best_params.yaml": result.best_params_yaml()}, end=end)
