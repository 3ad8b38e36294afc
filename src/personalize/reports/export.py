"""Views of an export for notebook 04: the choice of the champion, a typical user's history
beside their recommendations, and an unknown user's answer."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from personalize.config import ExperimentConfig
from personalize.core import columns as C
from personalize.data.ingest import Dataset
from personalize.recipe import load_experiment, reload
from personalize.reports import views
from personalize.serving.export import ExportResult, recommendations_frame


def champion_table(export: ExportResult) -> pd.DataFrame:
    """Every candidate: validation mean [interval], the paired test of the top two, the test
    figure (reported only), the exported size of the finalists, and the champion."""
    t = export.candidates
    m = export.metric
    out = pd.DataFrame(
        {
            "model": t["model"],
            "type": t["type"],
            f"valid {m}": [
                views.interval(a, b, c)
                for a, b, c in zip(t[f"valid {m}"], t[f"valid {m} low"], t[f"valid {m} high"])
            ],
            "p vs leader": t["p vs leader"].map(views.p_text),
            f"test {m}": t[f"test {m}"].map(lambda v: "-" if pd.isna(v) else f"{v:.4f}"),
            "state MB": t["state MB"].map(lambda v: "-" if pd.isna(v) else f"{v:.1f}"),
            "exportable": t["exportable"].map({True: "yes", False: "no"}),
            "champion": t["champion"].map({True: "yes", False: ""}),
        }
    )
    return out.sort_values(f"valid {m}", ascending=False, kind="stable").reset_index(drop=True)


def typical_user(dataset: Dataset) -> Any:
    """The user with the median number of interactions (ties: the lowest ID)."""
    counts = dataset.interactions.groupby(C.USER).size().sort_index()
    median = counts.median()
    target = counts.iloc[(counts - median).abs().argsort(kind="stable")[:1]].index[0]
    return target.item() if isinstance(target, np.generic) else target


def history(dataset: Dataset, user: Any, n: int = 10) -> pd.DataFrame:
    """The user's last ``n`` interactions (latest first), with titles and ratings."""
    inter = dataset.interactions
    rows = inter[inter[C.USER] == user].sort_values([C.TIMESTAMP, C.ITEM], ascending=False).head(n)
    titles = dataset.items.set_index(C.ITEM)[C.TITLE] if C.TITLE in dataset.items.columns else None
    out = pd.DataFrame({"when (UTC)": rows[C.TIMESTAMP].dt.strftime("%Y-%m-%d"), C.ITEM: rows[C.ITEM]})
    if titles is not None:
        out["title"] = rows[C.ITEM].map(titles).to_numpy()
    if C.RATING in rows.columns:
        out[C.RATING] = rows[C.RATING].to_numpy()
    return out.reset_index(drop=True)


def recommend(model, dataset: Dataset, requests: list[dict], k: int) -> pd.DataFrame:
    """The served model's answer (``model.predict``) as readable rows with titles, the score
    column split by what it is (model score or popularity count)."""
    frame = recommendations_frame(model.predict(requests, params={"k": k}))
    titles = dataset.items.set_index(C.ITEM)[C.TITLE] if C.TITLE in dataset.items.columns else None
    return views.recommendations(frame, titles)


def demo_numbers(dataset: Dataset, user: Any, known: pd.DataFrame, unknown: pd.DataFrame) -> dict[str, Any]:
    """What the demo shows, as numbers: the user, their history length, rows, seen items."""
    seen = set(dataset.interactions.loc[dataset.interactions[C.USER] == user, C.ITEM])
    return {
        "user": user,
        "history": len(seen),
        "rows": len(known),
        "seen": len(seen & set(known[C.ITEM])),
        "personalised": bool(known[C.PERSONALISED].all()),
        "unknown_rows": len(unknown),
        "unknown_personalised": bool(unknown[C.PERSONALISED].any()),
    }


def notebook_config(
    experiment: str,
    overrides: list[str],
    models: list[dict] | None = None,
    sample_users: int | None = None,
    registered_model: str | None = None,
) -> ExperimentConfig:
    """Notebook 04's experiment: the file with ``export.enabled``, optionally other models, a
    sample of users and another registry name."""
    extra = [*overrides, "export.enabled=true"]
    if sample_users:
        extra += [f"data.sample_users={sample_users}", "data.write_processed=false"]
    if registered_model:
        extra.append(f"export.registered_model={registered_model}")
    config = load_experiment(experiment, extra)
    return reload(config, [f"models={json.dumps(models)}"]) if models else config
