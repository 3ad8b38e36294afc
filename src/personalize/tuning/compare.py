"""What pruning saves: :func:`compare_pruning` runs the same study (same seeded sampler, same
budget) with and without the pruner, in memory, and reports the epochs each trained, the share
pruning saved, and whether the pruned study's best validation value lies inside the bootstrap
interval (over validation users) of the unpruned study's best.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
import pandas as pd

from personalize.config import ExperimentConfig
from personalize.evaluation.stats import bootstrap_ci
from personalize.models.registry import get_model_class
from personalize.recipe import load_data, prepare_split
from personalize.tuning.objective import Objective
from personalize.tuning.studies import open_study, run_trials, start_from_defaults, summarise


def compare_pruning(
    config: ExperimentConfig,
    models: list[str] | None = None,
    trials: int | None = None,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Run each iterative model's study twice in memory -- with the configured pruner and
    without -- and compare epochs trained and best validation values.

    Columns: model, trials, pruned trials, epochs (pruned study), epochs (unpruned study),
    epochs saved %, seconds of each, best value of each, the unpruned best's bootstrap interval
    over validation users, and ``within interval``.
    """
    say = echo or (lambda _m: None)
    base = config.tuning.model_copy(update={"storage": "memory"})
    if trials is not None:
        base = base.model_copy(update={"trials": trials})
    metric = base.metric or config.evaluation.primary_metric
    seed = config.seeds[0]
    sampler_seed = seed if base.seed is None else base.seed
    run_config = config.model_copy(
        update={"training": config.training.model_copy(update={"monitor_metric": metric})}
    )
    dataset = load_data(config)
    prepared = prepare_split(dataset, config, seed)

    rows = []
    for spec in config.models:
        if not spec.search or not get_model_class(spec.type).iterative:
            continue
        if models and spec.label not in models:
            continue
        row: dict[str, object] = {"model": spec.label, "trials": base.trials, "pruner": base.pruner}
        results = {}
        for name, tuning in (("pruned", base), ("unpruned", base.model_copy(update={"pruner": "none"}))):
            storage = optuna.storages.InMemoryStorage()
            study, _ = open_study(storage, f"{spec.label}-{name}", tuning, sampler_seed)
            start_from_defaults(study, spec, tuning)
            objective = Objective(spec, seed, prepared, run_config, metric, keep_per_user=True)
            t0 = time.perf_counter()
            run_trials(
                study, objective, tuning, sampler_seed, progress=progress, label=f"{spec.label} {name}"
            )
            seconds = time.perf_counter() - t0
            results[name] = (summarise(study, spec), objective, seconds)
        pruned, _, s_pruned = results["pruned"]
        unpruned, objective, s_unpruned = results["unpruned"]
        lo, hi = bootstrap_ci(
            objective.per_user[unpruned.best_trial].to_numpy(dtype=float),
            config.evaluation.bootstrap_resamples,
            config.evaluation.confidence,
            seed,
        )
        row.update(
            {
                "pruned trials": pruned.counts["pruned"],
                "epochs (pruned study)": pruned.epochs_trained,
                "epochs (unpruned study)": unpruned.epochs_trained,
                "epochs saved %": 100 * (1 - pruned.epochs_trained / max(1, unpruned.epochs_trained)),
                "seconds (pruned)": s_pruned,
                "seconds (unpruned)": s_unpruned,
                f"best valid {metric} (pruned)": pruned.best_value,
                f"best valid {metric} (unpruned)": unpruned.best_value,
                "unpruned best low": lo,
                "unpruned best high": hi,
                "within interval": bool(lo <= (pruned.best_value or -1) <= hi),
            }
        )
        say(f"{spec.label}: {row}")
        rows.append(row)
    return pd.DataFrame(rows)
