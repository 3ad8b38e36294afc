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

Trials run with the experiment's first seed (split and model seed). The TPE sampler is
re-seeded before each trial from ``tuning.seed`` and the number of trials so far (trials of
dead workers aside), so a study resumed after a kill draws the same params as one that never
stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import yaml
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from personalize.config import ExperimentConfig, ModelSpec, load_experiment
from personalize.data.ingest import Dataset
from personalize.errors import ConfigError
from personalize.models.registry import get_model_class
from personalize.recipe import ExperimentResult, PreparedSplit, fit_and_evaluate, load_data, prepare_split
from personalize.tuning.config import TuningConfig
from personalize.tuning.storage import StorageSpec, open_storage, parse_storage, worker_name

Echo = Callable[[str], None]
DEFAULT_SUFFIX = " (default)"
POLL_SECONDS = 0.5


# ------------------------------------------------------------------------------ results


@dataclass
class StudyOutcome:
    """What tuning found for one model (``tuned=False``: no search space, evaluated untuned)."""

    label: str
    model_type: str
    tuned: bool
    study_name: str | None = None
    best_value: float | None = None  # validation metric of the best trial
    best_trial: int | None = None
    best_params: dict[str, Any] = field(default_factory=dict)  # params to refit with (pasteable)
    best_epoch: int | None = None
    default_params: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)  # untuned models keep their grid
    counts: dict[str, int] = field(default_factory=dict)  # complete / pruned / failed / retried
    epochs_trained: int = 0  # over all finished trials
    epochs_in_pruned: int = 0  # epochs trained by the trials that were pruned
    epochs_not_run: int = 0  # epoch budget the pruned trials did not use (an upper bound of the saving)
    run_id: str | None = None  # MLflow run of the study
    seconds: float = 0.0  # this process's wall time on the study
    timed_out: bool = False
    per_user: dict[int, pd.Series] = field(default_factory=dict, repr=False)  # keep_per_user only
    study: optuna.Study | None = field(default=None, repr=False)  # for plots (see tuning.plots)

    def spec(self) -> dict[str, Any]:
        """The model entry to paste under ``models:`` of an experiment file."""
        entry: dict[str, Any] = {"type": self.model_type, "name": self.label}
        if self.best_params:
            entry["params"] = self.best_params
        if self.grid:
            entry["grid"] = self.grid
        return entry

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.label,
            "type": self.model_type,
            "tuned": self.tuned,
            "complete": self.counts.get("complete", 0),
            "pruned": self.counts.get("pruned", 0),
            "failed": self.counts.get("failed", 0),
            "retried": self.counts.get("retried", 0),
            "best valid": self.best_value,
            "best trial": self.best_trial,
            "best epoch": self.best_epoch,
            "best params": json.dumps(self.best_params, sort_keys=True),
            "epochs trained": self.epochs_trained,
            "epochs in pruned trials": self.epochs_in_pruned,
            "epoch budget not run (pruned)": self.epochs_not_run,
            "seconds": round(self.seconds, 2),
        }


