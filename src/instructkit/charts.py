"""PNG charts for the reports: the one module that draws with matplotlib.

Every report (`run`, `eval report|compare`, sweeps) draws through these functions, so figure size,
fonts, resolution and saving are decided once. Figures are built with `matplotlib.figure.Figure`
and written by the Agg renderer directly: no pyplot, so no global backend switch, no display and no
figure left open between reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

DPI = 110
TICK_FONT = 7  # category names (task names) are long and many


@dataclass
class Series:
    """One bar per category (None: no bar); `intervals` are (low, high) 95% interval ends (NaN: none
    drawn); the legend names each series with a label."""

    label: str
    values: Sequence[float | None]
    intervals: Sequence[tuple[float, float]] | None = None


def bars(
    path: Path,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
) -> Path:
    """Grouped bars (one group per category, one bar per series) with interval whiskers where given."""
    width = 0.8 / max(1, len(series))
    fig = _figure(max(5.0, 0.35 * len(categories) * len(series) + 2), 4.0)
    ax = fig.subplots()
    xs = range(len(categories))
    for i, s in enumerate(series):
        shift = (i - (len(series) - 1) / 2) * width
        positions = [x + shift for x in xs]
        values = [math.nan if v is None else v for v in s.values]
        ax.bar(positions, values, width, label=s.label)
        if s.intervals is not None:
            errors = [_whisker(v, interval) for v, interval in zip(values, s.intervals)]
            yerr = [[low for low, _ in errors], [high for _, high in errors]]
            ax.errorbar(positions, values, yerr=yerr, fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    rotate = len(categories) > 6 or any(len(c) > 12 for c in categories)
    ax.set_xticks(
        list(xs), list(categories), rotation=60 if rotate else 0, ha="right" if rotate else "center"
    )
    ax.tick_params(axis="x", labelsize=TICK_FONT)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if any(s.label for s in series):
        ax.legend(fontsize=TICK_FONT)
    return _save(fig, path)


def _whisker(value: float, interval: tuple[float, float]) -> tuple[float, float]:
    """Distances from the value down and up to the interval's ends (0 when either is unknown)."""
    low, high = interval
    if any(math.isnan(x) for x in (value, low, high)):
        return (0.0, 0.0)
    return (max(0.0, value - low), max(0.0, high - value))


def curve(
    path: Path, x: Sequence[float], y: Sequence[float], *, title: str = "", xlabel: str = "", ylabel: str = ""
) -> Path:
    """A line chart of y against x (a loss curve)."""
    fig = _figure(6.0, 3.5)
    ax = fig.subplots()
    ax.plot(list(x), list(y))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return _save(fig, path)


@dataclass
class Delta:
    """One row of a forest plot: a difference, its 95% interval and whether a test calls it significant."""

    label: str
    delta: float
    low: float
    high: float
    significant: bool


def deltas(path: Path, rows: Sequence[Delta], *, xlabel: str = "") -> Path:
    """A forest plot, first row on top: each difference with its interval; significant ones in colour
    (green up, red down), the rest grey, and a line at zero."""
    fig = _figure(7.0, 0.28 * len(rows) + 1.2)
    ax = fig.subplots()
    for y, r in enumerate(reversed(rows)):
        color = ("tab:green" if r.delta > 0 else "tab:red") if r.significant else "tab:gray"
        if not (math.isnan(r.low) or math.isnan(r.high)):
            ax.plot([r.low, r.high], [y, y], color=color, linewidth=1.5)
        ax.plot([r.delta], [y], "o", color=color, markersize=4)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [r.label for r in reversed(rows)], fontsize=TICK_FONT)
    ax.set_xlabel(xlabel)
    return _save(fig, path)


def _figure(width: float, height: float) -> Figure:
    """A new figure of this size in inches (not registered with pyplot, so nothing to close)."""
    return Figure(figsize=(width, height), dpi=DPI)


def _save(fig: Figure, path: Path) -> Path:
    """Lay the figure out and write it as PNG to `path` (its folder is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=DPI)
    return path
