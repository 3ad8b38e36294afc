"""Leaderboards: metric means with bootstrap intervals over users, and paired tests against the
best model, from the per-user vectors the evaluator keeps.

With several seeds, a model's mean is the mean of its per-seed means (std across seeds beside
it); intervals and paired tests use each user's value averaged over the seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from personalize.config import EvaluationConfig
from personalize.core import columns as C
from personalize.core.metrics import MetricName
from personalize.evaluation.evaluator import EvaluationResult
from personalize.evaluation.membership import AttackResult
from personalize.evaluation.metrics import registered
from personalize.evaluation.stats import bootstrap_ci, holm, paired_test


def shown() -> list[str]:
    """Metric names in leaderboard column order (the metric registry's order)."""
    return [m.name for m in registered() if m.shown]


@dataclass
class SeedOutcome:
    """One fit (one seed) of one model: its validation and test results and costs."""

    seed: int
    valid: EvaluationResult
    test: EvaluationResult
    fit_seconds: float
    refit_seconds: float
    eval_seconds: float
    best_epoch: int | None = None
    selected_params: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    grid: list[dict] = field(default_factory=list)  # validation value of every grid point
    privacy: dict = field(default_factory=dict)  # a private model's guarantee (DPSpec.params())
    epsilon_history: list[float] = field(default_factory=list)  # DP-SGD: epsilon spent after each epoch
    attack: AttackResult | None = None  # evaluation.membership_attack: on the test model


@dataclass
class ModelOutcome:
    """All seeds of one model in one experiment."""

    label: str
    model_type: str
    family: str
    params: dict
    seeds: list[SeedOutcome] = field(default_factory=list)
    run_id: str | None = None

    @property
    def grid_points(self) -> int:
        """The grid points each seed fitted (1 without a grid)."""
        return max([len(s.grid) for s in self.seeds] + [1])

    @property
    def fits(self) -> int:
        """The fits whose validation results were read and logged: grid points x seeds (what a
        private model's selection composes, basic composition)."""
        return self.grid_points * len(self.seeds)

    def summary(self, part: str = "test") -> dict[str, float]:
        """Mean over seeds of every summary and catalogue metric."""
        results = [getattr(s, part) for s in self.seeds]
        keys = list(results[0].summary) + list(results[0].catalogue_metrics)
        return {k: float(np.mean([r.metric(k) for r in results])) for k in keys}

    def seed_std(self, part: str = "test") -> dict[str, float]:
        results = [getattr(s, part) for s in self.seeds]
        keys = list(results[0].summary) + list(results[0].catalogue_metrics)
        if len(results) < 2:
            return {k: float("nan") for k in keys}
        return {k: float(np.std([r.metric(k) for r in results], ddof=1)) for k in keys}

    def per_user(self, part: str = "test") -> pd.DataFrame:
        """Per-user metric values averaged over seeds (users evaluated in any seed)."""
        frames = []
        for s in self.seeds:
            r = getattr(s, part)
            frames.append(r.per_user.loc[r.per_user["evaluated"]])
        if len(frames) == 1:
            return frames[0]
        stacked = pd.concat(frames)
        labels = [c for c in ("warm", "evaluated", C.SEGMENT) if c in stacked.columns]
        numeric = stacked.drop(columns=labels).groupby(level=0).mean()
        numeric["warm"] = stacked.groupby(level=0)["warm"].max()
        if C.SEGMENT in stacked.columns:
            segments = stacked.groupby(level=0)[C.SEGMENT]
            if (segments.nunique() > 1).any():  # seeds with different training parts
                raise ValueError(
                    f"{self.label}: a user's segment differs between seeds (the split's training part "
                    "changes with the seed), so per-user values cannot be averaged within a segment; "
                    "break down by segment with one seed or a split that does not depend on it"
                )
            numeric[C.SEGMENT] = segments.first()
        return numeric

    def mean_seconds(self, key: str) -> float:
        return float(np.mean([getattr(s, key) for s in self.seeds]))


def _metrics_at(columns, k: int) -> list[str]:
    names = [str(MetricName(m, k)) for m in shown()]
    return [name for name in names if name in columns]


def long_table(
    outcomes: list[ModelOutcome], config: EvaluationConfig, part: str = "test", seed: int = 0
) -> pd.DataFrame:
    """Every metric at every K for every model: mean, interval, std across seeds, users;
    with 'warm' and 'cold' slices where the part has cold users."""
    rows = []
    for o in outcomes:
        summary = o.summary(part)
        std = o.seed_std(part)
        per_user = o.per_user(part)
        slices = {"all": np.ones(len(per_user), dtype=bool)}
        warm = per_user["warm"].to_numpy(dtype=bool)
        if (~warm).any():
            slices.update(warm=warm, cold=~warm)
        for slice_name, mask in slices.items():
            sub = per_user.loc[mask]
            for name in summary:
                parsed = MetricName.parse(name)
                if slice_name != "all" and name not in sub.columns:
                    continue
                if name in sub.columns:
                    values = sub[name].to_numpy(dtype=float)
                    lo, hi = bootstrap_ci(values, config.bootstrap_resamples, config.confidence, seed)
                    mean = (
                        summary[name]
                        if slice_name == "all"
                        else float(np.nanmean(values))
                        if len(values)
                        else np.nan
                    )
                else:  # catalogue-level metric
                    lo = hi = np.nan
                    mean = summary[name]
                rows.append(
                    {
                        "model": o.label,
                        "family": o.family,
                        "part": part,
                        "slice": slice_name,
                        "metric": parsed.metric,
                        "k": parsed.k,
                        "mean": mean,
                        "ci_low": lo,
                        "ci_high": hi,
                        "std_seeds": std[name] if slice_name == "all" else np.nan,
                        "users": int(mask.sum()),
                        "seeds": len(o.seeds),
                    }
                )
    return pd.DataFrame(rows)


def leaderboard(
    outcomes: list[ModelOutcome],
    config: EvaluationConfig,
    split_name: str,
    part: str = "test",
    seed: int = 0,
) -> pd.DataFrame:
    """One row per model at the primary metric's K, sorted by the primary metric.

    Columns: model, family, split, seeds, K, users; for each metric its mean and interval
    ('<m>', '<m> low', '<m> high'); 'std over seeds' of the primary metric; 'p vs best' (paired
    test of per-user primary-metric values against the best model) and its Holm-adjusted
    value; 'fit s', 'eval s'; and, where there are cold users, the primary metric in the warm
    and cold slices with their user counts.
    """
    primary = config.primary_metric
    k = config.primary.k
    if not outcomes:
        return pd.DataFrame()
    summaries = {o.label: o.summary(part) for o in outcomes}
    best = max(outcomes, key=lambda o: summaries[o.label][primary])
    best_users = best.per_user(part)[primary]
    rows = []
    for o in outcomes:
        per_user = o.per_user(part)
        summary = summaries[o.label]
        row: dict[str, object] = {
            "model": o.label,
            "family": o.family,
            "split": split_name,
            "seeds": ",".join(str(s.seed) for s in o.seeds),
            "K": k,
            "users": len(per_user),
        }
        for name in _metrics_at(summary, k):
            row[name] = summary[name]
            if name in per_user.columns:
                lo, hi = bootstrap_ci(
                    per_user[name].to_numpy(dtype=float),
                    config.bootstrap_resamples,
                    config.confidence,
                    seed,
                )
                row[f"{name} low"], row[f"{name} high"] = lo, hi
        row["std over seeds"] = o.seed_std(part)[primary]
        if o is best:
            row["p vs best"] = np.nan
        else:
            joined = pd.concat([per_user[primary].rename("a"), best_users.rename("b")], axis=1, join="inner")
            row["p vs best"] = paired_test(
                joined["a"].to_numpy(), joined["b"].to_numpy(), config.paired_test, seed
            )
        row["fit s"] = o.mean_seconds("fit_seconds") + o.mean_seconds("refit_seconds")
        row["eval s"] = o.mean_seconds("eval_seconds")
        warm = per_user["warm"].to_numpy(dtype=bool)
        if (~warm).any():
            row[f"{primary} warm"] = float(per_user.loc[warm, primary].mean()) if warm.any() else np.nan
            row["warm users"] = int(warm.sum())
            row[f"{primary} cold"] = float(per_user.loc[~warm, primary].mean())
            row["cold users"] = int((~warm).sum())
        rows.append(row)
    table = pd.DataFrame(rows)
    table["p vs best (Holm)"] = holm(table["p vs best"].tolist())
    return table.sort_values(primary, ascending=False, kind="stable").reset_index(drop=True)


def seeds_text(seeds: str | list) -> str:
    """``"0,1,2"`` or ``[0, 1, 2]`` -> ``"3 seeds (0, 1, 2)"``; one seed -> ``"1 seed (0)"``."""
    values = [s.strip() for s in seeds.split(",")] if isinstance(seeds, str) else [str(s) for s in seeds]
    values = [v for v in values if v != ""]
    return f"{len(values)} seed{'s' if len(values) != 1 else ''} ({', '.join(values)})"


def format_leaderboard(table: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """Human-readable copy: 'mean [low, high]' cells, p-values in scientific notation."""
    out = pd.DataFrame()
    for col in table.columns:
        if col.endswith(" low") or col.endswith(" high"):
            continue
        values = table[col]
        if f"{col} low" in table.columns:
            out[col] = [
                f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
                for m, lo, hi in zip(values, table[f"{col} low"], table[f"{col} high"])
            ]
        elif col.startswith("p vs best"):
            out[col] = ["best" if pd.isna(p) else f"{p:.2g}" for p in values]
        elif col in ("fit s", "eval s"):
            out[col] = [f"{v:.2f}" for v in values]
        elif col == "seeds":
            out[col] = values.map(seeds_text)
        elif col == "std over seeds":
            out[col] = ["-" if pd.isna(v) else f"{v:.{digits}f}" for v in values]
        elif pd.api.types.is_float_dtype(values):
            out[col] = [f"{v:.{digits}f}" for v in values]
        else:
            out[col] = values
    return out
