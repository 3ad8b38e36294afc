"""Logging an experiment in the protocol's hierarchy: parent run -> model runs -> seed runs.

What is logged (so that anyone can recompute any metric from the store):

- parent run: the resolved config (params and ``config.yaml``), dataset fingerprint, ingestion
  report and quarantine, git commit, package versions, the protocol text, the record of processing
  and the notice to end users (``privacy/record.md``, ``privacy/notice.md``), the split itself
  (``split/seed=<s>/{train,valid,test}.parquet``), the leaderboard (CSV and Markdown), every
  metric at every K (``metrics.csv``) and the NDCG@K / MAP@K plot;
- model run: its config, the mean over seeds of every ``valid_*`` / ``test_*`` metric, bootstrap
  interval bounds (``*_ci_low`` / ``*_ci_high``), std over seeds, the paired-test p-value against
  the best model, ``fit_seconds`` / ``eval_seconds``, warm / cold slices where there are cold
  users, and its top-K recommendations for every test user plus per-user metrics (Parquet);
- seed run: the seed, the selected params (best epoch), per-seed metrics, and for iterative
  models ``train_loss`` and ``valid_ndcg_at_10`` per epoch as step metrics (learning curves).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from personalize.core.metrics import MetricName, is_metric_name
from personalize.data.records import NOTICE_ARTIFACT, RECORD_ARTIFACT, privacy_notice, record_of_processing
from personalize.evaluation.breakdown import format_routing, format_segment_table, plot_by_segment
from personalize.evaluation.leaderboard import ModelOutcome, SeedOutcome, format_leaderboard
from personalize.evaluation.plots import learning_curve, metric_vs_k
from personalize.evaluation.privacy_curve import total_guarantee
from personalize.evaluation.protocol import protocol_text
from personalize.evaluation.stats import bootstrap_ci
from personalize.tracking import artifacts
from personalize.tracking.artifacts import free, per_user
from personalize.tracking.store import RunHandle, Tracker, git_state, package_versions

VALID_PER_USER = "per_user_metrics_valid.parquet"  # what the champion's paired test reads back

artifacts.declare(
    __name__,
    free("config.yaml", "the resolved experiment config"),
    free("protocol.md", "the evaluation protocol's text"),
    free(RECORD_ARTIFACT, "the record of processing: data categories, purposes, stores"),
    free(NOTICE_ARTIFACT, "the notice to end users"),
    per_user("data/ingest_report.json", "user IDs written several ways (merged spelling groups)"),
    free("data/id_consistency.md", "counts of the ID checks (the user groups are in ingest_report.json)"),
    per_user("data/quarantine.parquet", "quarantined rows: user IDs, values and raw lines"),
    per_user("split/*.parquet", "each user's train, validation and test interactions"),
    per_user("data/audit.md", "the users and rows each audit check flags"),
    free("data/audit/*.png", "figures of the audit checks: distributions and counts"),
    per_user("data/audit_flags.parquet", "every flagged row with its user ID"),
    free("grid.csv", "the validation metric of each grid point"),
    per_user("recommendations.parquet", "each test user's top-K"),
    per_user("per_user_metrics.parquet", "each test user's metrics"),
    per_user(VALID_PER_USER, "each validation user's metrics"),
    free("plots/learning_curve_seed*.png", "training loss and validation metric per epoch"),
    free("leaderboard.csv", "metrics per model"),
    free("leaderboard.md", "metrics per model"),
    free("metrics.csv", "metrics per model, K and slice with intervals over users"),
    free("plots/ndcg_map_vs_k*.png", "metrics per model and K"),
    free("by_segment/leaderboard.csv", "metrics per model and segment"),
    free("by_segment/leaderboard.md", "metrics per model and segment"),
    free("by_segment/models_by_segment.png", "metrics per model and segment"),
    free("by_segment/names.json", "segment names"),
    free("by_segment/routing.csv", "the component each segment is routed to"),
    free("by_segment/routing.md", "the component each segment is routed to"),
)


def result_metrics(prefix: str, summary: dict[str, float]) -> dict[str, float]:
    """{'ndcg@10': x} -> {'test_ndcg_at_10': x}."""
    return {MetricName.parse(name).prefixed(prefix): value for name, value in summary.items()}


@dataclass
class SeedRun:
    handle: RunHandle
    tracker: Tracker

    def epoch_callback(self):
        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            self.handle.log_metrics(metrics, step=epoch)

        return on_epoch

    def finish(self, outcome: SeedOutcome) -> None:
        """Per-seed metrics. For iterative models the final validation metrics are logged at
        the best epoch's step, so they sit on the learning curve (no spurious step 0)."""
        h = self.handle
        h.log_params({"selected": outcome.selected_params, "best_epoch": outcome.best_epoch})
        step = outcome.best_epoch if outcome.history else None
        h.log_metrics(
            result_metrics("valid", {**outcome.valid.summary, **outcome.valid.catalogue_metrics}),
            step=step,
        )
        h.log_metrics(
            {
                **result_metrics("test", {**outcome.test.summary, **outcome.test.catalogue_metrics}),
                "fit_seconds": outcome.fit_seconds,
                "refit_seconds": outcome.refit_seconds,
                "eval_seconds": outcome.eval_seconds,
            }
        )
        if outcome.grid:
            h.log_table(pd.DataFrame(outcome.grid), "grid.csv")
        if outcome.privacy:
            h.log_params({"privacy": outcome.privacy})
        for epoch, spent in enumerate(outcome.epsilon_history, start=1):
            h.log_metrics({"dp_epsilon_spent": spent}, step=epoch)
        if outcome.attack is not None:
            h.log_metrics(outcome.attack.metrics())
        if outcome.history:
            monitored = [k for k in outcome.history[-1] if k.startswith("valid_")]
            best = [row for row in outcome.history if row["epoch"] == outcome.best_epoch]
            if monitored and best:
                h.log_metrics(
                    {
                        "best_epoch": outcome.best_epoch,
                        f"best_{monitored[0]}": best[0][monitored[0]],
                    }
                )
        self.tracker.end(h)

    def fail(self) -> None:
        self.tracker.end(self.handle, "FAILED")


