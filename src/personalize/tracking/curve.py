"""The privacy-utility curve in MLflow: one run of kind ``privacy_curve`` holding the whole
curve, with the experiment run of each unit (user-level, event-level) nested under it.

The curve run holds the resolved config (params and ``config.yaml``), the protocol, git state and
package versions, ``privacy/curve.csv`` (every column of the table, for notebooks to load),
``privacy/curve.md`` (the table people read), ``plots/privacy_curve.png`` and, per row,
``<model>/<point>/test_<metric>`` and ``.../attack_auc`` metrics for side-by-side comparison in
the UI. Every model run below it carries its guarantee as ``privacy.*`` params and, for DP-SGD,
``dp_epsilon_spent`` per epoch on its seed runs.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from personalize.core.errors import PersonalizeError
from personalize.core.metrics import MetricName
from personalize.evaluation.privacy_curve import format_curve, plot_curve
from personalize.evaluation.protocol import protocol_text
from personalize.tracking import artifacts
from personalize.tracking.artifacts import free
from personalize.tracking.store import (
    KIND_TAG,
    RunHandle,
    Tracker,
    _client,
    git_state,
    package_versions,
    tracking_uri,
)

KIND = "privacy_curve"
CURVE_TABLE = "privacy/curve.csv"

artifacts.declare(
    __name__,
    free("config.yaml", "the resolved experiment config"),
    free("protocol.md", "the evaluation protocol's text"),
    free(CURVE_TABLE, "metrics and privacy budgets per model and curve point"),
    free("privacy/curve.md", "metrics and privacy budgets per model and curve point"),
    free("plots/privacy_curve.png", "metrics per model and privacy budget"),
)


class CurveLogger:
    """Starts the curve's run (the parent of each unit's experiment run) and fills it at the end."""

    def __init__(self, config):
        self.config = config
        self.tracker = Tracker(config.tracking.experiment or config.name, config.tracking.uri)
        self.run: RunHandle = self.tracker.start(
            config.name, KIND, tags={"description": config.description, "split": config.split.name}
        )
        self.run.log_params(
            {
                "privacy_curve": config.privacy_curve.model_dump(mode="json"),
                "split": config.split.model_dump(mode="json"),
                "seeds": config.seeds,
                "models": [m.label for m in config.models],
                "training": config.training.model_dump(mode="json"),
                "primary_metric": config.evaluation.primary_metric,
                **git_state(),
                "version": package_versions(),
            }
        )
        self.run.log_text(config.to_yaml(), "config.yaml")
        self.run.log_text(protocol_text(), "protocol.md")

    def finish(self, table: pd.DataFrame, metric: str, fingerprint: str) -> None:
        run = self.run
        run.set_tags({"dataset_fingerprint": fingerprint})
        run.log_table(table, CURVE_TABLE)
        run.log_table(format_curve(table, metric), "privacy/curve.md")
        fig = plot_curve(table, metric, title=f"{self.config.name}: privacy against accuracy (test)")
        run.log_figure(fig, "plots/privacy_curve.png")
        key = MetricName.parse(metric).prefixed("test")
        metrics: dict[str, float] = {}
        for _, row in table.iterrows():
            name = re.sub(r"[^0-9A-Za-z_./ -]+", "_", f"{row['model']}/{row['point']}")
            metrics[f"{name}/{key}"] = row[metric]
            if not pd.isna(row["attack AUC"]):
                metrics[f"{name}/attack_auc"] = row["attack AUC"]
            if not pd.isna(row.get("epsilon total", float("nan"))):
                metrics[f"{name}/epsilon_total"] = row["epsilon total"]
        run.log_metrics(metrics)
        self.tracker.end(run)

    def fail(self) -> None:
        self.tracker.end(self.run, "FAILED")


@dataclass
class CurveRecord:
    """A logged curve read back: its table (every column of ``privacy/curve.csv``), the run and
    the config it ran with."""

    table: pd.DataFrame
    run_id: str
    experiment: str
    started: pd.Timestamp
    config_yaml: str
    metric: str
    fingerprint: str


def latest_curve(experiment: str, uri: str | None = None) -> CurveRecord:
    """The newest finished ``privacy_curve`` run of ``experiment`` in the store at ``uri``
    (PersonalizeError, saying how to make one, when there is none)."""
    uri = uri or tracking_uri()
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    runs = []
    if found is not None:
        runs = client.search_runs(
            [found.experiment_id],
            f"attributes.status = 'FINISHED' and tags.`{KIND_TAG}` = '{KIND}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    if not runs:
        raise PersonalizeError(
            f"no finished privacy curve in MLflow experiment {experiment!r} of {uri}; run "
            "`personalize run experiments/ml100k_privacy.yaml` first"
        )
    run = runs[0]
    with tempfile.TemporaryDirectory() as tmp:
        table = pd.read_csv(client.download_artifacts(run.info.run_id, CURVE_TABLE, tmp))
        config_yaml = Path(client.download_artifacts(run.info.run_id, "config.yaml", tmp)).read_text()
    metric = str(MetricName.parse(run.data.params.get("primary_metric", "ndcg@10")))
    return CurveRecord(
        table=table,
        run_id=run.info.run_id,
        experiment=experiment,
        started=pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
        config_yaml=config_yaml,
        metric=metric,
        fingerprint=run.data.tags.get("dataset_fingerprint", ""),
    )
