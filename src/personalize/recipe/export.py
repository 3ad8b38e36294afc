"""The recipe's last, optional step: export the champion of an experiment that just ran."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from personalize.core.errors import ConfigError
from personalize.recipe.result import ExperimentResult
from personalize.serving.champion import Candidate, ExportError
from personalize.serving.export import ExportResult, export_experiment, with_online_defaults

__all__ = ["candidates_from_result", "export_after_run", "export_result", "with_online_defaults"]

Echo = Callable[[str], None]


def candidates_from_result(result: ExperimentResult, metric: str = "ndcg@10") -> list[Candidate]:
    """Candidates of an experiment: per model the mean validation ``metric`` over seeds with its
    per-user values (averaged over seeds), the selected params and seed of its best seed, and
    its test figure (reported beside the choice, never used for it)."""
    out = []
    for outcome in result.outcomes:
        seeds = outcome.seeds
        available = sorted(seeds[0].valid.summary)
        if metric not in seeds[0].valid.summary:
            raise ConfigError(f"export.metric {metric!r} is not evaluated; available: {available}")
        best = max(seeds, key=lambda s: s.valid.summary[metric])
        per_user = outcome.per_user("valid")
        out.append(
            Candidate(
                label=outcome.label,
                model_type=outcome.model_type,
                params=dict(best.selected_params),
                value=float(np.mean([s.valid.summary[metric] for s in seeds])),
                seed=int(best.seed),
                run_id=outcome.run_id,
                per_user=per_user[metric] if metric in per_user.columns else None,
                test_value=outcome.summary("test").get(metric),
                fits=outcome.fits,
            )
        )
    return out


def export_result(
    result: ExperimentResult, *, progress: bool = True, echo: Echo | None = print
) -> ExportResult:
    """Export the champion of a tracked experiment run (its ``export:`` block, its dataset, its
    MLflow run as the parent of the export run) through the one export path
    (:func:`personalize.serving.export.export_experiment`)."""
    if result.parent_run_id is None:
        raise ExportError("the experiment was run without tracking (--no-track): nothing to export from")
    return export_experiment(
        candidates_from_result(result, result.config.export.metric),
        result.dataset,
        result.config,
        parent_run_id=result.parent_run_id,
        tracking_uri=result.tracking_uri,
        progress=progress,
        echo=echo,
    )


def export_after_run(
    result: ExperimentResult | None, *, tracked: bool, progress: bool = True, echo: Echo | None = print
) -> None:
    """The end of ``personalize run`` when the experiment has ``export: {enabled: true}``: export
    its champion and keep the :class:`ExportResult` in ``result.extras["export"]``."""
    if not tracked or result is None:
        if echo:
            echo("\nExport skipped: the run was not tracked (--no-track); there is no run to export from.")
        return
    result.extras["export"] = export_result(result, progress=progress, echo=echo)
