"""Leaderboards broken down by user segment, and the segment-routed hybrid against the best single
model (PROTOCOL.md, "Breakdowns by segment").

A user's segment is data: the ``segment`` column of the evaluator's per-user table, assigned from
the history the evaluated model knows (never from test rows). Per segment, a model's value is the
mean of its per-user values over the segment's evaluated users (averaged over seeds first), with a
bootstrap interval and the user count. Per-segment paired tests compare each model with the
leaderboard's best model on the segment's users and are Holm-adjusted across segments (one family
per model); the routed hybrid is compared with the best single model the same way, and overall.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from personalize import plotting as P
from personalize.config import EvaluationConfig
from personalize.core import columns as C
from personalize.core.metrics import MetricName
from personalize.evaluation.leaderboard import ModelOutcome
from personalize.evaluation.stats import bootstrap_ci, holm, paired_test


def segment_name(segment: int, names: dict[int, str] | None) -> str:
    """A segment's name ('no segment' for -1; 'segment <s>' when unnamed)."""
    if segment < 0:
        return "no segment"
    return (names or {}).get(segment, f"segment {segment}")


def _per_user(outcome: ModelOutcome, part: str) -> pd.DataFrame:
    table = outcome.per_user(part)
    if C.SEGMENT not in table.columns:
        raise ValueError(
            f"{outcome.label}: no user segments in the {part} results (evaluation.by: segment needs "
            "segments.enabled: true)"
        )
    return table


def segment_table(
    outcomes: list[ModelOutcome],
    config: EvaluationConfig,
    part: str = "test",
    seed: int = 0,
    names: dict[int, str] | None = None,
) -> pd.DataFrame:
    """One row per (segment, model): users, the primary metric and MAP at its K with intervals,
    the paired test against the leaderboard's best model on the segment's users ('p vs best')
    and its Holm adjustment across segments ('p vs best (Holm)'). Segment -1 (users without a
    segment) is reported as 'no segment' when it has users."""
    primary = config.primary_metric
    k = config.primary.k
    metrics = [primary, *([str(MetricName("map", k))] if str(MetricName("map", k)) != primary else [])]
    tables = {o.label: _per_user(o, part) for o in outcomes}
    best = max(outcomes, key=lambda o: o.summary(part)[primary])
    best_values = tables[best.label][primary]
    rows = []
    for o in outcomes:
        table = tables[o.label]
        for segment, group in table.groupby(C.SEGMENT, sort=True):
            row = {
                "segment": int(segment),
                "name": (names or {}).get(
                    int(segment), "no segment" if segment < 0 else f"segment {segment}"
                ),
                "model": o.label,
                "family": o.family,
                "users": len(group),
            }
            for name in metrics:
                if name not in group.columns:
                    continue
                values = group[name].to_numpy(dtype=float)
                row[name] = float(np.nanmean(values)) if len(values) else np.nan
                row[f"{name} low"], row[f"{name} high"] = bootstrap_ci(
                    values, config.bootstrap_resamples, config.confidence, seed
                )
            if o is best:
                row["p vs best"] = np.nan
            else:
                joined = pd.concat(
                    [group[primary].rename("a"), best_values.rename("b")], axis=1, join="inner"
                ).dropna()
                row["p vs best"] = (
                    paired_test(joined["a"].to_numpy(), joined["b"].to_numpy(), config.paired_test, seed)
                    if len(joined) > 1
                    else np.nan
                )
            rows.append(row)
    out = pd.DataFrame(rows)
    out["p vs best (Holm)"] = np.nan
    for label, idx in out.groupby("model").groups.items():
        if label != best.label:
            out.loc[idx, "p vs best (Holm)"] = holm(out.loc[idx, "p vs best"].tolist())
    return out.sort_values(["segment", primary], ascending=[True, False], kind="stable").reset_index(
        drop=True
    )


