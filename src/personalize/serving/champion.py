"""Choosing the champion, and saying why.

Every candidate model comes with its validation value of the selection metric (the mean over
seeds) and, where the experiment kept them, its per-user validation values (for a 95% bootstrap
interval) and its test figure (reported, never used to choose). The rule:

1. Only exportable models compete (Random and RecBole peers never do).
2. The best validation mean leads. When the runner-up's per-user values are known, the two are
   compared with a paired test on the same validation users (``evaluation.paired_test``; one
   test, nothing to adjust for).
3. If the difference is within noise (p >= 1 - confidence, 0.05 by default), the **cheaper model
   to serve** wins: both are refit on all the data and the one whose exported state is smaller
   (bytes of arrays to load and score with) is kept. Otherwise the leader is the champion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import yaml
from matplotlib.patches import Patch

from personalize import plotting as P
from personalize.core.errors import PersonalizeError
from personalize.evaluation.stats import bootstrap_ci, paired_test
from personalize.models.registry import get_model_class


class ExportError(PersonalizeError):
    """The champion cannot be exported (no eligible model, changed data, a missing run)."""


@dataclass
class Candidate:
    """A model that may become the champion: what to refit, and how it did on validation."""

    label: str
    model_type: str
    params: dict[str, Any]  # the selected params (iterative models: epochs = best epoch)
    value: float  # validation value of the selection metric (higher is better)
    seed: int = 0
    run_id: str | None = None  # its model (or trial) run, for the record
    per_user: pd.Series | None = field(default=None, repr=False)  # validation values per user
    test_value: float | None = None  # its test figure in the experiment (reported only)
    #: its fits whose validation results the choice read (grid points x seeds): a private
    #: candidate's releases that the choice composes (serving.state.guarantee)
    fits: int = 1
    #: a choice made before, whose privacy cost this candidate carries (an erasure re-export reuses
    #: its version's params: ``selection_fits``, ``epsilon_selection``, ``delta_selection`` of it)
    selection: dict[str, Any] | None = None

    @property
    def unit(self) -> str | None:
        """The unit of its model's guarantee (``user``, ``event``), None for a model not private."""
        return getattr(get_model_class(self.model_type), "dp_unit", None)

    @property
    def exportable(self) -> bool:
        return bool(getattr(get_model_class(self.model_type), "exportable", True))

    @property
    def eligible(self) -> bool:
        return self.exportable and self.value is not None and math.isfinite(self.value)


@dataclass
class Selection:
    """The outcome of the rule: the leader on validation, the runner-up, their paired test, and
    whether the tie rule applied (then ``sizes`` holds both exported states' bytes)."""

    leader: Candidate
    runner_up: Candidate | None
    p_value: float | None
    alpha: float
    sizes: dict[str, int] = field(default_factory=dict)
    champion: Candidate | None = None

    @property
    def tied(self) -> bool:
        return self.runner_up is not None and self.p_value is not None and self.p_value >= self.alpha

    def reason(self, metric: str) -> str:
        """One sentence: why the champion is the champion."""
        lead, champ = self.leader, self.champion or self.leader
        if self.runner_up is None:
            return f"{lead.label} is the only exportable candidate."
        gap = lead.value - self.runner_up.value
        if self.p_value is None:
            return (
                f"{lead.label} leads {self.runner_up.label} by {gap:.4f} validation {metric} "
                "(no per-user values to test the gap)."
            )
        test = f"paired test p = {self.p_value:.2g}"
        if not self.tied:
            return f"{lead.label} leads {self.runner_up.label} by {gap:.4f} validation {metric} ({test})."
        sizes = ", ".join(f"{k} {v / 2**20:.1f} MB" for k, v in self.sizes.items())
        return (
            f"{lead.label} and {self.runner_up.label} are within noise on validation {metric} "
            f"(gap {gap:.4f}, {test} >= {self.alpha:g}); the cheaper to serve wins: {champ.label} "
            f"(exported state {sizes})."
        )


