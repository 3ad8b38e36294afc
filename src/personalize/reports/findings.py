"""What the results say, in sentences with their numbers: the "What we found" section that ends
every notebook, computed from the results the notebook just produced (never written by hand).

Every function returns :class:`Findings`: the sentences (Markdown, shown by a notebook as the
cell's value) and the numbers they quote, so a test can check the text against the results.

One significance rule across the lab (the protocol's "Runs and reporting"): a model differs from
the best when the leaderboard's paired test against the best, Holm-adjusted across the models of
that leaderboard, gives p < 1 - confidence. Any other test quoted here says which family of tests
its adjustment is over.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from personalize.core import columns as C
from personalize.core.findings import Findings
from personalize.data import audit
from personalize.data.hygiene import HygieneAudit
from personalize.data.ingest import Dataset
from personalize.recipe import ExperimentResult
from personalize.reports.views import interval, p_text, seeds_text
from personalize.serving.export import ExportResult
from personalize.tuning.results import TuningResult

TOP_ITEMS = 100  # "popular" in the cold-slice explanation: the most popular items of the training data


def _signed(mean: float, low: float, high: float) -> str:
    """A difference with its interval: ``+0.0089 [+0.0013, +0.0163]``."""
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"


def _valid_interval(row: pd.Series, metric: str) -> str:
    return interval(row[f"valid {metric}"], row.get(f"valid {metric} low"), row.get(f"valid {metric} high"))


# ----------------------------------------------------------------------------- leaderboards


def _alpha(result: ExperimentResult) -> float:
    return 1 - result.config.evaluation.confidence


def leaderboard_findings(result: ExperimentResult, findings: Findings) -> None:
    """The best model with its interval, and which models are within noise of it."""
    table = result.leaderboard
    metric = result.config.evaluation.primary_metric
    alpha = _alpha(result)
    best = table.iloc[0]
    findings.add(
        f"Under `{result.config.split.name}` the best model by test {metric} is **{best['model']}**: "
        f"{interval(best[metric], best.get(f'{metric} low'), best.get(f'{metric} high'))} over "
        f"{int(best['users'])} test users ({seeds_text(best['seeds'])}).",
        best_model=str(best["model"]),
        best_value=round(float(best[metric]), 4),
    )
    rest = table.iloc[1:]
    if rest.empty:
        return
    tied = rest[rest["p vs best (Holm)"] >= alpha]
    family = f"Holm-adjusted across the {len(rest)} other models of this leaderboard"
    if tied.empty:
        findings.add(
            f"Every other model is significantly below it (paired test on per-user {metric}, {family}; "
            f"all p < {alpha:g}).",
            tied_with_best=[],
        )
    else:
        listed = ", ".join(
            f"{r['model']} ({r[metric]:.4f}, p = {p_text(r['p vs best (Holm)'])})" for _, r in tied.iterrows()
        )
        findings.add(
            f"Within noise of it (paired test on per-user {metric}, {family}; p >= {alpha:g}): {listed}; "
            "the others are significantly below.",
            tied_with_best=tied["model"].tolist(),
        )


def comparison_findings(
    result: ExperimentResult,
    cold: ExperimentResult | None = None,
    hybrid: str | None = None,
    parts: pd.DataFrame | None = None,
) -> Findings:
    """Notebook 02: the leaderboard, the hybrid against its parts, the warm and cold slices."""
    f = Findings("What we found")
    leaderboard_findings(result, f)
    if hybrid and parts is not None and len(parts):
        bits = []
        for _, r in parts.iterrows():
            verdict = "significant" if r["p (Holm)"] < _alpha(result) else "not significant"
            bits.append(
                f"vs {r['part']} {_signed(r['difference'], r['difference low'], r['difference high'])}, "
                f"p = {p_text(r['p (Holm)'])} ({verdict})"
            )
        board = result.leaderboard.set_index("model")
        standing = []
        for name in [hybrid, *parts["part"]]:
            p = board.loc[name, "p vs best (Holm)"]
            if pd.isna(p):
                standing.append(f"{name} is the best model")
            else:
                within = "within noise of the best" if p >= _alpha(result) else "below the best"
                standing.append(f"{name} is {within} (p = {p_text(p)})")
        f.add(
            f"The hybrid **{hybrid}** against its parts (paired on the same test users, Holm-adjusted "
            "across its "
            f"{len(parts)} parts): {'; '.join(bits)}. By the leaderboard's test, the lab's one rule "
            f"(Holm-adjusted across all {len(board)} models): {', '.join(standing)}.",
            hybrid_vs_parts_p_holm={r["part"]: round(float(r["p (Holm)"]), 4) for _, r in parts.iterrows()},
        )
    if cold is not None:
        cold_findings(cold, f)
    return f


def cold_findings(cold: ExperimentResult, f: Findings) -> None:
    """Warm and cold counts with their reference, and why the cold slice scores what it does."""
    table = cold.leaderboard
    metric = cold.config.evaluation.primary_metric
    if f"{metric} cold" not in table.columns:
        f.add(f"Under `{cold.config.split.name}` every test user has history: there is no cold slice.")
        return
    summary = next(iter(cold.splits.values())).summary()
    warm_n, cold_n = int(table["warm users"].iloc[0]), int(table["cold users"].iloc[0])
    f.add(
        f"Under `{cold.config.split.name}`, {warm_n} test users are warm and {cold_n} cold. Cold means no "
        f"interaction in the data the test model was fitted on (train + validation); against train alone "
        f"{summary['test_users_cold_vs_train']} test users are cold (the count notebook 01 shows for this "
        "split).",
        warm_users=warm_n,
        cold_users=cold_n,
        cold_vs_train=int(summary["test_users_cold_vs_train"]),
    )
    values = table.set_index("model")[f"{metric} cold"]
    fallback = values.get("popularity")
    if fallback is not None:
        same = sorted(m for m, v in values.items() if np.isclose(v, fallback, atol=1e-12))
        others = ", ".join(f"{m} {v:.4f}" for m, v in values.items() if m not in same)
        f.add(
            f"On the cold slice {len(same)} of {len(values)} models score exactly {fallback:.4f}: "
            "the popularity fallback, which every model without side information gives a user it has no "
            f"history for{'; the others: ' + others if others else ''}.",
            cold_fallback_value=round(float(fallback), 4),
            cold_fallback_models=len(same),
        )
        share_cold, share_warm = _popular_share(cold)
        warm_value = table.set_index("model").loc["popularity", f"{metric} warm"]
        f.add(
            f"Cold users' test items are the popular ones: {share_cold:.0%} of their test interactions are "
            f"with the {TOP_ITEMS} most popular training items, against {share_warm:.0%} for warm users. "
            "That "
            f"is why popularity scores {fallback:.4f} on the cold slice and {warm_value:.4f} on the warm one "
            "(warm users' own history is also excluded from their lists).",
            popular_share_cold=round(share_cold, 4),
            popular_share_warm=round(share_warm, 4),
        )


def _popular_share(result: ExperimentResult) -> tuple[float, float]:
    """Share of cold (and warm) test users' test rows whose item is among the most popular items
    of train + validation (the data the test model was fitted on)."""
    split = next(iter(result.splits.values()))
    seen = split.train_valid()
    top = set(seen[C.ITEM].value_counts().index[:TOP_ITEMS])
    known = set(seen[C.USER])
    test = split.test
    popular = test[C.ITEM].isin(top)
    is_cold = ~test[C.USER].isin(known)
    share = lambda mask: float(popular[mask].mean()) if mask.any() else float("nan")  # noqa: E731
    return share(is_cold.to_numpy()), share((~is_cold).to_numpy())


# ---------------------------------------------------------------------------------- tuning


def tuning_findings(result: TuningResult) -> Findings:
    """Notebook 03: the budget, resumed studies, trials that kept the defaults, and whether
    tuning changed any model significantly on test."""
    f = Findings("What we found")
    tuned = [s for s in result.studies if s.tuned]
    trials = result.config.tuning.trials
    pruned = sum(s.counts.get("pruned", 0) for s in tuned)
    f.add(
        f"{len(tuned)} models were tuned with the same budget of {trials} trials each on validation "
        f"{result.metric} ({pruned} trials pruned early).",
        tuned=[s.label for s in tuned],
        trials=trials,
    )
    resumed = [s for s in tuned if s.resumed]
    if resumed:
        bits = ", ".join(f"{s.label} ({s.trials_before} done before, {s.new_trials} new)" for s in resumed)
        f.add(
            f"Resumed from the study storage rather than started afresh: {bits}. Set `fresh = True` for new "
            "studies.",
            new_trials={s.label: s.new_trials for s in tuned},
        )
    defaults = [s.label for s in tuned if s.best_is_default]
    if defaults:
        f.add(
            f"For {', '.join(defaults)} the best trial was trial 0, the untuned params: the search found "
            "nothing better on validation.",
            best_is_default=defaults,
        )
    comparison = result.comparison
    if comparison is not None and len(comparison):
        alpha = 1 - result.config.evaluation.confidence
        family = (
            f"paired test per model on test users, Holm-adjusted across the {len(comparison)} tuned models"
        )
        diffs = "; ".join(
            f"{r['model']} {_signed(r['difference'], r['difference low'], r['difference high'])}, "
            f"p = {p_text(r['p (Holm)'])}"
            for _, r in comparison.iterrows()
        )
        significant = comparison.loc[comparison["p (Holm)"] < alpha, "model"].tolist()
        head = (
            "Tuning changed no model significantly"
            if not significant
            else f"Tuning changed {', '.join(significant)} significantly"
        )
        f.add(
            f"{head} (tuned minus default test {result.metric}; {family}): {diffs}.", significant=significant
        )
    if result.final is not None:
        leaderboard_findings(result.final, f)
    return f


# ---------------------------------------------------------------------------------- export


def export_findings(export: ExportResult, recommendations: dict[str, Any] | None = None) -> Findings:
    """Notebook 04: the champion and why, its test figure, what the registry got."""
    f = Findings("What we found")
    metric = export.metric
    table = export.candidates.set_index("model")
    row = table.loc[export.champion.label]
    f.add(
        f"The champion is **{export.champion.label}** ({export.champion.model_type}), validation {metric} "
        f"{_valid_interval(row, metric)}. "
        f"{export.reason}",
        champion=export.champion.label,
        valid_value=round(float(row[f"valid {metric}"]), 4),
    )
    if not pd.isna(row.get(f"test {metric}")):
        f.add(
            f"Its test {metric} in the experiment was {row[f'test {metric}']:.4f} (reported beside the "
            "choice, "
            "never used to make it).",
            test_value=round(float(row[f"test {metric}"]), 4),
        )
    if export.unchanged:
        f.add(
            f"The champion is unchanged: version {export.version} of `{export.registered_model}` already "
            "serves "
            "this exact state, scoring code and settings, so no version was registered.",
            version=export.version,
            unchanged=True,
        )
    else:
        replaced = f", replacing version {export.previous['version']}" if export.previous else ""
        f.add(
            f"Registered as version {export.version} of `{export.registered_model}`{replaced}; the alias "
            f"`{export.alias}` points to it.",
            version=export.version,
            unchanged=False,
        )
    if recommendations:
        r = recommendations
        f.add(
            f"A typical user (user {r['user']}, {r['history']} items rated, the median) gets {r['rows']} "
            f"personalised recommendations, {r['seen']} of them already seen; an unknown user gets the "
            f"{r['unknown_rows']} most popular items, marked not personalised, whose scores are training "
            "interaction counts.",
            **{f"demo_{k}": v for k, v in r.items()},
        )
    return f


# ----------------------------------------------------------------------------------- audit


def audit_findings(
    dataset: Dataset,
    cold: pd.DataFrame,
    min_rating: float = 4.0,
    hygiene: HygieneAudit | None = None,
    sources: Dataset | None = None,
) -> Findings:
    """Notebook 01: size and quality, tails, time span, relevance, cold users per split, the
    hygiene audit's verdict, and (``sources``) how several sources fit together."""
    f = Findings("What we found")
    d = dataset.describe()
    f.add(
        f"{int(d['interactions'])} interactions of {int(d['users_with_interactions'])} users on "
        f"{int(d['items'])} catalogue items (density {d['density']:.2%}); {int(d['quarantined'])} rows "
        "quarantined.",
        interactions=int(d["interactions"]),
        users=int(d["users_with_interactions"]),
        items=int(d["items"]),
        quarantined=int(d["quarantined"]),
    )
    per_user = audit.per_entity_counts(dataset, C.USER)
    per_item = audit.per_entity_counts(dataset, C.ITEM)
    head = audit.head_share(dataset)
    f.add(
        f"Activity is heavy-tailed: the median user has {per_user.median():g} interactions (the most active "
        f"{per_user.max()}), the median item {per_item.median():g}; the top 20% of items take {head:.0%} of "
        "all interactions.",
        head_share_top20=round(head, 4),
    )
    months = audit.activity_by_month(dataset)
    partial = months[months["partial"]]
    if len(months):
        span = f"{months['month'].iloc[0]} to {months['month'].iloc[-1]}"
        bits = ", ".join(f"{m['month']} ({m['days covered']} days)" for _, m in partial.iterrows())
        f.add(
            f"The data spans {span} ({len(months)} months)"
            + (f"; partial months, not comparable with the others: {bits}." if bits else "."),
            partial_months=[str(m) for m in partial["month"]],
        )
    rel = audit.relevance(dataset, min_rating if C.RATING in dataset.interactions.columns else None)
    if len(rel) > 1:
        share = float(rel["relevant share"].iloc[-1])
        f.add(
            "Every interaction counts as relevant by default (binary relevance); with "
            "`evaluation.min_rating: "
            f"{min_rating:g}` only {share:.0%} would.",
            relevant_share_min_rating=round(share, 4),
        )
    by = cold.set_index("split")
    if "global_temporal" in by.index:
        g = by.loc["global_temporal"]
        warm_splits = [s for s in by.index if by.loc[s, "cold vs train+valid"] == 0]
        f.add(
            f"{', '.join(warm_splits)} leave no test user cold. `global_temporal` leaves "
            f"{int(g['cold vs train'])} of its {int(g['test users'])} test users without a train interaction "
            f"(cold for the validation-time model) and {int(g['cold vs train+valid'])} without a train or "
            "validation interaction (cold for the "
            "refit model that is tested).",
            global_temporal_test_users=int(g["test users"]),
            global_temporal_cold_vs_train=int(g["cold vs train"]),
            global_temporal_cold=int(g["cold vs train+valid"]),
        )
    if hygiene is not None:
        _hygiene_findings(f, hygiene)
    if sources is not None:
        _sources_findings(f, sources)
    return f


