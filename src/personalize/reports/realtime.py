"""Notebook 06's tables, figures and findings: the prequential replay, one user's list changing
event by event, and fold-in latency in process.

Nothing here computes a metric: the replay comes from :mod:`personalize.evaluation.replay`
(through :func:`personalize.recipe.replay.run_replay`), the answers from the shared scoring code
(:class:`personalize.scoring.TopKScorer` with ``recent`` events, the path the served model takes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from personalize import scoring
from personalize.core import columns as C
from personalize.evaluation import replay as R
from personalize.models.base import Recommender
from personalize.models.registry import create_model
from personalize.recipe.replay import ReplayResult
from personalize.reports.findings import Findings
from personalize.reports.views import interval, p_text

STRATEGY_NAMES = {
    "static": "static",
    "online_popularity": "online popularity",
    "foldin": "fold-in",
    "retrain": "periodic retrain",
    "foldin_popularity": "fold-in + online popularity",
}


def _rows(result: ReplayResult, metric: str = "ndcg", per: str = "user") -> pd.DataFrame:
    s = result.study.summary
    return s[(s["metric"] == metric) & (s["per"] == per)]


def strategies(result: ReplayResult, metric: str = "ndcg") -> pd.DataFrame:
    """One row per (model, strategy): the per-user mean of ``metric`` with its interval overall,
    warm and cold, and the Holm-adjusted p against online popularity (per-user, paired)."""
    k = result.study.config.k
    out: dict[tuple[str, str], dict] = {}
    for r in _rows(result, metric).itertuples(index=False):
        row = out.setdefault(
            (r.model, r.strategy), {"model": r.model, "strategy": STRATEGY_NAMES.get(r.strategy, r.strategy)}
        )
        name = f"{metric.upper()}@{k} per user" + ("" if r.slice == "all" else f", {r.slice}")
        row[name] = interval(r.mean, r.low, r.high)
        row[f"users{'' if r.slice == 'all' else ' ' + r.slice}"] = r.users
        if not pd.isna(r.p_holm):
            row[f"p (Holm){'' if r.slice == 'all' else ', ' + r.slice}"] = p_text(r.p_holm)
    return pd.DataFrame(list(out.values()))


def per_event(result: ReplayResult) -> pd.DataFrame:
    """HR@K and NDCG@K per event (all relevant test events) with intervals, per (model, strategy)."""
    s = result.study.summary
    k = result.study.config.k
    rows = s[(s["per"] == "event") & (s["slice"] == "all")]
    table = rows.pivot_table(
        index=["model", "strategy"], columns="metric", values=["mean", "low", "high"], sort=False
    )
    out = []
    for (model, strategy), r in table.iterrows():
        out.append(
            {
                "model": model,
                "strategy": STRATEGY_NAMES.get(strategy, strategy),
                f"HR@{k} per event": interval(r[("mean", "hr")], r[("low", "hr")], r[("high", "hr")]),
                f"NDCG@{k} per event": interval(r[("mean", "ndcg")], r[("low", "ndcg")], r[("high", "ndcg")]),
            }
        )
    return pd.DataFrame(out)


def choices(result: ReplayResult) -> pd.DataFrame:
    """The settings chosen on the validation period (never on test)."""
    sel = result.study.selection
    shown = sel[sel["chosen"]][["model", "strategy", "setting", "valid_ndcg_user"]].copy()
    shown["strategy"] = shown["strategy"].map(lambda s: STRATEGY_NAMES.get(s, s))
    return shown.round(4).reset_index(drop=True)


def plot_strategies(result: ReplayResult):
    return R.plot_strategies(result.study.summary, result.study.config.k)


def plot_over_time(result: ReplayResult):
    return R.plot_over_time(result.study.results, result.study.config.window_days, result.study.config.k)


# --------------------------------------------------------------------- one user, event by event


@dataclass
class Story:
    """One user's top-k after each of their events (replayed from the cut, folded in)."""

    user: object
    warm: bool
    table: pd.DataFrame  # step, event (the item just consumed), top-k titles, next item hit

    def _repr_html_(self) -> str:
        return self.table.to_html(index=False)