@dataclass
class TuningResult:
    """A tuning session: every model's study, the final test comparison and its statistics.

    Hook for exporting a champion: :meth:`champion` names the best model on test with its
    tuned params, validation value and MLflow run IDs; :meth:`tuned_experiment` is an
    experiment config whose models carry the tuned params (what an export refits).
    """

    config: ExperimentConfig
    metric: str
    studies: list[StudyOutcome]
    final: ExperimentResult | None = None
    comparison: pd.DataFrame | None = None  # tuned versus default, paired
    session_run_id: str | None = None
    experiment_id: str | None = None
    storage: str | None = None
    ui_command: str | None = None

    def study(self, label: str) -> StudyOutcome:
        return next(s for s in self.studies if s.label == label)

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame([s.summary() for s in self.studies])

    @property
    def leaderboard(self) -> pd.DataFrame | None:
        return None if self.final is None else self.final.leaderboard

    def best_params_yaml(self) -> str:
        """Every model's entry with its best params, to paste under ``models:``."""
        lines = [f"# Tuned on validation {self.metric} ({self.config.tuning.trials} trials per model)."]
        for s in self.studies:
            if s.tuned and s.best_value is not None:
                lines.append(
                    f"# {s.label}: best trial {s.best_trial}, valid {self.metric} = {s.best_value:.4f}"
                )
        entries = [s.spec() for s in self.studies if not s.tuned or s.best_value is not None]
        return "\n".join(lines) + "\n" + yaml.safe_dump(entries, sort_keys=False, default_flow_style=None)

    def tuned_experiment(self) -> ExperimentConfig:
        """The experiment with each model's params replaced by its tuned params."""
        return final_config(self.config, self.studies, compare_defaults=False)

    def champion(self) -> dict[str, Any] | None:
        """The best model on test: label, type, params, seeds, validation and test values, and
        the MLflow runs (final model run, study run). None before the final comparison."""
        if self.final is None:
            return None
        row = self.final.leaderboard.iloc[0]
        label = str(row["model"])
        outcome = next(o for o in self.final.outcomes if o.label == label)
        base = label.removesuffix(DEFAULT_SUFFIX)
        study = next((s for s in self.studies if s.label == base), None)
        primary = self.config.evaluation.primary_metric
        return {
            "label": label,
            "type": outcome.model_type,
            "params": outcome.params,
            "seeds": [s.seed for s in outcome.seeds],
            "tuned": bool(study and study.tuned and label == base),
            "valid_value": study.best_value if study and label == base else None,
            f"test_{primary}": float(row[primary]),
            "final_model_run_id": outcome.run_id,
            "final_run_id": self.final.parent_run_id,
            "study_run_id": study.run_id if study else None,
        }


# ----------------------------------------------------------------------------- objective


class Objective:
    """One trial: sample params, fit with the recipe's step on train, return the validation metric.

    ``keep_per_user`` keeps each complete trial's per-user validation values (for intervals).
    """

    def __init__(
        self,
        spec: ModelSpec,
        seed: int,
        prepared: PreparedSplit,
        config: ExperimentConfig,
        metric: str,
        start_run: Callable[[optuna.Trial, dict], Any] | None = None,
        keep_per_user: bool = False,
    ):
        self.spec = spec
        self.seed = seed
        self.prepared = prepared
        self.config = config
        self.metric = metric
        self.start_run = start_run
        self.keep_per_user = keep_per_user
        self.per_user: dict[int, pd.Series] = {}

    def params(self, trial: optuna.Trial) -> dict[str, Any]:
        return {**self.spec.params, **{k: dim.suggest(trial, k) for k, dim in self.spec.search.items()}}

    def __call__(self, trial: optuna.Trial) -> float:
        params = self.params(trial)
        trial.set_user_attr("worker", worker_name())
        run = self.start_run(trial, params) if self.start_run else None
        epochs = 0

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            nonlocal epochs
            epochs = epoch
            if run is not None:
                run.on_epoch(epoch, metrics)

        def on_report(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}: valid {self.metric} = {value:.5f}")

        spec = ModelSpec(type=self.spec.type, name=self.spec.label, params=params)
        try:
            outcome, model = fit_and_evaluate(
                spec, self.seed, self.prepared, self.config, on_epoch, on_report, evaluate_test=False
            )
            value = float(outcome.valid.summary[self.metric])
            if not np.isfinite(value):
                raise FloatingPointError(f"validation {self.metric} is {value}")
        except optuna.TrialPruned:
            trial.set_user_attr("epochs_run", epochs)
            if run is not None:
                run.end("PRUNED", {"epochs_run": epochs})
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("error", error[:1000])
            trial.set_user_attr("epochs_run", epochs)
            if run is not None:
                run.end("FAIL", {"epochs_run": epochs}, error=error)
            raise
        except BaseException:  # Ctrl-C: the trial is retried when the study resumes
            if run is not None:
                run.end("INTERRUPTED", {"epochs_run": epochs})
            raise
        trial.set_user_attr("selected_params", outcome.selected_params)
        trial.set_user_attr("best_epoch", outcome.best_epoch)
        trial.set_user_attr("epochs_run", int(model.epochs_run_))
        trial.set_user_attr("fit_seconds", round(outcome.fit_seconds, 4))
        if self.keep_per_user:
            per_user = outcome.valid.per_user
            self.per_user[trial.number] = per_user.loc[per_user["evaluated"], self.metric]
        if run is not None:
            from personalize.tracking.runs import result_metrics

            final = result_metrics("valid", outcome.valid.summary)
            if outcome.history:  # on the learning curve, at the best epoch
                run.on_epoch(outcome.best_epoch, final)
                final = {}
            run.end(
                "COMPLETE",
                {
                    **final,
                    "objective": value,
                    "best_epoch": outcome.best_epoch or 0,
                    "epochs_run": int(model.epochs_run_),
                    "fit_seconds": outcome.fit_seconds,
                },
            )
        return value


