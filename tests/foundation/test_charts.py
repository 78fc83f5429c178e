"""The one chart writer: each chart kind the reports use writes a PNG that decodes at the size asked
for, and no other module of the package draws with matplotlib itself."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
from matplotlib.image import imread

from helpers.paths import REPO
from instructkit import charts
from instructkit.pipeline.recipe import SweepSpec, load_recipe
from instructkit.pipeline.sweep import write_sweep_report

PACKAGE = REPO / "src" / "instructkit"


def _pixels(path: Path, width_in: float, height_in: float) -> np.ndarray:
    """The decoded PNG, after checking it is `width_in` × `height_in` inches at the charts' DPI."""
    assert path.is_file()
    image = imread(path)
    assert image.shape[:2] == (round(height_in * charts.DPI), round(width_in * charts.DPI))
    return image


def test_bars_with_intervals(tmp_path):
    categories = ["a", "b", "c"]
    series = [
        charts.Series("base", [10.0, None, 30.0], [(5.0, 15.0), (math.nan, math.nan), (25.0, 35.0)]),
        charts.Series("tuned", [20.0, 40.0, 50.0], [(10.0, 30.0), (35.0, 45.0), (math.nan, 60.0)]),
    ]
    path = charts.bars(tmp_path / "bars.png", categories, series, title="t", ylabel="score")
    with_whiskers = _pixels(path, 5.0, 4.0)
    plain = [charts.Series(s.label, s.values) for s in series]
    without = _pixels(charts.bars(tmp_path / "plain.png", categories, plain, title="t", ylabel="score"), 5, 4)
    assert not np.array_equal(with_whiskers, without), "the 95% intervals were not drawn"


def test_grouped_bars_widen_with_categories(tmp_path):
    categories = [f"task_{i}" for i in range(12)]
    series = [charts.Series(label, [float(i) for i in range(12)]) for label in ("run1", "run2")]
    path = charts.bars(tmp_path / "tasks.png", categories, series, xlabel="task")
    _pixels(path, 0.35 * 12 * 2 + 2, 4.0)


def test_curve(tmp_path):
    path = charts.curve(tmp_path / "loss.png", [5, 10, 15], [3.0, 2.0, 1.5], xlabel="step", ylabel="loss")
    _pixels(path, 6.0, 3.5)


def test_delta_and_score_figures_save_at_the_page_width(tmp_path):
    rows = [
        charts.Delta("up", 5.0, 1.0, 9.0, True),
        charts.Delta("down", -4.0, -8.0, -1.0, True),
        charts.Delta("flat", 0.5, math.nan, math.nan, False),
    ]
    figure = charts.delta_figure([charts.DeltaPanel("tasks", rows, "B − A")], title="B − A")
    path = charts.save(figure, tmp_path / "sub" / "compare.png")
    _pixels(path, charts.WIDTH, charts.ROW_INCHES * 3 + 0.8 + 0.9)
    row = charts.ScoreRow("task", [40.0, None], [(30.0, 50.0), (math.nan, math.nan)], 25.0)
    figure = charts.score_figure([charts.Panel("set", [row])], ["base", "tuned"], title="scores")
    _pixels(charts.save(figure, tmp_path / "scores.png"), charts.WIDTH, charts.ROW_INCHES + 0.7 + 0.8)


def _imports_matplotlib(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
        if any(n == "matplotlib" or n.startswith("matplotlib.") for n in names):
            return True
    return False


def test_only_the_chart_module_imports_matplotlib():
    drawing = [p for p in sorted(PACKAGE.rglob("*.py")) if _imports_matplotlib(p)]
    assert drawing == [PACKAGE / "charts.py"]


def test_sweep_report_embeds_one_chart_per_metric(tmp_path):
    sweep = SweepSpec(variants=[{"label": "a"}, {"label": "b"}], metrics=["eval:x/0-shot", "train:seconds"])
    recipe = load_recipe("quickstart")[0].model_copy(update={"sweep": sweep})
    values = {
        "a": {"eval:x/0-shot": 12.5, "train:seconds": None},
        "b": {"eval:x/0-shot": 30.0, "train:seconds": 4.0},
    }
    text = write_sweep_report(recipe, tmp_path, values).read_text()
    for name in ("sweep_eval_x_0_shot.png", "sweep_train_seconds.png"):
        assert f"]({name})" in text
        _pixels(tmp_path / name, 5.0, 4.0)
    assert "| a | 12.500 | – |" in text


def test_a_tall_figure_keeps_its_title_above_the_legend_and_panels(tmp_path):
    """Matplotlib's default title height lands inside a tall figure's first panel; ours stays above it."""
    import random

    from instructkit.charts import Delta, DeltaPanel, delta_figure

    random.seed(0)
    rows = [Delta(f"task_{i}", d := random.uniform(-5, 8), d - 3, d + 3, abs(d) > 4) for i in range(98)]
    fig = delta_figure([DeltaPanel("tasks (98)", rows, "points")], title="tuned − base")
    charts.save(fig, tmp_path / "delta.png")
    renderer = fig._get_renderer()  # the Agg renderer the save used (a Figure built without pyplot)
    title = next(t for t in fig.texts if t.get_text() == "tuned − base").get_window_extent(renderer)
    ax = fig.axes[0]
    below = [ax.get_window_extent(renderer), ax.get_legend().get_window_extent(renderer)]
    assert all(title.y0 >= box.y1 for box in below)
