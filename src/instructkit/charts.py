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
class ScoreRow:
    """One row of a score chart: a value per series (None: not evaluated), each with its 95% interval
    ((nan, nan): none), and chance on this row's scale (None: not drawn)."""

    label: str
    values: Sequence[float | None]
    intervals: Sequence[tuple[float, float]]
    chance: float | None = None


@dataclass
class Panel:
    """A titled block of rows (one eval set, one kind of score): charts stack panels top to bottom."""

    title: str
    rows: Sequence[ScoreRow]
    xlabel: str = ""


SERIES_COLOURS = ("tab:gray", "tab:blue", "tab:orange", "tab:purple", "tab:brown")
ROW_INCHES = 0.24  # one task name per row at TICK_FONT, readable when the page shrinks the figure
WIDTH = 7.5  # inches: 825 px at DPI, the width of the report page's text column


def score_figure(
    panels: Sequence[Panel], series: Sequence[str], *, title: str, full: float = 100.0
) -> Figure:
    """Scores as dots with 95% intervals, one row per task or set and one colour per series, in
    small multiples (one panel per eval set), with chance drawn on every row. The axis always spans
    0 (or the lowest value) to `full`, so a few points never look like a large gain."""
    panels = [p for p in panels if p.rows]
    fig = _figure(WIDTH, sum(ROW_INCHES * len(p.rows) + 0.7 for p in panels) + 0.8)
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=[len(p.rows) + 2 for p in panels])
    low = min([0.0] + [x for p in panels for r in p.rows for x in _finite(r)])  # one scale for all panels
    for ax, panel in zip(axes[:, 0], panels):
        _score_panel(ax, panel, series)
        ax.set_xlim(low - 0.03 * (full - low), full + 0.03 * (full - low))
    _legend_above(axes[0, 0], _score_legend(series))
    _title(fig, title)
    return fig


def _score_panel(ax, panel: Panel, series: Sequence[str]) -> None:
    """Draw one panel: rows top to bottom, series side by side within a row, chance as a black tick
    per row (a line when every row shares it)."""
    n = len(panel.rows)
    offsets = [((len(series) - 1) / 2 - i) * 0.25 for i in range(len(series))]  # first series on top
    for i in range(len(series)):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        for y, row in zip(range(n - 1, -1, -1), panel.rows):
            value, (low, high) = row.values[i], row.intervals[i]
            if value is None or math.isnan(value):
                continue
            if not (math.isnan(low) or math.isnan(high)):
                ax.plot([low, high], [y + offsets[i]] * 2, color=colour, linewidth=1.4)
            ax.plot([value], [y + offsets[i]], "o", color=colour, markersize=4)
    chances = [r.chance for r in panel.rows]
    if chances and all(c is not None and c == chances[0] for c in chances):
        ax.axvline(chances[0], color="black", linewidth=0.9, linestyle="--", label="chance", gid="chance")
    elif any(c is not None for c in chances):
        ys = [n - 1 - y for y, c in enumerate(chances) if c is not None]
        xs = [c for c in chances if c is not None]
        ax.plot(xs, ys, "|", color="black", markersize=11, mew=1.5, label="chance", gid="chance")
    _label_rows(ax, panel)


def _label_rows(ax, panel: Panel | DeltaPanel) -> None:
    """A horizontal-row panel's y range, row labels (first row on top), title, x label and grid."""
    n = len(panel.rows)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_yticks(range(n), [r.label for r in reversed(panel.rows)], fontsize=TICK_FONT)
    ax.set_title(panel.title, fontsize=9, loc="left")
    ax.set_xlabel(panel.xlabel, fontsize=8)
    ax.tick_params(axis="x", labelsize=TICK_FONT)
    ax.grid(axis="x", color="#e5e7eb", linewidth=0.6)


def _score_legend(series: Sequence[str]) -> list:
    """A dot per series (run or model) and the chance marker."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=SERIES_COLOURS[i % len(SERIES_COLOURS)], marker="o", markersize=4, label=name)
        for i, name in enumerate(series)
    ]
    return handles + [
        Line2D([], [], color="black", marker="|", linestyle="none", markersize=9, label="chance")
    ]


def _finite(row: ScoreRow) -> list[float]:
    """Every finite value and interval end of a row (for the axis range)."""
    found = [x for v, interval in zip(row.values, row.intervals) for x in (v, *interval)]
    return [x for x in found if x is not None and not math.isnan(x)]


def _legend_above(ax, handles: list) -> None:
    """The legend in one row above the top panel's right corner, clear of every data point."""
    ax.legend(
        handles=handles,
        fontsize=TICK_FONT,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=len(handles),
        frameon=False,
        borderaxespad=0.2,
    )