# ------------------------------------------------------------------------ study plumbing


def is_lost(trial: FrozenTrial) -> bool:
    """A trial that failed without an error of its own: its worker died or was interrupted."""
    return trial.state == TrialState.FAIL and "error" not in trial.user_attrs


def counted(trials: list[FrozenTrial]) -> int:
    """Trials that use up the budget: complete, pruned, or failed with an error."""
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    return sum(1 for t in trials if t.state in done or (t.state == TrialState.FAIL and not is_lost(t)))


def make_sampler(tuning: TuningConfig, seed: int, n_before: int) -> optuna.samplers.BaseSampler:
    """TPE seeded by the session seed and the number of trials before this one."""
    return optuna.samplers.TPESampler(
        seed=(seed * 1_000_003 + n_before) % 2**32, n_startup_trials=tuning.startup_trials
    )


def make_pruner(tuning: TuningConfig) -> optuna.pruners.BasePruner:
    if tuning.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=tuning.startup_trials, n_warmup_steps=tuning.warmup_epochs
        )
    if tuning.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, tuning.warmup_epochs), reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(storage, name: str, tuning: TuningConfig, seed: int) -> tuple[optuna.Study, bool]:
    """Create the study ``name`` (maximise), or load it if it exists; True when created here."""
    kwargs = {"sampler": make_sampler(tuning, seed, 0), "pruner": make_pruner(tuning)}
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", **kwargs)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage, **kwargs), False


def fail_stale(study: optuna.Study) -> None:
    """Fail (and re-queue, through the storage's callback) trials whose heartbeat stopped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def requeue_lost(study: optuna.Study, max_retry: int) -> int:
    """Re-queue trials lost to a dead or interrupted worker that have no retry yet (the heartbeat
    check re-queues stale ones itself; an interrupted trial is failed at once and lands here)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials} | {
        n for t in trials for n in t.system_attrs.get("retry_history", [])
    }
    queued = 0
    for t in trials:
        if (
            is_lost(t)
            and t.number not in retried
            and len(t.system_attrs.get("retry_history", [])) < max_retry
        ):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, t)
            queued += 1
    return queued


