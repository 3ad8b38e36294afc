"""The one recipe: load -> validate -> split -> fit each model -> evaluate -> log (-> export).

``run_experiment(config)`` reads like the story it tells. The CLI, the tuning session and the
notebooks call it or its steps (:mod:`personalize.recipe.steps`); nothing here is implemented
twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from personalize.config import EvaluationConfig, ExperimentConfig
from personalize.core.errors import ConfigError
from personalize.core.metrics import MetricName
from personalize.data.hygiene import audit_dataset
from personalize.data.ingest import Dataset
from personalize.evaluation.breakdown import (
    format_routing,
    format_segment_table,
    routing_comparison,
    segment_table,
)
from personalize.evaluation.leaderboard import ModelOutcome, format_leaderboard, leaderboard, long_table
from personalize.evaluation.privacy_curve import curve_table, format_curve
from personalize.models.registry import get_model_class
from personalize.recipe.curve import curve_parts
from personalize.recipe.export import export_after_run
from personalize.recipe.loading import load_experiment, reload
from personalize.recipe.result import CurveResult, ExperimentResult
from personalize.recipe.steps import fit_and_evaluate, load_data, model_seeds, prepare_split, split_seeds
from personalize.tracking import runs as tlog
from personalize.tracking.curve import CurveLogger

Echo = Callable[[str], None]


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
) -> ExperimentResult | CurveResult:
    """Run an experiment end to end and log it to MLflow (``track=False``: no logging). An
    experiment with a ``privacy_curve`` section runs the curve (:func:`run_privacy_curve`).

    ``parent_run`` (a :class:`~personalize.tracking.RunHandle`) nests the experiment's run under
    another one, e.g. a tuning session's final comparison; ``dataset`` is the ingested
    ``config.data`` when the caller has it already (it is not ingested again).
    """
    if not isinstance(config, ExperimentConfig):
        config = load_experiment(config, overrides)
    elif overrides:
        config = reload(config, overrides)
    if config.privacy_curve is not None:
        return run_privacy_curve(config, track=track, progress=progress, echo=echo, dataset=dataset)
    return _run_one(config, track, progress, echo, parent_run, dataset)


def _run_one(
    config: ExperimentConfig,
    track: bool,
    progress: bool,
    echo: Echo | None,
    parent_run,
    dataset: Dataset | None,
) -> ExperimentResult:
    say = echo or (lambda _msg: None)
    dataset = dataset or load_data(config)
    say(f"\nData: {dataset.name} (fingerprint {dataset.fingerprint[:12]})")
    say(dataset.report.summary().to_markdown(index=False))
    say("\nID consistency across tables and sources:")
    say(dataset.report.ids.summary().to_markdown(index=False))
    if dataset.events is not None:
        events = dataset.events.describe()
        weights, relevant = events["event_weights"], events["relevant_events"]
        say(f"Event weights {weights}; relevant: {relevant}; seen: {events['seen']}")
    audit = audit_dataset(dataset, config.audit)
    say(f"\nData hygiene audit: {audit.verdict()}")
    say(audit.summary().to_markdown(index=False))

    prepared = {seed: prepare_split(dataset, config, seed) for seed in split_seeds(config)}
    first = next(iter(prepared.values()))
    say(f"\nSplit: {config.split.name} {first.split.params} -> {first.split.summary()}")

    logger = tlog.ExperimentLogger(config, dataset, prepared, parent=parent_run) if track else None
    if logger:
        logger.log_audit(audit)
    outcomes: list[ModelOutcome] = []
    jobs = [(spec, seed) for spec in config.models for seed in model_seeds(config, spec)]
    bar = tqdm(total=len(jobs), desc="models", disable=not progress, unit="fit")
    try:
        audit.raise_if_failed()  # before any model is fitted (a tracked run ends FAILED)
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
        _by_segment(result, first.segmentation)
        if logger:
            logger.finish(result)
    except BaseException:
        bar.close()
        if logger:
            logger.fail()
        raise

    say("\nLeaderboard (test, mean [95% bootstrap interval over users]):")
    say(format_leaderboard(_display_columns(table, config.evaluation)).to_markdown(index=False))
    if result.by_segment is not None:
        say("\nBy segment (test; p vs best: the leaderboard's best model, Holm across segments):")
        say(format_segment_table(result.by_segment).to_markdown(index=False))
    if result.routing is not None:
        say("\nThe routed hybrid against the best single model (test):")
        say(format_routing(result.routing).to_markdown(index=False))
    if logger:
        say(f"\nMLflow UI:  {result.ui_command}")
        say(f"This run:   {result.run_url()}")
    if config.export.enabled:
        export_after_run(result, tracked=logger is not None, progress=progress, echo=echo)
    return result


def run_privacy_curve(
    config: ExperimentConfig,
    *,
    track: bool = True,
    progress: bool = True,
    echo: Echo | None = print,
    dataset: Dataset | None = None,
) -> CurveResult:
    """The privacy-utility curve (``privacy_curve:``, :mod:`personalize.recipe.curve`): each
    unit's models run as one experiment (nested under the curve's MLflow run), then the curve
    table with the membership attack beside its ceiling, and its figure."""
    say = echo or (lambda _msg: None)
    if not config.evaluation.membership_attack:
        config = config.model_copy(
            update={"evaluation": config.evaluation.model_copy(update={"membership_attack": True})}
        )
    parts = curve_parts(config)
    dataset = dataset or load_data(config)
    logger = CurveLogger(config) if track else None
    results: list[ExperimentResult] = []
    try:
        for part in parts:
            say(f"\n=== {part.unit}-level models on split {part.config.split.name} ===")
            results.append(
                _run_one(part.config, track, progress, echo, logger.run if logger else None, dataset)
            )
        metric = config.evaluation.primary_metric
        entries = []
        for part, result in zip(parts, results):
            board = result.leaderboard.set_index("model")
            for outcome in result.outcomes:
                entries.append(
                    (part.points[outcome.label], outcome, board.loc[outcome.label], part.config.split.name)
                )
        table = curve_table(entries, metric)
        if logger:
            logger.finish(table, metric, dataset.fingerprint)
    except BaseException:
        if logger:
            logger.fail()
        raise
    say("\nPrivacy-utility curve (test; attack AUC beside the ceiling the guarantee sets):")
    say(format_curve(table, metric).to_markdown(index=False))
    curve = CurveResult(config, results, table, metric)
    if logger:
        curve.experiment_id = logger.tracker.experiment_id
        curve.run_id = logger.run.run_id
        curve.tracking_uri = logger.tracker.uri
    return curve


def _by_segment(result: ExperimentResult, segmentation) -> None:
    """The per-segment leaderboard (evaluation.by: segment) and, with a routed hybrid, its
    comparison with the best single model."""
    config = result.config
    if config.evaluation.by != "segment":
        return
    if segmentation is None:
        raise ConfigError("evaluation.by: segment needs segments.enabled: true")
    names = dict(segmentation.names)
    result.segment_names = names
    result.by_segment = segment_table(result.outcomes, config.evaluation, seed=config.seeds[0], names=names)
    routed = [o.label for o in result.outcomes if o.model_type == "routed"]
    if routed and len(result.outcomes) > 1:
        result.routing = routing_comparison(
            result.outcomes, routed[0], config.evaluation, seed=config.seeds[0], names=names
        )


def _display_columns(table: pd.DataFrame, ev: EvaluationConfig) -> pd.DataFrame:
    primary = ev.primary
    keep = ["model", "family", "seeds"]
    for metric in ("ndcg", "map", "map_r", "recall", "precision", "mrr", "coverage"):
        name = str(MetricName(metric, primary.k))
        if name in table.columns:
            keep += [c for c in (name, f"{name} low", f"{name} high") if c in table.columns]
    extra = [c for c in table.columns if c.endswith(" warm") or c.endswith(" cold") or c.endswith(" users")]
    keep += ["std over seeds", "p vs best", *extra, "fit s", "eval s"]
    return table[[c for c in keep if c in table.columns]]
