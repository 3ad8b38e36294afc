"""The house style of every figure the lab draws (notebooks, MLflow artifacts, the README).

Rules: a title that says what the figure shows; axis labels with units; legends outside the
data; integer ticks where values are counts or trial numbers; point labels that do not overlap
(``adjustText``); readable at notebook width (about 7 inches). Figure functions anywhere in the
package draw inside :func:`house_style` and use the helpers below; this module imports nothing
else of ``personalize``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

WIDTH = 7.2  # inches: the width of a notebook cell
STYLE: dict[str, Any] = {
    "figure.figsize": (WIDTH, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "savefig.bbox": "tight",
    "figure.constrained_layout.use": True,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 9.5,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
}
FAMILY_COLOURS = {
    "baseline": "tab:gray",
    "collaborative": "tab:blue",
    "content": "tab:green",
    "hybrid": "tab:red",
    "neural": "tab:purple",
    "peer": "tab:orange",
}
FAMILY_ORDER = tuple(FAMILY_COLOURS)

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Draw with the house style (restored afterwards)."""
    with plt.rc_context(STYLE):
        yield


def house_style(fn: F) -> F:
    """Decorator: the figure function draws with the house style. The figure it returns is
    detached from pyplot (closed), so a notebook shows it once, as the cell's value, and a
    caller that logs it needs no ``plt.close``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with style():
            fig = fn(*args, **kwargs)
        if isinstance(fig, plt.Figure):
            plt.close(fig)
        return fig

    return wrapper  # type: ignore[return-value]


def figure(rows: int = 1, cols: int = 1, *, width: float = WIDTH, height: float = 4.0, **kwargs):
    """A new figure (constrained layout) and its axes array (always 2-D)."""
    return plt.subplots(rows, cols, figsize=(width, height), squeeze=False, **kwargs)


def family_colour(family: str) -> str:
    return FAMILY_COLOURS.get(family, "tab:brown")


def family_legend(fig, families: Sequence[str], title: str = "family") -> None:
    """A legend of the model families present, outside the data (right of the axes)."""
    present = [f for f in FAMILY_ORDER if f in set(families)] + sorted(set(families) - set(FAMILY_ORDER))
    handles = [Patch(color=family_colour(f), label=f) for f in present]
    fig.legend(handles=handles, title=title, loc="outside right upper")


def legend_outside(fig, ax, title: str | None = None, below: bool = False) -> None:
    """The axes' legend, outside the data: right of the figure, or ``below`` it (long labels)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles and below:
        fig.legend(handles, labels, title=title, loc="outside lower center", ncols=min(3, len(handles)))
    elif handles:
        fig.legend(handles, labels, title=title, loc="outside right upper")


def integer_ticks(ax, axis: str = "x") -> None:
    """Integer-only ticks on ``axis`` (counts, trial numbers, epochs)."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(MaxNLocator(integer=True))


def label_points(ax, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str]) -> None:
    """Label scatter points without overlaps (adjustText moves labels, with a leader line)."""
    from adjustText import adjust_text

    texts = [ax.text(x, y, str(label), fontsize=7.5) for x, y, label in zip(xs, ys, labels)]
    if texts:
        adjust_text(
            texts,
            x=np.asarray(xs, float),
            y=np.asarray(ys, float),
            ax=ax,
            expand=(1.4, 1.9),
            force_text=(0.4, 0.8),
            force_static=(0.3, 0.6),
            iter_lim=2000,
            arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5},
        )


def interval_rows(
    ax,
    labels: Sequence[str],
    means: Sequence[float],
    lows: Sequence[float] | None,
    highs: Sequence[float] | None,
    colours: Sequence[str],
    xlabel: str,
) -> None:
    """One row per label: the mean as a dot and its interval as a line (best at the top)."""
    y = np.arange(len(labels))[::-1]
    means = np.asarray(means, float)
    if lows is not None and highs is not None:
        err = np.vstack([means - np.asarray(lows, float), np.asarray(highs, float) - means])
        ax.errorbar(means, y, xerr=err, fmt="none", ecolor="0.4", elinewidth=1.2, capsize=3, zorder=1)
    ax.scatter(means, y, c=list(colours), s=36, zorder=2)
    ax.set_yticks(y, labels)
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", alpha=0)


def rows_height(n: int, per_row: float = 0.32, extra: float = 1.4) -> float:
    """A figure height that fits ``n`` labelled rows."""
    return max(2.4, per_row * n + extra)