def fingerprint(
    spec: ModelSpec, config: ExperimentConfig, metric: str, data_fingerprint: str, seed: int
) -> str:
    """What a study's trials depend on; a study is only resumed under the same fingerprint."""
    payload = {
        "type": spec.type,
        "params": spec.params,
        "search": {k: v.model_dump(mode="json") for k, v in spec.search.items()},
        "metric": metric,
        "data": data_fingerprint,
        "split": config.split.model_dump(mode="json"),
        "evaluation": config.evaluation.mode,
        "training": config.training.model_dump(mode="json"),
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_trials(
    study: optuna.Study,
    objective: Objective,
    tuning: TuningConfig,
    seed: int,
    progress: bool = False,
    label: str = "",
) -> bool:
    """Run trials until the study holds ``tuning.trials`` counted ones (or the wall-time budget
    ends: returns True then). Other workers' running trials count as theirs; when only they
    remain, wait for them (a dead worker's trial becomes stale, is re-queued, and is run here)."""
    deadline = None if tuning.timeout_minutes is None else time.monotonic() + 60 * tuning.timeout_minutes
    bar = tqdm(total=tuning.trials, desc=label or study.study_name, disable=not progress, unit="trial")
    try:
        while True:
            fail_stale(study)  # nothing to do without heartbeats
            trials = study.get_trials(deepcopy=False)
            done = counted(trials)
            bar.n = min(done, tuning.trials)
            bar.refresh()
            if done >= tuning.trials:
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return True
            running = sum(1 for t in trials if t.state == TrialState.RUNNING)
            waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
            if done + running >= tuning.trials and waiting == 0:
                time.sleep(POLL_SECONDS)
                continue
            study.sampler = make_sampler(tuning, seed, sum(1 for t in trials if not is_lost(t)))
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False)
    finally:
        bar.close()


