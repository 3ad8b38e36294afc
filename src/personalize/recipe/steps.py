"""The recipe's steps, each usable on its own (the tuning objective and notebooks call them):
load the data, split it, fit one model with one seed and evaluate it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from personalize.config import ExperimentConfig, ModelSpec
from personalize.core import columns as C
from personalize.core.errors import ConfigError
from personalize.data.ingest import Dataset, ingest
from personalize.data.matrix import IdIndex, InteractionData
from personalize.data.splits import Split, make_split
from personalize.evaluation.evaluator import (
    EvalTarget,
    EvaluationResult,
    Evaluator,
    genre_matrix,
    make_target,
)
from personalize.evaluation.leaderboard import SeedOutcome
from personalize.evaluation.membership import AttackResult, event_attack, user_attack
from personalize.evaluation.monitor import ValidationMonitor
from personalize.models.base import Recommender
from personalize.models.registry import create_model, get_model_class
from personalize.segments.pipeline import Segmentation, fit_segmentation


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
    segmentation: Segmentation | None = None  # segments.enabled: fitted on this split's train part
    #: the membership attack's non-members: on a fold-in split the test users' full histories
    #: (input and target, training weights; users x items), otherwise the test interactions'
    #: (user index, item index) pairs; None without evaluation.membership_attack
    nonmembers: sp.csr_matrix | tuple[np.ndarray, np.ndarray] | None = None


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
    """Split the data with ``seed`` and index it for models and the evaluator.

    user_holdout: models are fitted on train (validation) and on train plus every row of the
    validation users (the test model, :meth:`Split.train_valid`); the validation and test
    users are scored through fold-in of their input part (:attr:`EvalTarget.foldin`)."""
    split = make_split(dataset.interactions, config.split, seed, dataset.users, dataset.items)
    index = IdIndex.build(split.users, split.items, split.train, split.valid, split.test)
    if split.folds_in and config.segments.enabled:
        raise ConfigError(
            "segments.enabled does not apply to split user_holdout: held-out users have no "
            "training history to be segmented from"
        )
    train_valid = split.train_valid()
    events = dataset.events
    train = InteractionData.build(split.train, index, split.users, split.items, events)
    tv = InteractionData.build(train_valid, index, split.users, split.items, events)
    ev = config.evaluation
    segmentation, valid_segments, test_segments = None, None, None
    if config.segments.enabled:  # segments from the data each model is fitted on (PROTOCOL.md)
        segmentation = fit_segmentation(train, config.segments, dataset.fingerprint)
        valid_segments, test_segments = segmentation.labels(train), segmentation.labels(tv)
        train = InteractionData.build(
            split.train, index, segmentation.users_table(split.users, train), split.items, events
        )
        tv = InteractionData.build(train_valid, index, _with(split.users, test_segments), split.items, events)
    nonmembers = None
    if ev.membership_attack:
        nonmembers = _nonmembers(split, index, events)
    return PreparedSplit(
        nonmembers=nonmembers,
        split=split,
        index=index,
        train=train,
        train_valid=tv,
        valid_target=make_target(
            "valid",
            split.valid,
            split.train,
            index,
            ev.min_rating,
            ev.gains,
            events,
            valid_segments,
            inputs=split.valid_input,
        ),
        test_target=make_target(
            "test",
            split.test,
            train_valid,
            index,
            ev.min_rating,
            ev.gains,
            events,
            test_segments,
            inputs=split.test_input,
        ),
        genres=genre_matrix(train.items),
        segmentation=segmentation,
    )


def _nonmembers(split: Split, index: IdIndex, events) -> sp.csr_matrix | tuple[np.ndarray, np.ndarray]:
    """Non-members of the membership attack (see :attr:`PreparedSplit.nonmembers`)."""
    if split.folds_in:
        rows = pd.concat([split.test_input, split.test], ignore_index=True)
        empty = pd.DataFrame(columns=[C.USER])
        data = InteractionData.build(rows, index, empty, pd.DataFrame({C.ITEM: index.items}), events)
        users = np.unique(index.user_index(split.test[C.USER].to_numpy()))
        return data.matrix[users]
    return index.user_index(split.test[C.USER].to_numpy()), index.item_index(split.test[C.ITEM].to_numpy())


def membership_attack(
    model: Recommender,
    fitted_on: InteractionData,
    prepared: PreparedSplit,
    seed: int,
    config: ExperimentConfig,
) -> AttackResult:
    """The membership attack (:mod:`personalize.evaluation.membership`) on ``model``, fitted on
    ``fitted_on``: user-level on a fold-in split (members: every user with rows in ``fitted_on``),
    event-level otherwise (members: the pairs of ``fitted_on``; non-members: test pairs not also
    in it, e.g. a repeated interaction)."""
    ev = config.evaluation
    matrix = fitted_on.matrix
    if prepared.split.folds_in:
        return user_attack(model, matrix, prepared.nonmembers, ev.bootstrap_resamples, ev.confidence, seed)
    users, items = prepared.nonmembers
    fresh = np.asarray(matrix[users, items]).ravel() == 0
    member = matrix.tocoo()
    return event_attack(
        model,
        (member.row, member.col),
        (users[fresh], items[fresh]),
        resamples=ev.bootstrap_resamples,
        confidence=ev.confidence,
        seed=seed,
    )


def _with(users: pd.DataFrame, segments: pd.Series) -> pd.DataFrame:
    """The users table with the ``segment`` column of ``segments`` (user_id -> segment)."""
    return users.assign(**{C.SEGMENT: users[C.USER].map(segments).fillna(-1).astype("int64").to_numpy()})


def validation_target(spec: ModelSpec, prepared: PreparedSplit) -> EvalTarget:
    """What chooses the epoch and the grid point of ``spec``: the validation target, unmasked
    for an event-level private model (``dp_unit`` event, epsilon set). Its validation users are
    its training users, so excluding their training items would make the choice read the private
    training events; unmasked, the choice reads only the private model and the validation
    events (not covered by the guarantee, as its ``not_covered`` says)."""
    cls = get_model_class(spec.type)
    private = any(p.get("epsilon") is not None for p in spec.combinations())
    if cls.dp_unit == "event" and private and not prepared.split.folds_in:
        return prepared.valid_target.unmasked()
    return prepared.valid_target


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

    On a fold-in split (user_holdout) a model that cannot fold in is refused before fitting
    (:meth:`Recommender.fold_in_refusal`).
    """
    evaluator = Evaluator(config.evaluation, prepared.genres)
    primary = config.evaluation.primary_metric
    combinations = spec.combinations()
    if prepared.split.folds_in:
        for params in combinations:
            reason = get_model_class(spec.type).fold_in_refusal(params)
            if reason is not None:
                raise ConfigError(
                    f"model {spec.type!r} cannot be evaluated on split {prepared.split.name!r}, whose "
                    f"validation and test users are unseen in training and scored through fold-in: {reason}"
                )
    valid_target = validation_target(spec, prepared)
    best: tuple[float, Recommender, EvaluationResult, ValidationMonitor | None] | None = None
    grid_rows: list[dict] = []
    t0 = time.perf_counter()
    for params in combinations:
        model = create_model(spec.type, params, seed)
        monitor = None
        if model.iterative or model.uses_validation:
            monitor = ValidationMonitor(
                valid_target,
                metric=config.training.monitor_metric,
                every=config.training.eval_every,
                patience=config.training.early_stopping_patience,
                min_epochs=config.training.early_stopping_min_epochs,
                mode=config.evaluation.mode,
                on_epoch=on_epoch if len(combinations) == 1 else None,
                on_report=on_report,
            )
        model.fit(prepared.train, monitor)
        valid = evaluator.evaluate(model, valid_target)
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
    attack = None
    if evaluate_test and config.evaluation.membership_attack:
        fitted_on = prepared.train_valid if final is not model else prepared.train
        attack = membership_attack(final, fitted_on, prepared, seed, config)
    dp = getattr(final, "dp_", None)
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
        privacy=dp.params() if dp is not None else {},
        epsilon_history=[float(e) for e in getattr(final, "epsilon_history_", [])],
        attack=attack,
    )
    return outcome, final
