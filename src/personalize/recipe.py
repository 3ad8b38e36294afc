"""The one recipe: load -> validate -> split -> fit each model -> evaluate -> log.

``run_experiment(config)`` reads like the story it tells. The CLI, the tuning objective and the
notebooks call it or its steps (:func:`load_data`, :func:`prepare_split`, :func:`fit_and_evaluate`);
nothing here is implemented twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from personalize.config import ExperimentConfig, ModelSpec, load_experiment
from personalize.data.ingest import Dataset, ingest
from personalize.data.matrix import IdIndex, InteractionData
from personalize.evaluation.evaluator import (
    EvalTarget,
    EvaluationConfig,
    EvaluationResult,
    Evaluator,
    genre_matrix,
    make_target,
)
from personalize.evaluation.leaderboard import (
    ModelOutcome,
    SeedOutcome,
    format_leaderboard,
    leaderboard,
    long_table,
)
from personalize.evaluation.monitor import ValidationMonitor
from personalize.evaluation.splits import Split, make_split
from personalize.models.base import Recommender
from personalize.models.registry import create_model, get_model_class

Echo = Callable[[str], None]


@dataclass
class PreparedSplit:
    """A split with everything models and the evaluator need, built once and shared."""

    split: Split
    index: IdIndex
    train: InteractionData
    train_valid: InteractionData
    valid_target: EvalTarget
    test_target: EvalTarget
    genres: sp.csr_matrix | None


@dataclass
class ExperimentResult:
    config: ExperimentConfig
    dataset: Dataset
    splits: dict[int, Split]
    outcomes: list[ModelOutcome]
    leaderboard: pd.DataFrame
    metrics: pd.DataFrame  # every metric at every K (long form), test part
    experiment_id: str | None = None
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    ui_command: str | None = None
    extras: dict = field(default_factory=dict)

    @property
    def best(self) -> ModelOutcome:
        name = self.leaderboard.iloc[0]["model"]
        return next(o for o in self.outcomes if o.label == name)

    def run_url(self, port: int = 5000) -> str | None:
        from personalize.tracking.store import run_url

        if self.experiment_id is None:
            return None
        return run_url(self.experiment_id, self.parent_run_id, port)


# ------------------------------------------------------------------------------ the steps


def load_data(config: ExperimentConfig) -> Dataset:
    """Ingest and validate the experiment's data."""
    return ingest(config.data)


def split_seeds(config: ExperimentConfig) -> list[int]:
    """Seeds for which a split is made: every seed for a random split, else the first."""
    return list(config.seeds) if config.split.stochastic else [config.seeds[0]]


def model_seeds(config: ExperimentConfig, spec: ModelSpec) -> list[int]:
    seeds = spec.seeds or config.seeds
    if get_model_class(spec.type).is_stochastic(spec.params) or config.split.stochastic:
        return list(seeds)
    return [seeds[0]]


def prepare_split(dataset: Dataset, config: ExperimentConfig, seed: int) -> PreparedSplit:
    """Split the data with ``seed`` and index it for models and the evaluator."""
    split = make_split(dataset.interactions, config.split, seed, dataset.users, dataset.items)
    index = IdIndex.build(split.users, split.items, split.train, split.valid, split.test)
    train_valid = split.train_valid()
    train = InteractionData.build(split.train, index, split.users, split.items)
    ev = config.evaluation
    return PreparedSplit(
        split=split,
        index=index,
        train=train,
        train_valid=InteractionData.build(train_valid, index, split.users, split.items),
        valid_target=make_target("valid", split.valid, split.train, index, ev.min_rating, ev.gains),
        test_target=make_target("test", split.test, train_valid, index, ev.min_rating, ev.gains),
        genres=genre_matrix(train.items),
    )


def fit_and_evaluate(
    spec: ModelSpec,
    seed: int,
    prepared: PreparedSplit,
    config: ExperimentConfig,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_report: Callable[[int, float], None] | None = None,
    evaluate_test: bool = True,
) -> tuple[SeedOutcome, Recommender]:
    """Fit one model with one seed on train, evaluate on validation, refit on train +
    validation (if configured) with the selected settings, and evaluate on test.

    Validation monitors iterative models (learning curve, best epoch, early stopping), lets
    ``uses_validation`` models select their settings, and picks the best point of the spec's
    grid (by the primary metric). Returns the outcome and the model evaluated on test.
    """
    evaluator = Evaluator(config.evaluation, prepared.genres)
    primary = config.evaluation.primary_metric
    combinations = spec.combinations()
    best: tuple[float, Recommender, EvaluationResult, ValidationMonitor | None] | None = None
    grid_rows: list[dict] = []
    t0 = time.perf_counter()
    for params in combinations:
        model = create_model(spec.type, params, seed)
        monitor = None
        if model.iterative or model.uses_validation:
            monitor = ValidationMonitor(
                prepared.valid_target,
                metric=config.training.monitor_metric,
                every=config.training.eval_every,
                patience=config.training.early_stopping_patience,
                min_epochs=config.training.early_stopping_min_epochs,
                mode=config.evaluation.mode,
                on_epoch=on_epoch if len(combinations) == 1 else None,
                on_report=on_report,
            )
        model.fit(prepared.train, monitor)
        valid = evaluator.evaluate(model, prepared.valid_target)
        value = valid.summary[primary]
        if spec.grid:
            point = {k: params[k] for k in spec.grid}
            grid_rows.append({**point, f"valid_{primary}": value, "best_epoch": model.best_epoch_})
        if best is None or value > best[0]:
            best = (value, model, valid, monitor)
    fit_seconds = time.perf_counter() - t0
    _, model, valid, monitor = best
    final, refit_seconds = model, 0.0
    selected = model.selected_config()
    if evaluate_test and config.training.refit:
        t0 = time.perf_counter()
        final = create_model(spec.type, selected.model_dump(), seed).fit(prepared.train_valid)
        refit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    test = evaluator.evaluate(final, prepared.test_target) if evaluate_test else valid
    eval_seconds = time.perf_counter() - t0
    outcome = SeedOutcome(
        seed=seed,
        valid=valid,
        test=test,
        fit_seconds=fit_seconds,
        refit_seconds=refit_seconds,
        eval_seconds=eval_seconds,
        best_epoch=model.best_epoch_,
        selected_params=selected.model_dump(mode="json"),
        history=list(monitor.history) if monitor else [],
        grid=grid_rows,
    )
    return outcome, final