def _scorer(model: Recommender) -> scoring.TopKScorer:
    ctx = scoring.Context.build(model.seen_, model.popularity_, model.exclude_)
    return scoring.TopKScorer(model.scorer(), model.index_.users, model.index_.items, ctx)


def user_story(
    result: ReplayResult, model_type: str = "ease", params: dict | None = None, steps: int = 6, k: int = 5
) -> Story:
    """Fit ``model_type`` on the rows before the test cut and follow the first test user with at
    least ``steps`` events and no history at the cut (a new user: the fallback first, personal
    after their first event): after each event, their top-``k`` with it folded in."""
    study, stream = (
        result.study,
        R.Stream.build(
            result.dataset.interactions, result.dataset.users, result.dataset.items, result.dataset.events
        ),
    )
    cut = study.test_start
    model = create_model(model_type, params or {}, result.config.seeds[0]).fit(stream.fit_data(cut))
    served = _scorer(model)
    test = stream.rows.iloc[cut:]
    known = set(stream.rows[C.USER].iloc[:cut])
    counts = test.groupby(C.USER, sort=False).size()
    candidates = [u for u in counts.index if counts[u] >= steps + 1 and u not in known]
    if not candidates:
        raise ValueError(f"no test user without history has {steps + 1} events")
    user = candidates[0]
    events = test[test[C.USER] == user].head(steps + 1)
    titles = result.dataset.items.set_index(C.ITEM)[C.TITLE] if C.TITLE in result.dataset.items else None
    name = (lambda i: str(titles.get(i, i))) if titles is not None else str
    rows = []
    for step in range(steps + 1):
        recent = [(i, None) for i in events[C.ITEM].iloc[:step]]
        answer = served.recommend([user], k=k, recent=[recent])
        top = answer[C.ITEM].tolist()
        nxt = events[C.ITEM].iloc[step]
        rows.append(
            {
                "after": "no event yet" if step == 0 else name(events[C.ITEM].iloc[step - 1]),
                "personalised": bool(answer["personalised"].iloc[0]),
                f"top {k}": "; ".join(name(i) for i in top),
                "next item in the list": nxt in top,
                "last item left out": step == 0 or events[C.ITEM].iloc[step - 1] not in top,
            }
        )
    return Story(user, False, pd.DataFrame(rows))


# -------------------------------------------------------------------------------- latency


def foldin_latency(
    result: ReplayResult, models: tuple[str, ...] = ("ease", "als"), users: int = 300, seed: int = 0
) -> pd.DataFrame:
    """Wall-clock p50 / p95 (ms) of one user's top-10 in process with one new event folded in,
    against the same request without it, for ``users`` known users with their full history
    (models fitted on all the data; one user per call). ``benchmarks/bench_foldin.py`` is the
    full benchmark."""
    d = result.dataset
    stream = R.Stream.build(d.interactions, d.users, d.items, d.events)
    rng = np.random.default_rng(seed)
    out = []
    for model_type in models:
        params = next((s.params for s in result.config.models if s.type == model_type), {})
        model = create_model(model_type, params, result.config.seeds[0]).fit(stream.fit_data(len(stream)))
        served = _scorer(model)
        ids = served.users.to_numpy()
        chosen = rng.choice(len(ids), size=min(users, len(ids)), replace=False)
        seen = served.ctx.excluded
        timings = {"with fold-in": [], "without": []}
        for u in chosen:
            unseen = np.setdiff1d(
                np.arange(served.n_items), seen.indices[seen.indptr[u] : seen.indptr[u + 1]]
            )
            item = served.items[int(rng.choice(unseen))]
            for label, recent in (("with fold-in", [[(item, None)]]), ("without", None)):
                t0 = time.perf_counter()
                served.recommend_columns([ids[u]], 10, recent=recent)
                timings[label].append((time.perf_counter() - t0) * 1000)
        for label, values in timings.items():
            v = np.asarray(values[10:])  # after a short warm-up
            out.append(
                {
                    "model": model_type,
                    "request": label,
                    "users": len(v),
                    "p50 ms": round(float(np.percentile(v, 50)), 3),
                    "p95 ms": round(float(np.percentile(v, 95)), 3),
                }
            )
    return pd.DataFrame(out)