def summarise(study: optuna.Study, spec: ModelSpec) -> StudyOutcome:
    """Counts, epochs and the best trial of a study, with the params to refit with."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished() and not is_lost(t)]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    cls = get_model_class(spec.type)
    out = StudyOutcome(
        label=spec.label,
        model_type=spec.type,
        tuned=True,
        study_name=study.study_name,
        default_params=dict(spec.params),
        counts={
            "complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "pruned": len(pruned),
            "failed": sum(t.state == TrialState.FAIL and not is_lost(t) for t in trials),
            "retried": sum("failed_trial" in t.system_attrs for t in trials),
        },
        epochs_trained=int(sum(t.user_attrs.get("epochs_run", 0) for t in finished)),
        epochs_in_pruned=int(sum(t.user_attrs.get("epochs_run", 0) for t in pruned)),
    )
    for t in pruned:
        planned = cls.Config.model_validate({**spec.params, **t.params}).model_dump()
        budget = planned.get("iterations", planned.get("epochs"))
        if budget is not None:
            out.epochs_not_run += max(0, int(budget) - int(t.user_attrs.get("epochs_run", 0)))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = max(complete, key=lambda t: (t.value, -t.number))
        out.best_value, out.best_trial = float(best.value), best.number
        out.best_epoch = best.user_attrs.get("best_epoch")
        out.best_params = pasteable_params(spec, best)
    return out


def start_from_defaults(study: optuna.Study, spec: ModelSpec, tuning: TuningConfig) -> None:
    """Queue the model's untuned params as the study's first trial (``tuning.start_from_defaults``)."""
    start = default_point(spec) if tuning.start_from_defaults else {}
    if start:
        study.enqueue_trial(start, user_attrs={"start": "default params"})


def default_point(spec: ModelSpec) -> dict[str, Any]:
    """The model's untuned params (its config defaults with the spec's fixed params) for each
    searched param, moved into the search space."""
    defaults = get_model_class(spec.type).Config.model_validate(spec.params).model_dump(mode="json")
    point = {k: dim.nearest(defaults.get(k)) for k, dim in spec.search.items()}
    return {k: v for k, v in point.items() if v is not None}


def pasteable_params(spec: ModelSpec, trial: FrozenTrial) -> dict[str, Any]:
    """The trial's params as an experiment would write them: the fixed params, the searched
    ones, and what fitting selected (the best epoch count of an iterative model)."""
    cls = get_model_class(spec.type)
    sampled = {**spec.params, **trial.params}
    full = cls.Config.model_validate(sampled).model_dump(mode="json")
    selected = trial.user_attrs.get("selected_params", full)
    changed = {k: v for k, v in selected.items() if k in full and v != full[k]}
    return {**sampled, **changed}


# ----------------------------------------------------------------------------- the session


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
        config = load_experiment(data=config.model_dump(mode="json"), overrides=overrides)
    say = echo or (lambda _msg: None)
    tuning = config.tuning
    metric = tuning.metric or config.evaluation.primary_metric
    seed = config.seeds[0]
    sampler_seed = seed if tuning.seed is None else tuning.seed
    specs = _selected(config, models)
    # trials are monitored (early stopping, pruning) on the metric they maximise
    trial_config = config.model_copy(
        update={"training": config.training.model_copy(update={"monitor_metric": metric})}
    )
    store = parse_storage(tuning.storage)
    storage = open_storage(store, tuning.heartbeat_seconds, tuning.grace, tuning.max_retry)
    prefix = tuning.study_prefix or config.name

    dataset = load_data(config)
    prepared = prepare_split(dataset, config, seed)
    say(
        f"\nData: {dataset.name} (fingerprint {dataset.fingerprint[:12]}); "
        f"split {config.split.name}, seed {seed}"
    )
    budget = f"{tuning.trials} trials per model" + (
        f", at most {tuning.timeout_minutes:g} min per model (wall time: not reproducible)"
        if tuning.timeout_minutes
        else ""
    )
    say(f"Tuning on validation {metric}: {budget}; storage {store.display}; studies '{prefix}/<model>'")

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar and tables say it
    try:
        logger = (
            _session_logger(config, storage, store, prefix, dataset, prepared, metric, sampler_seed)
            if track
            else None
        )
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
            outcomes.append(
                _tune_model(
                    spec,
                    storage,
                    store,
                    prefix,
                    trial_config,
                    prepared,
                    metric,
                    seed,
                    sampler_seed,
                    dataset.fingerprint,
                    logger,
                    progress,
                    keep_per_user,
                )
            )
        result = TuningResult(config, metric, outcomes, storage=store.display)
        say("\nStudies (validation):")
        say(result.table.drop(columns=["best params"]).to_markdown(index=False))
        if search_only or not tuning.final:
            if logger:
                _finish_session(logger, result, end=not search_only)
            return _attach(result, logger)
        say("\nFinal comparison: best params refit on train + validation, tested once per seed")
        result.final = run_final(config, outcomes, logger, progress=progress, echo=echo, dataset=dataset)
        result.comparison = _comparison(result)
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
    return result


def _session_logger(config, storage, store: StorageSpec, prefix, dataset, prepared, metric, sampler_seed):
    from personalize.recipe import protocol_text
    from personalize.tracking.tuning import TuningLogger

    marker, created = open_study(storage, prefix, config.tuning, sampler_seed)
    tuning = config.tuning
    params = {
        "tuning": tuning.model_dump(mode="json"),
        "storage": store.display,
        "metric": metric,
        "reproducible": tuning.timeout_minutes is None,
        "data": {"name": dataset.name, "fingerprint": dataset.fingerprint},
        "split": prepared.split.params,
        "seeds": config.seeds,
        "models": [m.label for m in config.models],
    }
    texts = {"config.yaml": config.to_yaml(), "protocol.md": protocol_text()}
    logger = TuningLogger(config, marker, created, params, texts)
    logger.session.set_tags(
        {
            "tuning.trials": tuning.trials,
            "tuning.budget": "wall time (not reproducible)" if tuning.timeout_minutes else "trials",
            "dataset_fingerprint": dataset.fingerprint,
            "split": config.split.name,
        }
    )
    return logger


def _tune_model(
    spec: ModelSpec,
    storage,
    store: StorageSpec,
    prefix: str,
    config: ExperimentConfig,
    prepared: PreparedSplit,
    metric: str,
    seed: int,
    sampler_seed: int,
    data_fingerprint: str,
    logger,
    progress: bool,
    keep_per_user: bool,
) -> StudyOutcome:
    tuning = config.tuning
    name = f"{prefix}/{spec.label}"
    study, created = open_study(storage, name, tuning, sampler_seed)
    stamp = fingerprint(spec, config, metric, data_fingerprint, seed)
    if created:
        start_from_defaults(study, spec, tuning)
        study.set_user_attr("fingerprint", stamp)
        study.set_user_attr("model_type", spec.type)
        study.set_user_attr("metric", metric)
        study.set_user_attr("search", {k: v.model_dump(mode="json") for k, v in spec.search.items()})
    else:
        known = _wait_for_attr(study, "fingerprint")
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
    if logger is not None:
        _close_dead(logger, study)

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
        spec, seed, prepared, config, metric, start_run if logger else None, keep_per_user=keep_per_user
    )
    t0 = time.perf_counter()
    timed_out = run_trials(study, objective, tuning, sampler_seed, progress=progress, label=spec.label)
    outcome = summarise(study, spec)
    outcome.seconds = time.perf_counter() - t0
    outcome.timed_out = timed_out
    outcome.per_user = objective.per_user
    outcome.study = study
    if logger is not None:
        _close_dead(logger, study)
        outcome.run_id = model_run.run_id
        _log_study(logger, model_run, study, outcome, metric, cls.iterative)
    return outcome


def _wait_for_attr(study: optuna.Study, key: str, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while key not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    return study.user_attrs.get(key)


def _close_dead(logger, study: optuna.Study) -> None:
    ids = [
        t.user_attrs["mlflow_run_id"]
        for t in study.get_trials(deepcopy=False)
        if is_lost(t) and "mlflow_run_id" in t.user_attrs
    ]
    logger.close_dead_trials(ids)


def _log_study(
    logger, handle, study: optuna.Study, outcome: StudyOutcome, metric: str, iterative: bool
) -> None:
    from personalize.tracking.store import metric_key
    from personalize.tuning import plots

    title = f"{outcome.label}: validation {metric}"
    figures = {
        "plots/optimization_history.png": plots.optimization_history(study, title),
        "plots/param_importances.png": plots.param_importances(
            study, f"{outcome.label}: parameter importances"
        ),
    }
    if iterative:
        figures["plots/intermediate_values.png"] = plots.intermediate_values(
            study, f"{outcome.label}: {metric} per epoch"
        )
    trials = study.trials_dataframe(attrs=("number", "value", "params", "state", "user_attrs", "duration"))
    trials = trials.drop(
        columns=[c for c in trials.columns if c.endswith("selected_params")], errors="ignore"
    )
    if "duration" in trials:
        trials["duration"] = trials["duration"].dt.total_seconds()
    metrics = {
        f"best_valid_{metric_key(metric)}": outcome.best_value,
        "best_trial": outcome.best_trial,
        "best_epoch": outcome.best_epoch,
        "trials_complete": outcome.counts["complete"],
        "trials_pruned": outcome.counts["pruned"],
        "trials_failed": outcome.counts["failed"],
        "trials_retried": outcome.counts["retried"],
        "epochs_trained": outcome.epochs_trained,
        "epochs_in_pruned_trials": outcome.epochs_in_pruned,
        "epoch_budget_not_run": outcome.epochs_not_run,
        "study_seconds": outcome.seconds,
    }
    text = (
        f"# {outcome.label}: best of {outcome.counts['complete']} complete trials "
        f"in study {outcome.study_name}\n"
        f"# valid {metric} = {outcome.best_value} (trial {outcome.best_trial}); paste under models:\n"
        + yaml.safe_dump([outcome.spec()], sort_keys=False, default_flow_style=None)
    )
    logger.finish_model(
        handle,
        {k: v for k, v in metrics.items() if v is not None},
        {k: json.dumps(v) for k, v in outcome.best_params.items()},
        figures,
        {"trials.csv": trials},
        {"best_params.yaml": text},
    )


# ------------------------------------------------------------------------ final comparison


def final_config(
    config: ExperimentConfig, studies: list[StudyOutcome], compare_defaults: bool
) -> ExperimentConfig:
    """The experiment with tuned params (and, optionally, each tuned model's default beside it).

    Under a random split (a new split per seed) only the tuning seed's split is kept: the other
    seeds' test rows overlap the validation rows the params were chosen on.
    """
    by_label = {s.label: s for s in studies}
    models: list[dict[str, Any]] = []
    random_split = config.split.stochastic
    for spec in config.models:
        study = by_label.get(spec.label)
        if study is None:
            continue
        base = {"type": spec.type, "seeds": None if random_split else spec.seeds, "grid": spec.grid}
        if study.tuned and study.best_value is not None:
            models.append({**base, "name": spec.label, "params": study.best_params, "grid": {}})
            if compare_defaults:
                models.append(
                    {**base, "name": spec.label + DEFAULT_SUFFIX, "params": spec.params, "grid": {}}
                )
        else:
            models.append({**base, "name": spec.label, "params": spec.params})
    data = config.model_dump(mode="json")
    if random_split:
        data["seeds"] = [config.seeds[0]]
    data.update(
        name=f"{config.name} final",
        description=f"Final comparison of tuning session {config.name}: tuned params, tested per seed.",
        models=models,
        tracking={**data["tracking"], "experiment": config.tracking.experiment or config.name},
        tuning=TuningConfig().model_dump(mode="json"),
    )
    return load_experiment(data=data)


def run_final(
    config: ExperimentConfig,
    studies: list[StudyOutcome],
    logger=None,
    progress: bool = True,
    echo: Echo | None = print,
    dataset: Dataset | None = None,
) -> ExperimentResult:
    """Refit with the best params on train + validation and test once per seed (the recipe);
    ``dataset``: the session's ingested data, reused."""
    from personalize.recipe import run_experiment

    final = final_config(config, studies, config.tuning.compare_defaults)
    if config.split.stochastic and len(config.seeds) > 1 and echo:
        echo(
            f"(random split: tested on the split of seed {config.seeds[0]} only, whose validation part "
            "chose the params; other seeds' test rows overlap it. Run one session per split seed.)"
        )
    return run_experiment(
        final,
        track=logger is not None,
        progress=progress,
        echo=echo,
        parent_run=logger.session if logger is not None else None,
        dataset=dataset,
    )


def _comparison(result: TuningResult) -> pd.DataFrame | None:
    from personalize.tuning.compare import tuned_vs_default

    if result.final is None or not result.config.tuning.compare_defaults:
        return None
    pairs = [
        (s.label, s.label + DEFAULT_SUFFIX) for s in result.studies if s.tuned and s.best_value is not None
    ]
    return tuned_vs_default(result.final.outcomes, pairs, result.config.evaluation)


def format_comparison(table: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    out = table.copy()
    for col in out.columns:
        if col.startswith("p"):
            out[col] = [f"{v:.2g}" for v in out[col]]
        elif pd.api.types.is_float_dtype(out[col]):
            out[col] = [f"{v:.{digits}f}" for v in out[col]]
    return out


def _finish_session(logger, result: TuningResult, end: bool = True) -> None:
    from personalize.evaluation.leaderboard import format_leaderboard
    from personalize.tracking.store import metric_key

    tables = {"studies.csv": result.table}
    if result.comparison is not None:
        tables["tuned_vs_default.csv"] = result.comparison
        tables["tuned_vs_default.md"] = format_comparison(result.comparison)
    metrics: dict[str, float] = {}
    params: dict[str, Any] = {}
    if result.final is not None:
        tables["leaderboard.md"] = format_leaderboard(result.final.leaderboard)
        tables["leaderboard.csv"] = result.final.leaderboard
        champion = result.champion()
        primary = result.config.evaluation.primary_metric
        params = {"champion": champion["label"], "final_run_id": result.final.parent_run_id}
        metrics[f"best_test_{metric_key(primary)}"] = champion[f"test_{primary}"]
    logger.finish(metrics, params, tables, {"best_params.yaml": result.best_params_yaml()}, end=end)
