"""Notebook 05's tables and findings: the segmentation study and the models broken down by segment.

Every function takes results the package computed (:class:`personalize.segments.pipeline.SegmentStudy`,
:class:`personalize.recipe.ExperimentResult`) and returns a DataFrame or a
:class:`~personalize.reports.findings.Findings`; nothing here computes a segment or a metric.
"""

from __future__ import annotations

import pandas as pd

from personalize.evaluation.breakdown import format_routing, format_segment_table
from personalize.evaluation.breakdown import plot_by_segment as _plot
from personalize.features.profile_table import BEHAVIOUR, DEMOGRAPHICS, ProfileTable
from personalize.recipe import ExperimentResult
from personalize.reports.findings import Findings
from personalize.reports.views import interval, p_text
from personalize.segments.describe import format_description
from personalize.segments.pipeline import SegmentStudy

MEANINGS = {
    "recency_days": "days from the last interaction to the cut-off (log)",
    "frequency": "interactions (log)",
    "tenure_days": "days from the first to the last interaction (log)",
    "activity_rate": "interactions per week of tenure (log)",
    "rating_mean": "mean rating (the 'monetary' of RFM without prices)",
    "rating_std": "spread of the ratings",
    "session_length": "interactions per session, gaps over 30 minutes (log): bursts",
    "niche_share": "share of interactions on long-tail items",
    "age_bucket": "age band",
    "gender": "gender",
    "occupation": "occupation",
    "region": "first digit of the zip code",
}


def feature_set(profiles: ProfileTable) -> pd.DataFrame:
    """The documented feature set: block, feature, meaning (genre shares and embedding
    dimensions as one row each)."""
    rows = [("behaviour", c, MEANINGS[c]) for c in BEHAVIOUR]
    rows += [("demographics", c, MEANINGS[c]) for c in DEMOGRAPHICS]
    genres = profiles.genre_columns
    if genres:
        rows.append(("taste", f"genre:<g> ({len(genres)})", "share of consumption per genre"))
    dims = profiles.embedding_columns
    if dims:
        rows.append(
            ("taste", f"embedding:<j> ({len(dims)})", "mean sentence embedding of the items consumed")
        )
    return pd.DataFrame(rows, columns=["block", "feature", "meaning"])


def selection(study: SegmentStudy) -> pd.DataFrame:
    """The selection table rounded, the chosen row marked."""
    seg = study.segmentation
    table = seg.selection[
        ["method", "k", "silhouette", "davies_bouldin", "calinski_harabasz", "seed_ari", "bootstrap_ari"]
    ].round(3)
    table.insert(0, "chosen", (table["method"] == seg.model.method) & (table["k"] == seg.k))
    table["chosen"] = table["chosen"].map({True: "<-", False: ""})
    return table


def segments(study: SegmentStudy) -> pd.DataFrame:
    """One row per segment: its name, size, genres, activity, over-represented group, typical items."""
    seg = study.segmentation
    table = format_description(seg.description)
    table["name"] = pd.Series(seg.names).reindex(seg.description.index).to_numpy()
    shown = ["name", "users", "top genres (lift)", "activity", "over-represented", "typical items"]
    return table[[c for c in shown if c in table.columns]].reset_index(drop=True)


def names(study: SegmentStudy) -> pd.Series:
    """Each segment's name, indexed by segment."""
    return pd.Series(study.segmentation.names).sort_index()


def strategy(study: SegmentStudy) -> pd.DataFrame:
    """The content strategy line of each segment."""
    return study.strategy[["name", "strategy"]].reset_index(drop=True)


def classifier(study: SegmentStudy) -> pd.DataFrame:
    """Accuracy and macro-F1 by N (interactions seen) for the classifier and both baselines."""
    s = study.classifier.summary
    table = s.pivot(index="first_n", columns="model", values=["macro_f1", "accuracy"]).round(3)
    table.columns = [f"{metric} {model}" for metric, model in table.columns]
    return table.reset_index().rename(columns={"first_n": "N"})


def by_segment(result: ExperimentResult) -> pd.DataFrame:
    """The per-segment leaderboard, readable."""
    return format_segment_table(result.by_segment)


def plot_by_segment(result: ExperimentResult):
    """Model x segment on the primary metric, with intervals."""
    return _plot(result.by_segment, result.config.evaluation.primary_metric)


def routing(result: ExperimentResult) -> pd.DataFrame:
    """The routed hybrid against the best single model, readable."""
    return format_routing(result.routing)