def _hygiene_findings(f: Findings, hygiene: HygieneAudit) -> None:
    flagged = [x for x in hygiene.flags if x.status in ("warn", "fail")]
    units = [x.unit[:-1] if x.count == 1 and x.unit.endswith("s") else x.unit for x in flagged]
    listed = "; ".join(f"{x.name}: {x.count:,} {unit} ({x.status})" for x, unit in zip(flagged, units))
    f.add(
        f"The hygiene audit {hygiene.verdict().split(' (')[0]}"
        + (f". Flagged, listed and kept in the data: {listed}." if listed else ": nothing was flagged."),
        audit_failed=len(hygiene.failed),
        audit_warnings=len(hygiene.warnings),
        **{f"audit_{x.name}": x.count for x in flagged},
    )


def _sources_findings(f: Findings, shop: Dataset) -> None:
    ids = shop.report.ids
    events = audit.events_by_source(shop).set_index("event")["interactions"]
    mix = ", ".join(f"{n:,} {e}s" for e, n in events.items())
    merged = sum(len(g) for g in ids.merged_spellings.values())
    f.add(
        f"Several sources ({shop.name}): {mix} joined into one profile per user; "
        f"{ids.users_with_events_not_in_users_table} users with events have no CRM row "
        f"({ids.users_not_in_users_table_accepted} accepted by their source's policy), "
        f"{ids.users_without_events} CRM users have no event, {ids.items_outside_catalogue} item IDs "
        f"outside the catalogue were quarantined, and {merged} IDs written several ways were reconciled.",
        sources_unknown_users=ids.users_with_events_not_in_users_table,
        sources_users_without_events=ids.users_without_events,
        sources_items_outside=ids.items_outside_catalogue,
        sources_reconciled=merged,
    )
