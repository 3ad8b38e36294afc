"""The privacy-utility curve: one row per (model, point) with test accuracy, the guarantee it was
trained under, and the membership attack beside the ceiling that guarantee implies; one figure.

A *point* is an epsilon of the curve, ``clipping only`` (each unit's contribution bounded, no
noise: no guarantee, the cost of clipping alone) or ``non-private``. Accuracy is the leaderboard's
test mean over seeds with its 95% bootstrap interval over users; the attack's AUC is the mean over
seeds, its interval the union of the per-seed 95% intervals; the ceiling is
:func:`~personalize.evaluation.membership.dp_auc_bound` at the point's epsilon and delta.

**What a point releases in all.** Each seed fits every one of the model's k grid points (each an
(epsilon, delta)-DP fit of the training users, its validation metrics logged) and the s seeds are
logged too, so the point as a whole releases k s private fits. Their total, by basic composition,
is (k s epsilon, k s delta) (:func:`total_guarantee`): the table's ``epsilon total`` and
``delta total``, beside the per-run epsilon; the figure plots accuracy against both. (On
``user_holdout`` each seed draws other training users, so k s is an upper bound for a user who
trains under every seed.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from personalize import plotting as P
from personalize.evaluation.leaderboard import ModelOutcome
from personalize.evaluation.membership import dp_auc_bound

NON_PRIVATE = "non-private"
CLIPPING_ONLY = "clipping only"


@dataclass(frozen=True)
class CurvePoint:
    """Where an expanded model sits on the curve: its base model's label, the point's name and
    epsilon (None for the two points without noise) and the unit of the guarantee."""

    model: str
    point: str
    epsilon: float | None
    unit: str


def point_name(epsilon: float | None, clipped: bool) -> str:
    if epsilon is not None:
        return f"eps={epsilon:g}"
    return CLIPPING_ONLY if clipped else NON_PRIVATE


def point_position(point: str, epsilon: float | None) -> float:
    """Where a curve point sorts on the epsilon axis: at its epsilon; clipping only, then
    non-private, after every epsilon."""
    return {CLIPPING_ONLY: 1e300, NON_PRIVATE: math.inf}.get(point, epsilon)


def total_guarantee(epsilon: float | None, delta: float | None, fits: int) -> tuple[float, float]:
    """(``fits`` epsilon, ``fits`` delta): basic composition of ``fits`` (epsilon, delta)-DP
    releases of the same units (Dwork & Roth, Theorem 3.16); NaN without epsilon."""
    if epsilon is None or pd.isna(epsilon):
        return math.nan, math.nan
    return fits * float(epsilon), fits * float(delta or 0.0)


def curve_table(entries: list[tuple[CurvePoint, ModelOutcome, pd.Series, str]], metric: str) -> pd.DataFrame:
    """Rows of the curve from (point, outcome, leaderboard row, split name) of every model run.

    ``metric`` is the primary metric's column name (e.g. ``ndcg@10``)."""
    rows = []
    for point, outcome, board, split in entries:
        privacy = outcome.seeds[0].privacy if outcome.seeds else {}
        attacks = [s.attack for s in outcome.seeds if s.attack is not None]
        spent = [s.epsilon_history[-1] for s in outcome.seeds if s.epsilon_history]
        delta = privacy.get("dp_delta")
        eps_total, delta_total = total_guarantee(point.epsilon, delta, outcome.fits)
        rows.append(
            {
                "model": point.model,
                "unit": point.unit,
                "split": split,
                "point": point.point,
                "epsilon": point.epsilon,
                "delta": delta,
                "grid points": outcome.grid_points,
                "epsilon total": eps_total,
                "delta total": delta_total,
                metric: board[metric],
                f"{metric} low": board.get(f"{metric} low", np.nan),
                f"{metric} high": board.get(f"{metric} high", np.nan),
                "std over seeds": board.get("std over seeds", np.nan),
                "attack AUC": float(np.mean([a.auc for a in attacks])) if attacks else np.nan,
                "AUC low": min(a.low for a in attacks) if attacks else np.nan,
                "AUC high": max(a.high for a in attacks) if attacks else np.nan,
                "AUC bound": dp_auc_bound(point.epsilon, delta) if point.epsilon is not None else np.nan,
                "epsilon spent": float(np.mean(spent)) if spent else np.nan,
                "noise multiplier": privacy.get("dp_noise_multiplier", np.nan),
                "noise std": privacy.get("dp_sigma", np.nan),
                "clip": privacy.get("dp_clip", np.nan),
                "sample rate": privacy.get("dp_sample_rate", np.nan),
                "accountant": privacy.get("dp_accountant") or privacy.get("dp_mechanism") or "",
                "seeds": len(outcome.seeds),
                "label": outcome.label,
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["_x"] = [point_position(p, e) for p, e in zip(table["point"], table["epsilon"])]
    table = table.sort_values(["unit", "model", "_x"], ascending=[False, True, False], kind="stable")
    return table.drop(columns="_x").reset_index(drop=True)


def format_curve(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The curve as printed: mean [low, high] cells, the ceiling beside the attack's AUC."""

    def cell(mean, low, high, digits=4):
        if pd.isna(mean):
            return ""
        if pd.isna(low):
            return f"{mean:.{digits}f}"
        return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"

    out = pd.DataFrame(
        {
            "model": table["model"],
            "unit": table["unit"],
            "point": table["point"],
            "delta": table["delta"].map(lambda d: "" if pd.isna(d) or d is None else f"{d:.2g}"),
            "epsilon total": [
                "" if pd.isna(t) else f"{t:g} ({k} x {n})"
                for t, k, n in zip(
                    table.get("epsilon total", pd.Series(np.nan, index=table.index)),
                    table.get("grid points", pd.Series(1, index=table.index)),
                    table["seeds"],
                )
            ],
            f"test {metric}": [
                cell(m, lo, hi)
                for m, lo, hi in zip(table[metric], table[f"{metric} low"], table[f"{metric} high"])
            ],
            "attack AUC": [
                cell(m, lo, hi, 3)
                for m, lo, hi in zip(table["attack AUC"], table["AUC low"], table["AUC high"])
            ],
            "AUC bound": table["AUC bound"].map(lambda b: "" if pd.isna(b) else f"{b:.3f}"),
            "noise": [
                f"multiplier {nm:.3g}"
                if not pd.isna(nm)
                else (f"std {sd:.3g}" if not pd.isna(sd) and sd else "")
                for nm, sd in zip(table["noise multiplier"], table["noise std"])
            ],
            "clip": table["clip"].map(lambda c: "" if c is None or pd.isna(c) else f"{c:g}"),
            "seeds": table["seeds"],
        }
    )
    return out


@P.house_style
def plot_curve(table: pd.DataFrame, metric: str, title: str = "Privacy against accuracy"):
    """Left: test ``metric`` against the per-run epsilon (log scale), a line per model with its
    95% interval; the points without noise sit right of the largest epsilon (``clip``: clipping
    only, ``none``: non-private). Middle: the same accuracy against the epsilon the whole point
    releases (grid points x seeds, basic composition; private points only). Right: the attack's
    AUC at the per-run points, and the ceiling the guarantee sets (dashed; 0.5 is guessing)."""
    with_total = "epsilon total" in table and table["epsilon total"].notna().any()
    fig, axes = P.figure(1, 3 if with_total else 2, width=P.WIDTH + (6.0 if with_total else 2.6), height=3.8)
    left, right = axes[0][0], axes[0][-1]
    middle = axes[0][1] if with_total else None
    eps = sorted({e for e in table["epsilon"] if e is not None and not pd.isna(e)})
    top = max(eps) if eps else 1.0
    where = {CLIPPING_ONLY: top * 2.8, NON_PRIVATE: top * 5.6}

    def xs(rows):
        return [where.get(p, e) for p, e in zip(rows["point"], rows["epsilon"])]

    for (model, unit), rows in table.groupby(["model", "unit"], sort=False):
        x = np.asarray(xs(rows), float)
        order = np.argsort(x)
        x, rows = x[order], rows.iloc[order]
        noisy = rows["epsilon"].notna().to_numpy()
        colour = None
        panels = [
            (left, x, (metric, f"{metric} low", f"{metric} high"), True),
            (right, x, ("attack AUC", "AUC low", "AUC high"), True),
        ]
        if middle is not None:
            total = rows["epsilon total"].to_numpy(float)
            panels.insert(1, (middle, total, (metric, f"{metric} low", f"{metric} high"), False))
        for ax, xv, cols, with_unnoised in panels:
            y, lo, hi = (rows[c].to_numpy(float) for c in cols)
            if not np.isfinite(y).any():
                continue
            err = [y - lo, hi - y]
            label = f"{model} ({unit}-level)" if ax is left else None
            # the epsilon points as a line; the two points without noise as markers only
            masks = [(noisy, {"marker": "o", "ms": 4})]
            if with_unnoised:
                masks.append((~noisy, {"fmt": "s", "ms": 5}))
            for mask, style in masks:
                if not mask.any():
                    continue
                line = ax.errorbar(
                    xv[mask],
                    y[mask],
                    yerr=[e[mask] for e in err],
                    capsize=2,
                    color=colour,
                    label=label,
                    **style,
                )
                colour, label = line[0].get_color(), None
    if eps:
        grid = np.geomspace(min(eps), top, 60)
        deltas = [d for d in table["delta"] if d is not None and not pd.isna(d)]
        delta = float(np.median(deltas)) if deltas else 0.0
        right.plot(grid, [dp_auc_bound(e, delta) for e in grid], "k--", lw=1, label="ceiling set by epsilon")
    right.axhline(0.5, color="0.5", lw=0.8, ls=":")
    ticks = [*eps, where[CLIPPING_ONLY], where[NON_PRIVATE]]
    names = [*(f"{e:g}" for e in eps), "clip", "none"]
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(ticks, names)
        ax.minorticks_off()
        ax.set_xlabel("epsilon per run (clip: clipping only; none: not private)")
    left.set_ylabel(f"test {metric.upper()}")
    right.set_ylabel("membership attack AUC")
    right.set_ylim(0.3, 1.02)
    right.legend(loc="lower right")
    left.set_title("Accuracy")
    right.set_title("Attack success")
    if middle is not None:
        middle.set_xscale("log")
        middle.set_xlabel("epsilon released in all (grid points x seeds)")
        middle.set_ylabel(f"test {metric.upper()}")
        middle.set_title("Accuracy against the total")
    P.legend_outside(fig, left, "model", below=True)
    fig.suptitle(title)
    return fig
