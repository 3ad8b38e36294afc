"""Figures of a study, drawn with Optuna's matplotlib visualisations (logged per model)."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import optuna
from optuna.trial import TrialState


def _figure(ax_or_array):
    ax = ax_or_array.flat[0] if hasattr(ax_or_array, "flat") else ax_or_array
    fig = ax.figure
    fig.set_size_inches(8, 4.5)
    fig.tight_layout()
    return fig


def optimization_history(study: optuna.Study, title: str | None = None) -> plt.Figure:
    """Objective value of every finished trial and the best so far (Optuna's plot)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = optuna.visualization.matplotlib.plot_optimization_history(study)
    if title:
        ax.set_title(title)
    return _figure(ax)


def param_importances(study: optuna.Study, title: str | None = None) -> plt.Figure | None:
    """fANOVA importance of each searched param (None where importances are undefined: fewer
    than two complete trials, no varying param, or no variance in the values)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varying = {k for t in complete for k in t.params if len({str(u.params.get(k)) for u in complete}) > 1}
    if len(complete) < 2 or not varying or len({t.value for t in complete}) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ax = optuna.visualization.matplotlib.plot_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
        except (RuntimeError, ValueError):  # e.g. no variance left to attribute
            plt.close("all")
            return None
    if title:
        ax.set_title(title)
    return _figure(ax)


def intermediate_values(study: optuna.Study, title: str | None = None) -> plt.Figure | None:
    """Validation metric per reported epoch of every trial (iterative models; None otherwise)."""
    if not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = optuna.visualization.matplotlib.plot_intermediate_values(study)
    ax.set_xlabel("epoch")
    if title:
        ax.set_title(title)
    legend = ax.get_legend()
    if legend is not None:
        legend.remove()
    return _figure(ax)
