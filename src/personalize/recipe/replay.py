"""``personalize replay``: the prequential replay of an experiment's models (PROTOCOL.md,
"Prequential replay"; the rules are :mod:`personalize.evaluation.replay`).

1. Load and validate the data (the experiment's ``data:`` block); the split block is not used:
   the replay makes its own global cut (``replay.test_fraction``, ``replay.valid_fraction``).
2. For each (model, strategy) of ``replay:``, choose the settings (the model's ``grid``, the
   retrain period, the popularity half-life) on the validation period.
3. Replay the test period with the chosen settings; summarise per event and per user, warm and
   cold, with bootstrap intervals over users and Holm-adjusted paired tests against online
   popularity; log it all to MLflow (a run of kind ``replay``).

A stochastic model is fitted with the experiment's first seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from personalize.config import ExperimentConfig
from personalize.core.errors import ConfigError
from personalize.data.ingest import Dataset
from personalize.evaluation.replay import ReplayStudy, Stream, replay_study
from personalize.recipe.loading import load_experiment, reload
from personalize.recipe.steps import load_data
from personalize.tracking.replay import log_replay

Echo = Callable[[str], None]


@dataclass
class ReplayResult:
    """What ``personalize replay`` gives back."""

    config: ExperimentConfig
    dataset: Dataset
    study: ReplayStudy
    run_id: str | None
    seconds: float


def run_replay(
    config: ExperimentConfig | str | Path,
    overrides: list[str] | None = None,
    *,
    track: bool = True,
    progress: bool = True,
    echo: Echo | None = print,
    dataset: Dataset | None = None,
) -> ReplayResult:
    """The replay study of ``config`` (module doc); ``track=False``: nothing is logged."""
    if not isinstance(config, ExperimentConfig):
        config = load_experiment(config, overrides)
    elif overrides:
        config = reload(config, overrides)
    say = echo or (lambda _msg: None)
    rc = config.replay
    specs = list(config.models)
    if rc.models is not None:
        labels = [s.label for s in specs]
        unknown = sorted(set(rc.models) - set(labels))
        if unknown:
            raise ConfigError(
                f"replay.models names {unknown}, which are not models of the experiment {labels}"
            )
        specs = [s for s in specs if s.label in rc.models]
    t0 = time.perf_counter()
    dataset = dataset or load_data(config)
    stream = Stream.build(
        dataset.interactions, dataset.users, dataset.items, dataset.events, config.evaluation.min_rating
    )
    valid_start, test_start = stream.periods(rc.valid_fraction, rc.test_fraction)
    say(
        f"\nReplay of {dataset.name}: fitted on rows before {test_start:,} "
        f"({stream.rows['timestamp'].iloc[test_start]}), validation rows {valid_start:,}-{test_start - 1:,}, "
        f"test rows {test_start:,}-{len(stream) - 1:,}; K = {rc.k}; strategies {', '.join(rc.strategies)}"
    )
    ev = config.evaluation
    study = replay_study(
        stream,
        specs,
        rc,
        seed=config.seeds[0],
        resamples=ev.bootstrap_resamples,
        confidence=ev.confidence,
        test=ev.paired_test,
        progress=progress,
    )
    seconds = time.perf_counter() - t0
    chosen = study.selection[study.selection["chosen"]]
    say("\nChosen on the validation period (mean over users of NDCG@K per user):")
    say(chosen[["model", "strategy", "setting", "valid_ndcg_user"]].to_markdown(index=False))
    say(
        f"\nTest period (mean [{ev.confidence:.0%} bootstrap interval over users]; p_holm: paired "
        f"{ev.paired_test}-test of per-user means against online popularity, Holm across rows):"
    )
    say(study.table().to_markdown(index=False))
    phases = ", ".join(f"{phase} {s:.1f} s" for phase, s in study.seconds.items())
    say(f"\nWall time {seconds:.1f} s ({phases})")
    run_id = None
    if track:
        data = {"name": dataset.name, "fingerprint": dataset.fingerprint, "rows": len(stream)}
        run = log_replay(study, config.tracking.experiment or config.name, config.tracking.uri, data)
        run_id = run.run_id
        say(f"Replay run: {run.url()}")
    return ReplayResult(config, dataset, study, run_id, seconds)