# -------------------------------------------------------------------------------- findings


def realtime_findings(
    result: ReplayResult, story: Story | None = None, latency: pd.DataFrame | None = None
) -> Findings:
    """Sentences with the numbers: the best online strategy against static and online
    popularity, warm and cold; the story; the latency."""
    f = Findings("What we found")
    rows = _rows(result)
    k = result.study.config.k
    base = rows[(rows["strategy"] == "online_popularity")]
    for slice_name in ("all", "warm", "cold"):
        part = rows[rows["slice"] == slice_name]
        if part.empty:
            continue
        pop = base[base["slice"] == slice_name]
        folded = part[part["strategy"].isin(["foldin", "foldin_popularity"])].sort_values(
            "mean", ascending=False
        )
        if folded.empty or pop.empty:
            continue
        best = folded.iloc[0]
        static = part[(part["strategy"] == "static") & (part["model"] == best["model"])]
        pop_mean = float(pop["mean"].iloc[0])
        verdict = (
            "significantly above"
            if best["p_holm"] < 0.05 and best["mean"] > pop_mean
            else "significantly below"
            if best["p_holm"] < 0.05
            else "not significantly different from"
        )
        where = "all test users" if slice_name == "all" else f"{slice_name} users"
        snapshot = float(static["mean"].iloc[0])
        f.add(
            f"{where.capitalize()} ({int(best['users'])}): the best fold-in strategy, {best['model']} "
            f"{STRATEGY_NAMES.get(best['strategy'], best['strategy'])}, scores "
            f"NDCG@{k} {best['mean']:.4f} per user against {pop_mean:.4f} for online popularity "
            f"({verdict} it, p {p_text(best['p_holm'])} Holm) and {snapshot:.4f} for its static snapshot.",
            **{
                f"{slice_name}_foldin": round(float(best["mean"]), 4),
                f"{slice_name}_popularity": round(pop_mean, 4),
            },
        )
    events = result.study.summary
    ev = events[(events["per"] == "event") & (events["slice"] == "all") & (events["metric"] == "hr")]
    if not ev.empty:
        top = ev.sort_values("mean", ascending=False).iloc[0]
        pop_hr = float(ev[ev["strategy"] == "online_popularity"]["mean"].iloc[0])
        label = f"{top['model']} {STRATEGY_NAMES.get(top['strategy'], top['strategy'])}"
        f.add(
            f"Per event, {label} has the next item in its top {k} {top['mean']:.1%} of the time "
            f"(online popularity {pop_hr:.1%}).",
            best_hr_event=round(float(top["mean"]), 4),
        )
    retrain = rows[(rows["strategy"] == "retrain") & (rows["slice"] == "all")]
    static = rows[(rows["strategy"] == "static") & (rows["slice"] == "all")]
    if not retrain.empty and not static.empty:
        gain = retrain.set_index("model")["mean"] - static.set_index("model")["mean"]
        f.add(
            f"Periodic retraining moves NDCG@{k} per user by at most {gain.abs().max():.4f} against the "
            "static snapshot: between refits it cannot use a user's new events.",
            retrain_gain=round(float(gain.abs().max()), 4),
        )
    if story is not None:
        t = story.table
        first = "personalised" if t["personalised"].iloc[0] else "on the fallback"
        f.add(
            f"A new user starts {first}, is personalised after their first event "
            f"({bool(t['personalised'].iloc[1])}), and each consumed item leaves their list at once "
            f"({bool(t['last item left out'].all())}).",
            story_personalised_after_first=bool(t["personalised"].iloc[1]),
        )
    if latency is not None and not latency.empty:
        folded = latency[latency["request"] == "with fold-in"].set_index("model")["p95 ms"]
        f.add(
            "In process, fold-in plus top-10 takes "
            + ", ".join(f"{m} {v:.2f} ms" for m, v in folded.items())
            + " at p95 (one user per call; the served model adds the Redis read and HTTP).",
            **{f"latency_p95_{m}": float(v) for m, v in folded.items()},
        )
    return f
