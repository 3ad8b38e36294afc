"""The one recipe and its steps: load -> validate -> split -> fit -> evaluate -> log (-> export).

- :func:`load_experiment` (:mod:`.loading`): read an experiment file, every name checked;
- :func:`run_experiment` (:mod:`.run`): the story end to end;
- the steps (:mod:`.steps`): :func:`load_data`, :func:`prepare_split`, :func:`fit_and_evaluate`;
- :func:`export_result` (:mod:`.export`): export the champion of a run.
"""

from personalize.recipe.export import candidates_from_result, export_after_run, export_result
from personalize.recipe.loading import describe_defaults, load_experiment, reload
from personalize.recipe.result import ExperimentResult
from personalize.recipe.run import run_experiment
from personalize.recipe.steps import (
    PreparedSplit,
    fit_and_evaluate,
    load_data,
    model_seeds,
    prepare_split,
    split_seeds,
)

__all__ = [
    "ExperimentResult",
    "PreparedSplit",
    "candidates_from_result",
    "describe_defaults",
    "export_after_run",
    "export_result",
    "fit_and_evaluate",
    "load_data",
    "load_experiment",
    "model_seeds",
    "prepare_split",
    "reload",
    "run_experiment",
    "split_seeds",
]
