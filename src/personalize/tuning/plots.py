"""Figures of a study in the house style (logged per model study, shown in notebook 03).

Drawn here from the study's trials rather than with Optuna's plots, so that they carry the
metric's name (not "Objective Value"), one title, integer trial numbers and a mark for every
pruned trial.
"""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from personalize import plotting as P


def _last_value(trial: FrozenTrial) -> float | None:
    """A trial's value: its objective when complete, its last reported value when pruned."""
    if trial.state == TrialState.COMPLETE:
        return trial.value
    if trial.intermediate_values:
        return trial.intermediate_values[max(trial.intermediate_values)]
    return None


@P.house_style
def optimization_history(
    study: optuna.Study, title: str | None = None, metric: str = "ndcg@10"
) -> plt.Figure:
    """Every trial's validation value by trial number: complete trials as dots, pruned trials as
    crosses at their last reported value, the untuned first trial as a star, and the best so far."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    fig, axes = P.figure(height=3.6)
    ax = axes[0][0]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and _last_value(t) is not None]
    if complete:
        ax.scatter(
            [t.number for t in complete],
            [t.value for t in complete],
            s=22,
            color="tab:blue",
            label="complete",
        )
        order = sorted(complete, key=lambda t: t.number)
        best = np.maximum.accumulate([t.value for t in order])
        ax.step(
            [t.number for t in order], best, where="post", color="tab:blue", alpha=0.6, label="best so far"
        )
    if pruned:
        ax.scatter(
            [t.number for t in pruned],
            [_last_value(t) for t in pruned],
            marker="x",
            s=30,
            color="tab:red",
            label="pruned (last reported epoch)",
        )
    defaults = [t for t in complete if t.user_attrs.get("start") == "default params"]
    if defaults:
        ax.scatter(
            [t.number for t in defaults],
            [t.value for t in defaults],
            marker="*",
            s=120,
            color="tab:orange",
            zorder=3,
            label="untuned params (trial 0)",
        )
    failed = sum(t.state == TrialState.FAIL for t in trials)
    ax.set_xlabel("trial number" + (f" ({failed} failed trials not shown)" if failed else ""))
    ax.set_ylabel(f"validation {metric.upper()}")
    P.integer_ticks(ax)
    P.legend_outside(fig, ax)
    ax.set_title(title or f"{study.study_name}: validation {metric.upper()} by trial")
    return fig


@P.house_style
def param_importances(
    study: optuna.Study, title: str | None = None, metric: str = "ndcg@10"
) -> plt.Figure | None:
    """fANOVA importance of each searched param for the validation metric (None where it is
    undefined: fewer than two complete trials, no varying param, or no variance in the values)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varying = {k for t in complete for k in t.params if len({str(u.params.get(k)) for u in complete}) > 1}
    if len(complete) < 2 or not varying or len({t.value for t in complete}) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            importances = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
        except (RuntimeError, ValueError):  # e.g. no variance left to attribute
            return None
    names = list(importances)[::-1]
    fig, axes = P.figure(height=P.rows_height(len(names), 0.4, 1.2))
    ax = axes[0][0]
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel(f"importance for validation {metric.upper()} (share of variance, fANOVA)")
    ax.set_xlim(0, 1)
    ax.grid(axis="y", alpha=0)
    ax.set_title(title or f"{study.study_name}: parameter importances")
    return fig


@P.house_style
def intermediate_values(
    study: optuna.Study, title: str | None = None, metric: str = "ndcg@10"
) -> plt.Figure | None:
    """The validation metric per reported epoch of every trial (iterative models; None
    otherwise): complete trials in blue, pruned trials in red ending where they were stopped,
    the best trial bold."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    if not trials:
        return None
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value).number if complete else None
    fig, axes = P.figure(height=3.6)
    ax = axes[0][0]
    labelled: set[str] = set()
    for t in trials:
        epochs = sorted(t.intermediate_values)
        values = [t.intermediate_values[e] for e in epochs]
        if t.number == best:
            kind, colour, width, alpha = f"best trial ({t.number})", "black", 2.0, 1.0
        elif t.state == TrialState.PRUNED:
            kind, colour, width, alpha = "pruned", "tab:red", 1.0, 0.6
        else:
            kind, colour, width, alpha = "complete", "tab:blue", 1.0, 0.5
        ax.plot(epochs, values, color=colour, lw=width, alpha=alpha, label=None if kind in labelled else kind)
        if t.state == TrialState.PRUNED:
            ax.scatter(epochs[-1], values[-1], marker="x", color=colour, s=20)
        labelled.add(kind)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric.upper()}")
    P.integer_ticks(ax)
    P.legend_outside(fig, ax, f"{len(trials)} trials")
    ax.set_title(title or f"{study.study_name}: validation {metric.upper()} per epoch")
    return fig