def routing_comparison(
    outcomes: list[ModelOutcome],
    routed: str,
    config: EvaluationConfig,
    part: str = "test",
    seed: int = 0,
    names: dict[int, str] | None = None,
) -> pd.DataFrame:
    """The routed hybrid (label ``routed``) against the best single model (the best of the other
    models by the primary metric): one row overall and one per segment, with both means, the
    mean per-user difference and its bootstrap interval, the paired test, and (per segment) its
    Holm adjustment across segments."""
    primary = config.primary_metric
    others = [o for o in outcomes if o.label != routed]
    if not others or routed not in {o.label for o in outcomes}:
        raise ValueError(f"routing_comparison needs the routed model {routed!r} and at least one other model")
    route = next(o for o in outcomes if o.label == routed)
    single = max(others, key=lambda o: o.summary(part)[primary])
    a, b = _per_user(route, part), _per_user(single, part)
    joined = pd.concat(
        [a[primary].rename("routed"), b[primary].rename("single"), a[C.SEGMENT].rename("segment")],
        axis=1,
        join="inner",
    ).dropna(subset=["routed", "single"])

    def row(name: str, segment, sub: pd.DataFrame) -> dict:
        diff = (sub["routed"] - sub["single"]).to_numpy(dtype=float)
        lo, hi = bootstrap_ci(diff, config.bootstrap_resamples, config.confidence, seed)
        p = (
            paired_test(sub["routed"].to_numpy(), sub["single"].to_numpy(), config.paired_test, seed)
            if len(sub) > 1 and np.any(diff != 0)
            else 1.0
        )
        return {
            "segment": segment,
            "name": name,
            "users": len(sub),
            "routed": float(sub["routed"].mean()),
            "best single": float(sub["single"].mean()),
            "best single model": single.label,
            "difference": float(diff.mean()),
            "difference low": lo,
            "difference high": hi,
            "p": p,
        }

    rows = [row("all users", "all", joined)]
    for segment, sub in joined.groupby("segment", sort=True):
        rows.append(row(segment_name(int(segment), names), int(segment), sub))
    out = pd.DataFrame(rows)
    out["p (Holm across segments)"] = np.nan
    per_segment = out.index[1:]
    out.loc[per_segment, "p (Holm across segments)"] = holm(out.loc[per_segment, "p"].tolist())
    return out


@P.house_style
def plot_by_segment(table: pd.DataFrame, metric: str):
    """Model x segment: per segment, each model's mean with its interval (one colour per model)."""
    segments = table[["segment", "name", "users"]].drop_duplicates("segment").sort_values("segment")
    models = list(dict.fromkeys(table.sort_values(metric, ascending=False)["model"]))
    fig, axes = P.figure(height=P.rows_height(len(segments) * max(1, len(models)) // 2 + len(segments)))
    ax = axes[0][0]
    colours = {m: f"C{i % 10}" for i, m in enumerate(models)}
    step = 0.8 / max(1, len(models))
    for j, seg in enumerate(segments.itertuples()):
        base = len(segments) - 1 - j
        for i, model in enumerate(models):
            rows = table[(table["segment"] == seg.segment) & (table["model"] == model)]
            if rows.empty:
                continue
            r = rows.iloc[0]
            y = base + 0.4 - (i + 0.5) * step
            ax.errorbar(
                r[metric],
                y,
                xerr=[[r[metric] - r[f"{metric} low"]], [r[f"{metric} high"] - r[metric]]],
                fmt="o",
                color=colours[model],
                ms=4,
                capsize=2,
                label=model if j == 0 else None,
            )
    ax.set_yticks(
        np.arange(len(segments))[::-1], [f"{s.name} ({s.users} users)" for s in segments.itertuples()]
    )
    ax.set_xlabel(f"{metric} (mean over the segment's users, 95% interval)")
    ax.set_title("Models by segment")
    ax.grid(axis="y", alpha=0)
    P.legend_outside(fig, ax, title="model")
    return fig


def format_segment_table(table: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """A readable copy: 'mean [low, high]' cells, p-values in scientific notation ('best')."""
    out = table[["name", "model", "users"]].copy()
    for col in (c for c in table.columns if f"{c} low" in table.columns):
        out[col] = [
            f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
            for m, lo, hi in zip(table[col], table[f"{col} low"], table[f"{col} high"], strict=True)
        ]
    out["p vs best (Holm)"] = ["best" if pd.isna(p) else f"{p:.2g}" for p in table["p vs best (Holm)"]]
    return out.rename(columns={"name": "segment"}).reset_index(drop=True)


def format_routing(table: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """A readable copy of :func:`routing_comparison`."""
    return pd.DataFrame(
        {
            "users": table["name"] + " (" + table["users"].astype(str) + ")",
            "routed": [f"{v:.{digits}f}" for v in table["routed"]],
            "best single": [
                f"{v:.{digits}f} ({m})"
                for v, m in zip(table["best single"], table["best single model"], strict=True)
            ],
            "difference [95% interval]": [
                f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
                for d, lo, hi in zip(
                    table["difference"], table["difference low"], table["difference high"], strict=True
                )
            ],
            "p": [f"{p:.2g}" for p in table["p"]],
            "p (Holm across segments)": [
                "-" if pd.isna(p) else f"{p:.2g}" for p in table["p (Holm across segments)"]
            ],
        }
    )