def rank(candidates: Sequence[Candidate], confidence: float = 0.95, test: str = "t") -> Selection:
    """Steps 1-2 of the rule: the leader, the runner-up and their paired test."""
    eligible = sorted(
        (c for c in candidates if c.eligible), key=lambda c: c.value, reverse=True
    )  # sorted is stable: equal values keep their listed order
    if not eligible:
        listed = ", ".join(f"{c.label} ({c.model_type})" for c in candidates) or "none"
        raise ExportError(
            f"no exportable model among the candidates ({listed}); Random and RecBole peers are "
            "never exported"
        )
    leader = eligible[0]
    runner_up = eligible[1] if len(eligible) > 1 else None
    p = None
    if runner_up is not None and leader.per_user is not None and runner_up.per_user is not None:
        joined = pd.concat(
            [leader.per_user.rename("a"), runner_up.per_user.rename("b")], axis=1, join="inner"
        )
        p = paired_test(joined["a"].to_numpy(), joined["b"].to_numpy(), test)
    return Selection(leader, runner_up, p, 1 - confidence)


def choose_champion(candidates: Sequence[Candidate]) -> Candidate:
    """The leader on validation (ties in value: the first listed); the tie rule on serving cost
    needs the refits and is applied by the export."""
    return rank(candidates).leader


def candidates_table(
    candidates: Sequence[Candidate], selection: Selection, metric: str, confidence: float = 0.95
) -> pd.DataFrame:
    """One row per candidate: validation mean with its interval over users, the paired test of
    the top two, the test figure, eligibility and the champion."""
    champion = selection.champion or selection.leader
    rows = []
    for c in candidates:
        lo = hi = np.nan
        if c.per_user is not None:
            lo, hi = bootstrap_ci(c.per_user.to_numpy(dtype=float), confidence=confidence)
        rows.append(
            {
                "model": c.label,
                "type": c.model_type,
                f"valid {metric}": c.value,
                f"valid {metric} low": lo,
                f"valid {metric} high": hi,
                "p vs leader": selection.p_value if c is selection.runner_up else np.nan,
                f"test {metric}": np.nan if c.test_value is None else c.test_value,
                "state MB": selection.sizes[c.label] / 2**20 if c.label in selection.sizes else np.nan,
                "seed": c.seed,
                "exportable": c.exportable,
                "champion": c is champion,
                "params": yaml.safe_dump(c.params, default_flow_style=True, width=10_000).strip(),
                "run_id": c.run_id or "",
            }
        )
    return pd.DataFrame(rows)


@P.house_style
def selection_plot(table: pd.DataFrame, metric: str):
    """Validation mean and 95% interval per candidate, best at the top; the champion in orange,
    models that cannot be exported in grey."""
    column = f"valid {metric}"
    table = table.sort_values(column, ascending=False, kind="stable")
    colours = [
        "tab:orange" if champ else ("tab:blue" if ok else "0.7")
        for champ, ok in zip(table["champion"], table["exportable"])
    ]
    fig, axes = P.figure(height=P.rows_height(len(table)))
    ax = axes[0][0]
    low, high = table.get(f"{column} low"), table.get(f"{column} high")
    has_ci = low is not None and not low.isna().all()
    P.interval_rows(
        ax,
        table["model"].tolist(),
        table[column],
        low.fillna(table[column]) if has_ci else None,
        high.fillna(table[column]) if has_ci else None,
        colours,
        f"validation {metric.upper()}" + (" (95% bootstrap interval over users)" if has_ci else ""),
    )
    handles = [
        Patch(color="tab:orange", label="champion"),
        Patch(color="tab:blue", label="candidate"),
        Patch(color="0.7", label="not exportable"),
    ]
    fig.legend(handles=handles, loc="outside right upper")
    ax.set_title("Champion selection (validation)")
    return fig