class ExperimentLogger:
    """Creates and fills the runs of one experiment as the recipe goes."""

    def __init__(self, config, dataset, prepared: dict, parent: RunHandle | None = None):
        self.config = config
        self.tracker = Tracker(config.tracking.experiment or config.name, config.tracking.uri)
        self.parent = self.tracker.start(
            config.name, "experiment", parent=parent, tags={"description": config.description}
        )
        self._model_runs: dict[str, RunHandle] = {}
        self._log_start(dataset, prepared)

    # ---------------------------------------------------------------- parent run: inputs

    def _log_start(self, dataset, prepared: dict) -> None:

        cfg = self.config
        p = self.parent
        p.log_params(
            {
                "data": {
                    **cfg.data.model_dump(mode="json"),
                    "name": dataset.name,
                    "fingerprint": dataset.fingerprint,
                    **(dataset.events.describe() if dataset.events is not None else {}),
                },
                "split": next(iter(prepared.values())).split.params,
                "evaluation": cfg.evaluation.model_dump(mode="json"),
                "training": cfg.training.model_dump(mode="json"),
                "seeds": cfg.seeds,
                "models": [m.label for m in cfg.models],
                **git_state(),
                "version": package_versions(),
            }
        )
        p.set_tags({"dataset_fingerprint": dataset.fingerprint, "split": cfg.split.name})
        p.log_text(cfg.to_yaml(), "config.yaml")
        p.log_text(protocol_text(), "protocol.md")
        p.log_text(record_of_processing(cfg), RECORD_ARTIFACT)
        p.log_text(privacy_notice(cfg), NOTICE_ARTIFACT)
        p.log_dict(
            {
                "name": dataset.name,
                "fingerprint": dataset.fingerprint,
                "tables": dataset.report.to_dict(),
                "ids": dataset.report.ids.to_dict(),
                "describe": dataset.describe(),
            },
            "data/ingest_report.json",
        )
        p.log_text(
            dataset.report.ids.summary(user_examples=False).to_markdown(index=False), "data/id_consistency.md"
        )
        if len(dataset.quarantine):
            p.log_table(dataset.quarantine, "data/quarantine.parquet")
        counts = {}
        for table, rep in dataset.report.tables.items():
            role = re.sub(r"[^\w.\-/ ]", "_", table)
            counts.update(
                {
                    f"data_{role}_input_rows": rep.input_rows,
                    f"data_{role}_accepted": rep.accepted,
                    f"data_{role}_quarantined": rep.quarantined,
                }
            )
        counts.update({f"data_ids_{k}": v for k, v in dataset.report.ids.counts().items()})
        p.log_metrics(counts)
        for seed, ready in prepared.items():
            split = ready.split
            summary = split.summary()
            p.log_metrics(
                {f"split_{k}" + (f"_seed{seed}" if len(prepared) > 1 else ""): v for k, v in summary.items()}
            )
            if cfg.tracking.log_split:
                folder = f"split/seed={seed}" if split.stochastic else "split"
                for part in ("train", "valid", "test"):
                    p.log_table(getattr(split, part).reset_index(names="row"), f"{folder}/{part}.parquet")

    def log_audit(self, audit) -> None:
        """The data hygiene audit (:class:`~personalize.data.hygiene.HygieneAudit`) on the parent
        run: its config as params, ``audit.metrics()`` as metrics, ``data/audit.md``, the figures
        under ``data/audit/`` and every flagged row in ``data/audit_flags.parquet``."""
        p = self.parent
        p.log_params({"audit": audit.config.model_dump(mode="json")})
        p.log_metrics(audit.metrics())
        p.set_tags({"audit": audit.verdict()})
        p.log_text(audit.to_markdown(), "data/audit.md")
        for name, fig in audit.figures().items():
            p.log_figure(fig, f"data/audit/{name}")
            plt.close(fig)
        p.log_table(audit.flagged_rows(), "data/audit_flags.parquet")

    # ------------------------------------------------------------------- model and seeds

    def start_model(self, spec, cls) -> RunHandle:
        handle = self.tracker.start(
            spec.label,
            "model",
            parent=self.parent,
            tags={"model_type": spec.type, "family": cls.family},
        )
        defaults = cls.Config().model_dump(mode="json") if not _required_fields(cls.Config) else {}
        handle.log_params(
            {
                "model": {"type": spec.type, "family": cls.family, "label": spec.label},
                "params": {**defaults, **spec.params},
                "split": self.config.split.name,
                "protocol_mode": self.config.evaluation.mode,
                "ks": self.config.evaluation.ks,
            }
        )
        self._model_runs[spec.label] = handle
        return handle

    def start_seed(self, model_run: RunHandle, spec, seed: int) -> SeedRun:
        handle = self.tracker.start(
            f"{spec.label} seed={seed}", "seed", parent=model_run, tags={"model_type": spec.type}
        )
        handle.log_params({"seed": seed})
        return SeedRun(handle, self.tracker)

    def finish_model(self, handle: RunHandle, outcome: ModelOutcome) -> None:
        outcome.run_id = handle.run_id
        ev = self.config.evaluation
        metrics = {
            **result_metrics("valid", outcome.summary("valid")),
            **result_metrics("test", outcome.summary("test")),
            "fit_seconds": outcome.mean_seconds("fit_seconds") + outcome.mean_seconds("refit_seconds"),
            "eval_seconds": outcome.mean_seconds("eval_seconds"),
        }
        if len(outcome.seeds) > 1:
            metrics.update(
                {k + "_std": v for k, v in result_metrics("test", outcome.seed_std("test")).items()}
            )
        per_user = outcome.per_user("test")
        metric_cols = [MetricName.parse(c) for c in per_user.columns if is_metric_name(c)]
        for col in metric_cols:
            lo, hi = bootstrap_ci(
                per_user[str(col)].to_numpy(dtype=float),
                ev.bootstrap_resamples,
                ev.confidence,
                self.config.seeds[0],
            )
            key = col.prefixed("test")
            metrics[key + "_ci_low"], metrics[key + "_ci_high"] = lo, hi
        warm = per_user["warm"].to_numpy(dtype=bool)
        if (~warm).any():
            for name, mask in (("warm", warm), ("cold", ~warm)):
                metrics[f"n_test_users_{name}"] = int(mask.sum())
                for col in metric_cols:
                    metrics[col.prefixed(f"test_{name}")] = float(per_user.loc[mask, str(col)].mean())
        attacks = [s.attack for s in outcome.seeds if s.attack is not None]
        if attacks:
            metrics["attack_auc"] = float(np.mean([a.auc for a in attacks]))
        if outcome.seeds and outcome.seeds[0].privacy:
            privacy = outcome.seeds[0].privacy
            handle.log_params({"privacy": privacy})
            if privacy.get("dp_epsilon") is not None:  # what the model run releases in all
                eps, delta = total_guarantee(privacy["dp_epsilon"], privacy.get("dp_delta"), outcome.fits)
                metrics.update({"dp_epsilon_total": eps, "dp_delta_total": delta, "dp_fits": outcome.fits})
            spent = [s.epsilon_history[-1] for s in outcome.seeds if s.epsilon_history]
            if spent:
                metrics["dp_epsilon_spent"] = float(np.mean(spent))
        handle.log_metrics(metrics)
        recs = pd.concat(
            [s.test.recommendations.assign(seed=s.seed) for s in outcome.seeds], ignore_index=True
        )
        if self.config.tracking.log_recommendations:
            handle.log_table(recs, "recommendations.parquet")
        users = pd.concat(
            [s.test.per_user.reset_index().assign(seed=s.seed) for s in outcome.seeds],
            ignore_index=True,
        )
        handle.log_table(users, "per_user_metrics.parquet")
        valid_users = pd.concat(
            [s.valid.per_user.reset_index().assign(seed=s.seed) for s in outcome.seeds],
            ignore_index=True,
        )
        handle.log_table(valid_users, VALID_PER_USER)
        for s in outcome.seeds:
            if s.history:
                fig = learning_curve(s.history, f"{outcome.label} (seed {s.seed})")
                handle.log_figure(fig, f"plots/learning_curve_seed{s.seed}.png")
                plt.close(fig)
        self.tracker.end(handle)

    # ---------------------------------------------------------------- parent run: results

    def finish(self, result) -> None:
        p = self.parent
        table = result.leaderboard
        p.log_table(table, "leaderboard.csv")
        p.log_table(format_leaderboard(table), "leaderboard.md")
        p.log_table(result.metrics, "metrics.csv")
        fig = metric_vs_k(result.metrics, title=f"{self.config.name}: test, 95% intervals over users")
        p.log_figure(fig, "plots/ndcg_map_vs_k.png")
        plt.close(fig)
        if (result.metrics["slice"] == "cold").any():
            for name in ("warm", "cold"):
                fig = metric_vs_k(result.metrics, slice_name=name, title=f"{self.config.name}: {name} users")
                p.log_figure(fig, f"plots/ndcg_map_vs_k_{name}.png")
                plt.close(fig)
        if result.by_segment is not None:
            self._log_by_segment(result)
        primary = self.config.evaluation.primary
        p.log_params({"best_model": table.iloc[0]["model"]})
        p.log_metrics({primary.prefixed("best_test"): float(table.iloc[0][str(primary)])})
        for _, row in table.iterrows():
            handle = self._model_runs.get(row["model"])
            if handle is not None and not np.isnan(row["p vs best"]):
                handle.log_metrics({"p_vs_best": row["p vs best"], "p_vs_best_holm": row["p vs best (Holm)"]})
        self.tracker.end(p)
        result.experiment_id = self.tracker.experiment_id
        result.parent_run_id = p.run_id
        result.tracking_uri = self.tracker.uri
        result.ui_command = self.tracker.ui_command()

    def _log_by_segment(self, result) -> None:
        """The per-segment leaderboard (tables, figure, per-model metrics) and the routed hybrid
        against the best single model."""
        p, table = self.parent, result.by_segment
        primary = self.config.evaluation.primary
        p.log_table(table, "by_segment/leaderboard.csv")
        p.log_table(format_segment_table(table), "by_segment/leaderboard.md")
        p.log_figure(plot_by_segment(table, str(primary)), "by_segment/models_by_segment.png")
        p.log_dict({str(k): v for k, v in result.segment_names.items()}, "by_segment/names.json")
        for label, rows in table.groupby("model"):
            handle = self._model_runs.get(label)
            if handle is None:
                continue
            metrics = {}
            for row in rows.to_dict(orient="records"):
                key = primary.prefixed(f"test_segment{row['segment']}") if row["segment"] >= 0 else None
                if key is not None:
                    metrics[key] = row[str(primary)]
                    metrics[f"n_test_users_segment{row['segment']}"] = row["users"]
            handle.log_metrics(metrics)
        if result.routing is not None:
            p.log_table(result.routing, "by_segment/routing.csv")
            p.log_table(format_routing(result.routing), "by_segment/routing.md")
            overall = result.routing.iloc[0]
            p.log_metrics({"routing_difference": overall["difference"], "routing_p": overall["p"]})

    def fail(self) -> None:
        """Mark the parent and any unfinished model run FAILED."""
        for handle in [*self._model_runs.values(), self.parent]:
            if self.tracker.client.get_run(handle.run_id).info.status == "RUNNING":
                self.tracker.end(handle, "FAILED")


def _required_fields(config_cls: Any) -> bool:
    return any(f.is_required() for f in config_cls.model_fields.values())
