"""Reports across runs and experiments of the store, built from ``mlflow.search_runs``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from personalize.core.errors import ConfigError
from personalize.tracking.store import KIND_TAG, PARENT_TAG, _client, metric_key, tracking_uri


def cross_leaderboard(
    experiments: list[str] | None = None,
    metric: str = "ndcg@10",
    part: str = "test",
    uri: str | None = None,
    top: int | None = None,
) -> pd.DataFrame:
    """Every finished model run with ``<part>_<metric>`` in the given MLflow experiments (all by
    default), best first, one row each: experiment, parent run (the experiment or final
    comparison it belongs to), tuning session (when it is one's final comparison), model, type,
    split, protocol mode, data fingerprint, the metric with its 95% bootstrap interval, the
    p-value against the best model of its own run, fit seconds, start time and run IDs.

    Rows from different splits, modes or data are not comparable: filter on those columns
    before reading ranks across experiments.
    """
    import mlflow

    uri = uri or tracking_uri()
    client = _client(uri)
    if experiments:
        found = []
        for name in experiments:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                known = sorted(e.name for e in client.search_experiments())
                raise ConfigError(f"no MLflow experiment named {name!r} in {uri}; experiments: {known}")
            found.append(exp)
    else:
        found = client.search_experiments()
    key = f"metrics.{part}_{metric_key(metric)}"
    columns = [
        "experiment",
        "run",
        "session",
        "model",
        "type",
        "split",
        "mode",
        "data",
        metric,
        f"{metric} low",
        f"{metric} high",
        "p vs best",
        "fit s",
        "started",
        "run_id",
        "parent_run_id",
    ]
    if not found:
        return pd.DataFrame(columns=columns)
    runs = mlflow.search_runs(
        experiment_ids=[e.experiment_id for e in found],
        filter_string=f"tags.`{KIND_TAG}` = 'model' and attributes.status = 'FINISHED'",
        output_format="pandas",
        max_results=50_000,
    )
    if runs.empty or key not in runs.columns:
        return pd.DataFrame(columns=columns)
    runs = runs[runs[key].notna()]
    parent_col = f"tags.{PARENT_TAG}"
    parents = _runs_by_id(client, runs.get(parent_col, pd.Series(dtype=object)).dropna().unique())
    grand = _runs_by_id(
        client, [p.data.tags.get(PARENT_TAG) for p in parents.values() if p.data.tags.get(PARENT_TAG)]
    )
    names = {e.experiment_id: e.name for e in found}

    def col(name: str) -> pd.Series:
        return runs[name] if name in runs.columns else pd.Series(np.nan, index=runs.index)

    parent_ids = col(parent_col)
    parent = [parents.get(p) for p in parent_ids]
    session = [grand.get(p.data.tags.get(PARENT_TAG)) if p is not None else None for p in parent]
    table = pd.DataFrame(
        {
            "experiment": runs["experiment_id"].map(names),
            "run": [p.info.run_name if p is not None else None for p in parent],
            "session": [
                s.info.run_name if s is not None and s.data.tags.get(KIND_TAG) == "session" else None
                for s in session
            ],
            "model": col("tags.mlflow.runName"),
            "type": col("tags.model_type"),
            "split": col("params.split"),
            "mode": col("params.protocol_mode"),
            "data": [
                p.data.tags.get("dataset_fingerprint", "")[:12] if p is not None else None for p in parent
            ],
            metric: runs[key],
            f"{metric} low": col(f"{key}_ci_low"),
            f"{metric} high": col(f"{key}_ci_high"),
            "p vs best": col("metrics.p_vs_best"),
            "fit s": col("metrics.fit_seconds"),
            "started": runs["start_time"],
            "run_id": runs["run_id"],
            "parent_run_id": parent_ids,
        }
    )
    table = table.sort_values(metric, ascending=False, kind="stable").reset_index(drop=True)
    return table.head(top) if top else table


def _runs_by_id(client, run_ids) -> dict:
    out = {}
    for run_id in run_ids:
        if not isinstance(run_id, str) or not run_id:
            continue
        try:
            out[run_id] = client.get_run(run_id)
        except Exception:  # deleted parent
            continue
    return out


def format_cross_leaderboard(table: pd.DataFrame, metric: str = "ndcg@10", digits: int = 4) -> pd.DataFrame:
    """Readable copy: 'mean [low, high]', p-values in short form, IDs shortened."""
    out = table.drop(columns=[f"{metric} low", f"{metric} high", "parent_run_id"], errors="ignore").copy()
    out[metric] = [
        f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
        for m, lo, hi in zip(table[metric], table[f"{metric} low"], table[f"{metric} high"])
    ]
    out["p vs best"] = ["best" if pd.isna(p) else f"{p:.2g}" for p in table["p vs best"]]
    out["fit s"] = [f"{v:.2f}" for v in table["fit s"]]
    out["started"] = pd.to_datetime(table["started"]).dt.strftime("%Y-%m-%d %H:%M")
    out["run_id"] = table["run_id"].str[:8]
    return out.fillna("")
