"""The final comparison of a tuning session: every model refit with its best params on train +
validation and tested once per seed (the recipe, nested under the session), beside its untuned
self; each tuned model is tested against its default with a paired test.

- :func:`tuned_vs_default`: for each tuned model and its untuned self (same split, same seeds),
  the difference of the per-user primary metric (each user's value averaged over seeds), its
  95% bootstrap interval over users, a paired test, and Holm-adjusted p-values across the tuned
  models of the session (the family of tests it adjusts over).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from personalize.config import EvaluationConfig, ExperimentConfig, TuningConfig
from personalize.data.ingest import Dataset
from personalize.evaluation.leaderboard import ModelOutcome
from personalize.evaluation.stats import bootstrap_ci, holm, paired_test
from personalize.recipe import ExperimentResult, load_experiment, run_experiment
from personalize.tuning.results import DEFAULT_SUFFIX, StudyOutcome, TuningResult

Echo = Callable[[str], None]


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


def comparison(result: TuningResult) -> pd.DataFrame | None:
    """Each tuned model against its untuned self on test (paired, Holm across models)."""
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


def tuned_experiment(result: TuningResult) -> ExperimentConfig:
    """The session's experiment with each model's params replaced by its tuned params."""
    return final_config(result.config, result.studies, compare_defaults=False)


def tuned_vs_default(
    outcomes: list[ModelOutcome], pairs: list[tuple[str, str]], config: EvaluationConfig, seed: int = 0
) -> pd.DataFrame:
    """One row per (tuned, default) pair: means, difference with interval, p-values.

    difference = mean over users of (tuned - default) of the primary metric on test; the
    interval is the percentile bootstrap of that mean; ``p`` is the paired test of the
    evaluation block (t, wilcoxon or permutation); ``p (Holm)`` adjusts across the pairs;
    ``significant`` means ``p (Holm)`` < 1 - confidence.
    """
    primary = config.primary_metric
    by_label = {o.label: o for o in outcomes}
    rows = []
    for tuned, default in pairs:
        if tuned not in by_label or default not in by_label:
            continue
        a = by_label[tuned].per_user("test")[primary].rename("tuned")
        b = by_label[default].per_user("test")[primary].rename("default")
        joined = pd.concat([a, b], axis=1, join="inner").dropna()
        diff = joined["tuned"] - joined["default"]
        lo, hi = bootstrap_ci(diff.to_numpy(), config.bootstrap_resamples, config.confidence, seed)
        mean_default = float(by_label[default].summary("test")[primary])
        mean_tuned = float(by_label[tuned].summary("test")[primary])
        rows.append(
            {
                "model": tuned,
                "users": len(joined),
                f"tuned {primary}": mean_tuned,
                f"default {primary}": mean_default,
                "difference": mean_tuned - mean_default,
                "difference low": lo,
                "difference high": hi,
                "relative %": 100 * (mean_tuned - mean_default) / mean_default if mean_default else np.nan,
                "p": paired_test(
                    joined["tuned"].to_numpy(), joined["default"].to_numpy(), config.paired_test, seed
                ),
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        table["p (Holm)"] = holm(table["p"].tolist())
        table["significant"] = table["p (Holm)"] < 1 - config.confidence
    return table
