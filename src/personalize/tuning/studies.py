"""Studies that persist and resume: one Optuna study per model, its budget counted in finished
trials, trials of dead workers detected (heartbeat) and retried with their params, the sampler
re-seeded per trial so that a resumed study draws what an uninterrupted one would, and a
fingerprint that refuses to resume a study created for another setup."""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from personalize.config import ExperimentConfig, ModelSpec, TuningConfig
from personalize.models.registry import get_model_class
from personalize.tuning.results import StudyOutcome

POLL_SECONDS = 0.5


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
    objective: Callable[[optuna.Trial], float],
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
        out.best_is_default = best.user_attrs.get("start") == "default params"
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


def wait_for_attr(study: optuna.Study, key: str, seconds: float = 30.0):
    """A study's user attribute, waiting for the worker that creates the study to set it."""
    deadline = time.monotonic() + seconds
    while key not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    return study.user_attrs.get(key)


def lost_run_ids(study: optuna.Study) -> list[str]:
    """MLflow runs of trials whose worker died."""
    return [
        t.user_attrs["mlflow_run_id"]
        for t in study.get_trials(deepcopy=False)
        if is_lost(t) and "mlflow_run_id" in t.user_attrs
    ]
