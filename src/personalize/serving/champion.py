"""Choosing the champion: every candidate model with its validation value, the best exportable
one wins (ties: the first listed); a table and a plot of the choice."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import yaml

from personalize.core.errors import PersonalizeError
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

    @property
    def exportable(self) -> bool:
        return bool(getattr(get_model_class(self.model_type), "exportable", True))

    @property
    def eligible(self) -> bool:
        return self.exportable and self.value is not None and math.isfinite(self.value)


def choose_champion(candidates: Sequence[Candidate]) -> Candidate:
    """The eligible candidate with the highest value (ties: the first listed)."""
    eligible = [c for c in candidates if c.eligible]
    if not eligible:
        listed = ", ".join(f"{c.label} ({c.model_type})" for c in candidates) or "none"
        raise ExportError(
            f"no exportable model among the candidates ({listed}); Random and RecBole peers are "
            "never exported"
        )
    return max(eligible, key=lambda c: c.value)  # max keeps the first of equal values


def candidates_table(candidates: Sequence[Candidate], champion: Candidate, metric: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "model": c.label,
                "type": c.model_type,
                f"valid {metric}": c.value,
                "seed": c.seed,
                "exportable": c.exportable,
                "champion": c is champion,
                "params": yaml.safe_dump(c.params, default_flow_style=True, width=10_000).strip(),
                "run_id": c.run_id or "",
            }
            for c in candidates
        ]
    )


def selection_plot(table: pd.DataFrame, metric: str):
    """Validation value per candidate; the champion highlighted, non-exportable models hatched."""
    column = f"valid {metric}"
    table = table.sort_values(column)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(table) + 1.5))
    colours = ["tab:orange" if c else "tab:blue" for c in table["champion"]]
    bars = ax.barh(table["model"], table[column], color=colours)
    for bar, exportable in zip(bars, table["exportable"]):
        if not exportable:
            bar.set_hatch("//")
            bar.set_alpha(0.5)
    ax.set_xlabel(f"validation {metric} (orange: champion; hatched: not exportable)")
    ax.set_title("Champion selection")
    fig.tight_layout()
    return fig