def cold_slice(result: ExperimentResult, models: list[str] | None = None) -> pd.DataFrame:
    """The primary metric on cold test users (no history the test model knows) per model."""
    primary = result.config.evaluation.primary_metric
    table = result.leaderboard
    if f"{primary} cold" not in table.columns:
        raise ValueError(f"{result.config.split.name}: no cold test users")
    rows = table if models is None else table[table["model"].isin(models)]
    out = rows[["model", f"{primary} cold", "cold users"]].sort_values(f"{primary} cold", ascending=False)
    return out.round(4).reset_index(drop=True)


def segment_findings(study: SegmentStudy, results: dict[str, ExperimentResult]) -> Findings:
    """Sentences with the numbers of the study and of each split's breakdown."""
    f = Findings("What we found")
    seg = study.segmentation
    subsets = study.subsets.set_index("profile")["silhouette"]
    f.add(
        f"{seg.model.method} chose k = {seg.k} ({seg.choice.reason}): "
        f"silhouette {seg.model.silhouette:.3f} on "
        f"the full profile ({subsets.get('behaviour', float('nan')):.3f} on behaviour alone, "
        f"{subsets.get('taste', float('nan')):.3f} on taste alone), bootstrap stability "
        f"{seg.choice.bootstrap_ari:.3f} (target 0.80{'' if seg.choice.stability_met else ', missed'}).",
        k=seg.k,
        silhouette=round(seg.model.silhouette, 4),
        bootstrap_ari=round(seg.choice.bootstrap_ari, 4),
    )
    routes = study.routes.set_index("route")
    if "autoencoder k-means" in routes.index:
        ae = routes.loc["autoencoder k-means"]
        f.add(
            f"The autoencoder route scores silhouette {ae['silhouette']:.3f} in the same profile space "
            f"({ae['margin']:+.3f} against K-Means on the profile; kept only at +0.05): "
            f"{'kept' if bool(ae['kept']) else 'not kept'}.",
            autoencoder_silhouette=round(float(ae["silhouette"]), 4),
        )
    names = "; ".join(f"{seg.names[s]} ({int(n)} users)" for s, n in seg.description["size"].items())
    f.add(f"The segments: {names}.", segments=len(seg.names))
    scores = study.classifier.summary.set_index(["model", "first_n"])
    parts = []
    numbers = {}
    for n in sorted(int(x) for x in study.classifier.summary["first_n"].unique() if x > 0):
        if ("classifier", n) in scores.index:
            value = float(scores.loc[("classifier", n), "macro_f1"])
            parts.append(f"{value:.3f} at N = {n}")
            numbers[f"macro_f1_n{n}"] = round(value, 4)
    demo = (
        float(scores.loc[("demographics", 0), "macro_f1"])
        if ("demographics", 0) in scores.index
        else float("nan")
    )
    f.add(
        "From a user's first N interactions the classifier names their segment with macro-F1 "
        f"{', '.join(parts)}, "
        f"against {demo:.3f} from demographics alone and "
        f"{float(scores.loc[('majority', 0), 'macro_f1']):.3f} for the majority segment.",
        macro_f1_demographics=round(demo, 4),
        **numbers,
    )
    for split, result in results.items():
        if result.routing is None:
            continue
        r = result.routing.iloc[0]
        f.add(
            f"{split}: the segment-routed hybrid scores {r['routed']:.4f} against the best single model "
            f"({r['best single model']}, {r['best single']:.4f}): "
            f"{interval(r['difference'], r['difference low'], r['difference high'])}, p {p_text(r['p'])}"
            f"{'' if r['p'] < 0.05 else ' (routing does not help significantly)'}.",
            **{f"{split}_routing_difference": round(float(r["difference"]), 4)},
        )
        primary = result.config.evaluation.primary_metric
        if f"{primary} cold" in result.leaderboard.columns:
            cold = result.leaderboard.set_index("model")[f"{primary} cold"]
            if "segment_popularity" in cold.index:
                f.add(
                    f"{split}, cold users: segment popularity scores "
                    f"{cold['segment_popularity']:.4f} against "
                    + ", ".join(f"{m} {cold[m]:.4f}" for m in cold.index if m != "segment_popularity")
                    + ".",
                    **{f"{split}_cold_segment_popularity": round(float(cold["segment_popularity"]), 4)},
                )
    return f