@dataclass
class Delta:
    """One row of a forest plot: a difference, its 95% interval and whether a test calls it
    significant (after any multiple-comparison correction the report applies)."""

    label: str
    delta: float
    low: float
    high: float
    significant: bool


@dataclass
class DeltaPanel:
    """A block of differences on one scale (task rows in points, group rows in normalized points)."""

    title: str
    rows: Sequence[Delta]
    xlabel: str


TITLE_INCHES = 0.08  # how far below the figure's top edge its title (suptitle) starts
MIN_HALF_SPAN = 10.0  # points: the axis shows at least ±10, so a 0.5-point change looks small


def delta_figure(panels: Sequence[DeltaPanel], *, title: str, sort: bool = True) -> Figure:
    """Forest plots, one panel per scale: each difference with its 95% interval, largest gain on top
    when `sorted`; significant gains green, losses red, the rest grey; a line at 0 (no change). The
    axis is symmetric around 0 and at least ±MIN_HALF_SPAN wide."""
    panels = [p for p in panels if p.rows]
    fig = _figure(WIDTH, sum(ROW_INCHES * len(p.rows) + 0.8 for p in panels) + 0.9)
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=[len(p.rows) + 2 for p in panels])
    for ax, panel in zip(axes[:, 0], panels):
        rows = sorted(panel.rows, key=lambda r: -r.delta) if sort else list(panel.rows)
        _delta_panel(ax, DeltaPanel(panel.title, rows, panel.xlabel))
    _legend_above(axes[0, 0], _delta_legend())
    _title(fig, title)
    return fig


def _delta_panel(ax, panel: DeltaPanel) -> None:
    n = len(panel.rows)
    for y, r in zip(range(n - 1, -1, -1), panel.rows):
        colour = _delta_colour(r)
        if not (math.isnan(r.low) or math.isnan(r.high)):
            ax.plot([r.low, r.high], [y, y], color=colour, linewidth=1.5)
        ax.plot([r.delta], [y], "o", color=colour, markersize=4)
    ax.axvline(0, color="black", linewidth=0.9, gid="zero")
    ends = [abs(x) for r in panel.rows for x in (r.delta, r.low, r.high) if not math.isnan(x)]
    half = max([MIN_HALF_SPAN] + ends) * 1.05
    ax.set_xlim(-half, half)
    _label_rows(ax, panel)


def _delta_colour(r: Delta) -> str:
    return ("tab:green" if r.delta > 0 else "tab:red") if r.significant else "tab:gray"


def _delta_legend() -> list:
    """Legend entries for the three colours and the zero line."""
    from matplotlib.lines import Line2D

    entries = [
        ("tab:green", "significant gain"),
        ("tab:red", "significant loss"),
        ("tab:gray", "not significant"),
    ]
    handles = [Line2D([], [], color=c, marker="o", markersize=4, label=text) for c, text in entries]
    return handles + [Line2D([], [], color="black", linewidth=0.9, label="0: no change")]


def save(fig: Figure, path: Path) -> Path:
    """Write a figure built here as PNG to `path` (its folder is created)."""
    return _save(fig, path)


def _title(fig: Figure, title: str) -> None:
    """The figure's title, a fixed distance (in inches) below its top edge. Matplotlib's default (98% of
    the height) lands inside the first panel of a tall figure, over its legend; tight_layout then
    leaves the pinned title its room."""
    fig.suptitle(title, fontsize=10, y=1 - TITLE_INCHES / fig.get_figheight(), verticalalignment="top")


def _figure(width: float, height: float) -> Figure:
    """A new figure of this size in inches (not registered with pyplot, so nothing to close)."""
    return Figure(figsize=(width, height), dpi=DPI)


def _save(fig: Figure, path: Path) -> Path:
    """Lay the figure out and write it as PNG to `path` (its folder is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=DPI)
    return path