def protocol_text() -> str:
    """The evaluation protocol as shipped with the package (logged with every run)."""
    return resources.files("personalize.evaluation").joinpath("PROTOCOL.md").read_text()


# ----------------------------------------------------------------------------- the recipe


def run_experiment(
    config: ExperimentConfig | str | Path,
    overrides: list[str] | None = None,
    *,
    track: bool = True,
    progress: bool = True,
    echo: Echo | None = print,
    parent_run=None,
    dataset: Dataset | None = None,
) -> ExperimentResult:
    """Run an experiment end to end and log it to MLflow (``track=False``: no logging).

    ``parent_run`` (a :class:`~personalize.tracking.RunHandle`) nests the experiment's run under
    another one, e.g. a tuning session's final comparison; ``dataset`` is the ingested
    ``config.data`` when the caller has it already (it is not ingested again).
    """
    if not isinstance(config, ExperimentConfig):
        config = load_experiment(config, overrides)
    elif overrides:
        config = load_experiment(data=config.model_dump(mode="json"), overrides=overrides)
    say = echo or (lambda _msg: None)
    from personalize.tracking import runs as tlog

    dataset = dataset or load_data(config)
    say(f"\nData: {dataset.name} (fingerprint {dataset.fingerprint[:12]})")
    say(dataset.report.summary().to_markdown(index=False))

    prepared = {seed: prepare_split(dataset, config, seed) for seed in split_seeds(config)}
    first = next(iter(prepared.values()))
    say(f"\nSplit: {config.split.name} {first.split.params} -> {first.split.summary()}")

    logger = tlog.ExperimentLogger(config, dataset, prepared, parent=parent_run) if track else None
    outcomes: list[ModelOutcome] = []
    jobs = [(spec, seed) for spec in config.models for seed in model_seeds(config, spec)]
    bar = tqdm(total=len(jobs), desc="models", disable=not progress, unit="fit")
    try:
        for spec in config.models:
            cls = get_model_class(spec.type)
            outcome = ModelOutcome(spec.label, spec.type, cls.family, spec.params)
            model_run = logger.start_model(spec, cls) if logger else None
            for seed in model_seeds(config, spec):
                bar.set_postfix_str(f"{spec.label} seed={seed}")
                ready = prepared.get(seed, first)
                seed_run = logger.start_seed(model_run, spec, seed) if logger else None
                try:
                    result, _ = fit_and_evaluate(
                        spec,
                        seed,
                        ready,
                        config,
                        on_epoch=seed_run.epoch_callback() if seed_run else None,
                    )
                except BaseException:
                    if seed_run:
                        seed_run.fail()
                    raise
                outcome.seeds.append(result)
                if seed_run:
                    seed_run.finish(result)
                bar.update(1)
            outcomes.append(outcome)
            if logger:
                logger.finish_model(model_run, outcome)
        bar.close()
        table = leaderboard(outcomes, config.evaluation, config.split.name, seed=config.seeds[0])
        metrics = long_table(outcomes, config.evaluation, seed=config.seeds[0])
        result = ExperimentResult(
            config, dataset, {s: p.split for s, p in prepared.items()}, outcomes, table, metrics
        )
        if logger:
            logger.finish(result)
    except BaseException:
        bar.close()
        if logger:
            logger.fail()
        raise

    say("\nLeaderboard (test, mean [95% bootstrap interval over users]):")
    say(format_leaderboard(_display_columns(table, config.evaluation)).to_markdown(index=False))
    if logger:
        say(f"\nMLflow UI:  {result.ui_command}")
        say(f"This run:   {result.run_url()}")
    if config.export.enabled:
        from personalize.serving.export import export_after_run

        export_after_run(result, tracked=logger is not None, progress=progress, echo=echo)
    return result


def _display_columns(table: pd.DataFrame, ev: EvaluationConfig) -> pd.DataFrame:
    k = int(ev.primary_metric.split("@")[1])
    keep = ["model", "family", "seeds"]
    for metric in ("ndcg", "map", "map_r", "recall", "precision", "mrr", "coverage"):
        name = f"{metric}@{k}"
        if name in table.columns:
            keep += [c for c in (name, f"{name} low", f"{name} high") if c in table.columns]
    extra = [c for c in table.columns if c.endswith(" warm") or c.endswith(" cold") or c.endswith(" users")]
    keep += ["std over seeds", "p vs best", *extra, "fit s", "eval s"]
    return table[[c for c in keep if c in table.columns]]
