"""Charts and words that cannot mislead: an interval and its verdict come from one test, many per-task
tests are corrected (Holm) and counted, and every chart has a title, intervals, chance and an axis
that includes 0 without blowing a small difference up."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from helpers.report_runs import BASE, TUNED, flips, write_eval_run, write_pipeline_run
from instructkit import charts
from instructkit.evaluate import eval_report
from instructkit.evaluate import significance as sig
from instructkit.evaluate.eval_report import compare, compare_groups, load_run, write_compare
from instructkit.evaluate.metrics import sign_flip_test
from instructkit.pipeline import report as run_report
from instructkit.pipeline.recipe import load_recipe


def _includes_zero(low: float, high: float) -> bool:
    return low <= 0 <= high


def test_few_rows_all_up_is_not_significant_and_its_interval_includes_zero(tmp_path):
    # 4 rows right only after tuning, none the other way: every row's difference is ≥ 0, so a
    # bootstrap interval of the mean excludes 0, while the exact test gives p = 2/2^4 = 0.125
    a = load_run(write_eval_run(tmp_path / "a", {"t": ("s", 25.0, flips(12, 3))}))
    b = load_run(write_eval_run(tmp_path / "b", {"t": ("s", 25.0, flips(12, 7))}))
    d = sig.difference(a, b, {"t": 1.0}, 100 * 4 / 12, False)
    assert d.p == pytest.approx(0.125) and not d.significant
    assert _includes_zero(d.low, d.high) and d.high > d.delta
    text = sig.sentence(d, 25.0, 58.3, "points")
    assert "not significant" in text and "[0.0, " in text


@pytest.mark.parametrize("seed", range(12))
def test_interval_and_test_always_agree(seed):
    rng = np.random.default_rng(seed)
    tasks = int(rng.integers(1, 4))
    diffs = [
        list(100.0 * rng.choice([-1, 0, 1], size=int(rng.integers(6, 40)), p=[0.15, 0.6, 0.25]))
        for _ in range(tasks)
    ]
    coefs = list(rng.uniform(0.2, 1.5, size=tasks))
    p = sign_flip_test(diffs, coefs)
    low, high = sig.inverted_interval(diffs, coefs, p)
    estimate = sum(c * float(np.mean(d)) for c, d in zip(coefs, diffs))
    assert low <= estimate <= high
    assert _includes_zero(low, high) == (p >= sig.ALPHA), (p, low, high)


def test_a_summary_never_says_not_significant_beside_an_interval_without_zero(tmp_path):
    inputs = write_pipeline_run(tmp_path / "q")
    run_report.write_run_report(load_recipe("quickstart")[0], inputs, tmp_path / "q" / "report")
    text = (tmp_path / "q" / "report.md").read_text()
    sentences = re.findall(
        r"(not significant|: significant) \((p[<=][0-9.]+); 95% CI of the difference \[([-0-9.]+), ([-0-9.]+)\]",
        text,
    )
    assert len(sentences) >= 3
    for verdict, _, low, high in sentences:
        assert _includes_zero(float(low), float(high)) == (verdict == "not significant")


def test_holm_adjusts_and_counts_the_family():
    assert sig.holm([0.01, 0.04, 0.03, None, 0.5]) == pytest.approx([0.04, 0.09, 0.09, None, 0.5])
    tested = [
        sig.Difference(5, p=0.01),
        None,
        sig.Difference(-3, p=0.04),
        sig.Difference(1),
        sig.Difference(2, p=0.5),
    ]
    diffs = sig.with_holm(tested)
    assert [d.family if d else None for d in diffs] == [3, None, 3, 0, 3]  # untested rows not counted
    assert [d.holm_p if d else None for d in diffs] == pytest.approx([0.03, None, 0.08, None, 0.5])
    assert diffs[0].survives and not diffs[2].survives and diffs[2].significant
    assert sig.mark(diffs[0]) == "up" and sig.mark(diffs[2]) == ""


def test_per_task_tables_say_how_many_tests_and_colour_only_survivors(tmp_path):
    inputs = write_pipeline_run(tmp_path / "q")
    run_report.write_run_report(load_recipe("quickstart")[0], inputs, tmp_path / "q" / "report")
    text = (tmp_path / "q" / "report.md").read_text()
    by_task = text[text.index("## Evaluation by task") : text.index("## What improved")]
    # 4 tasks gained 7 rows each (p = 2/2^7 each): significant alone, none after Holm over 7 tests
    assert "7 per-task paired tests were run: 4 significant on their own (p < 0.05), 0 after Holm" in by_task
    assert "| after Holm (7 tests) |" in by_task
    row = next(line for line in by_task.splitlines() if line.startswith("| heldout_rows/task0 |"))
    assert "| significant (p=0.016) | does not survive (adj. p=0.109) |" in row
    base, tuned = load_run(inputs["eval-base"]), load_run(inputs["eval-tuned"])
    table = run_report.comparison_table(run_report.task_rows(base, tuned), "task", {"x": "acc"})
    assert table.marks == [""] * len(TUNED)
    compared = compare(inputs["eval-base"], inputs["eval-tuned"])
    assert {r["family"] for r in compared} == {7} and not any(r["holm_p"] < 0.05 for r in compared)


def _lines(ax, gid: str) -> list:
    return [line for line in ax.get_lines() if line.get_gid() == gid]


def _intervals(ax) -> int:
    """Horizontal interval segments (two x values at one y) drawn on the axes."""
    return sum(1 for line in ax.get_lines() if len(line.get_xdata()) == 2 and line.get_gid() is None)


def test_run_report_task_chart_is_small_multiples_with_chance_and_a_full_axis(tmp_path):
    inputs = write_pipeline_run(tmp_path / "q")
    base, tuned = load_run(inputs["eval-base"]), load_run(inputs["eval-tuned"])
    tasks = run_report.task_rows(base, tuned)
    fig = run_report.task_figure(tasks, tuned, ["base", "tuned"])
    assert fig.get_size_inches()[0] == charts.WIDTH  # page width, whatever the number of tasks
    assert fig.get_suptitle()
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["heldout_cluster/0-shot", "heldout_rows/0-shot"]
    for ax, chance, rows in zip(fig.axes, (50.0, 25.0), (3, 4)):
        low, high = ax.get_xlim()
        assert low <= 0 and high >= 100
        assert _lines(ax, "chance") and set(_lines(ax, "chance")[0].get_xdata()) == {chance}
        assert _intervals(ax) == 2 * rows  # base and tuned, each with its interval
        assert ax.get_xlabel()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()][::-1]  # top to bottom
    assert labels == ["cmp1", "cmp0", "cmp2"]  # the largest gain on top; the panel names the set
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["base", "tuned", "chance"]

    sets = run_report.set_figure(
        run_report.set_rows(base, tuned), run_report.average_row(base, tuned), ["base", "tuned"]
    )
    for ax in sets.axes:
        assert ax.get_xlim()[0] <= 0 and list(_lines(ax, "chance")[0].get_xdata()) == [0, 0]


def test_eval_report_charts_have_titles_intervals_chance_and_zero(tmp_path):
    runs = [load_run(write_eval_run(tmp_path / n, rows)) for n, rows in (("a", BASE), ("b", TUNED))]
    for fig in (eval_report.task_figure(runs), eval_report.group_figure(runs)):
        assert fig.get_suptitle()
        for ax in fig.axes:
            assert ax.get_title(loc="left") and ax.get_xlim()[0] <= 0 <= ax.get_xlim()[1]
            assert _lines(ax, "chance") and _intervals(ax) > 0
        assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a", "b", "chance"]


def test_a_near_zero_difference_is_drawn_small():
    rows = [charts.Delta("t", 0.3, -0.2, 0.8, False)]
    ax = charts.delta_figure([charts.DeltaPanel("tasks", rows, "points")], title="x").axes[0]
    low, high = ax.get_xlim()
    assert low <= -charts.MIN_HALF_SPAN and high >= charts.MIN_HALF_SPAN and _lines(ax, "zero")


def test_compare_chart_names_runs_and_separates_tasks_from_groups(tmp_path):
    a, b = write_eval_run(tmp_path / "base-run", BASE), write_eval_run(tmp_path / "tuned-run", TUNED)
    rows, groups = compare(a, b), compare_groups(a, b)
    fig = eval_report.delta_figure(rows, groups, "base-run", "tuned-run")
    assert "tuned-run − base-run" in fig.get_suptitle() and "B − A" not in fig.get_suptitle()
    tasks, grouped = fig.axes
    assert [t.get_text() for t in tasks.get_yticklabels()][::-1][0].startswith("heldout_rows/")
    assert "points of the task's metric" in tasks.get_xlabel() and "Holm" in tasks.get_xlabel()
    assert "normalized points" in grouped.get_xlabel()
    assert len(tasks.get_yticklabels()) == len(rows) and len(grouped.get_yticklabels()) == len(groups)
    legend = [t.get_text() for t in tasks.get_legend().get_texts()]
    assert legend == ["significant gain", "significant loss", "not significant", "0: no change"]
    for ax in fig.axes:
        assert _lines(ax, "zero") and ax.get_xlim()[0] <= -charts.MIN_HALF_SPAN

    md, html = write_compare(a, b, tmp_path / "cmp.md")
    assert "B−A" not in md.read_text() and "Δ tuned-run − base-run [95% CI]" in md.read_text()
    page = html.read_text()
    figures = re.findall(r'<figure class="chart" id="(chart-\d+)"><a href="#([^"]+)"[^>]*><img ', page)
    assert figures and all(fid == href for fid, href in figures)  # a click opens the chart full size
    assert "figure.chart:target" in page and "max-width: none" in page


def test_differences_in_the_tables_use_the_test_interval(tmp_path):
    a, b = write_eval_run(tmp_path / "a", BASE), write_eval_run(tmp_path / "b", TUNED)
    for row in compare(a, b) + compare_groups(a, b):
        if row["p"] is not None:
            assert _includes_zero(*row["ci95"]) == (not row["significant"]), row
            assert not math.isnan(row["ci95"][0])


def test_a_change_that_rounds_to_zero_reads_plus_zero():
    d = sig.Difference(-1e-12, -25.0, 25.0, 1.0)
    assert sig.fmt_diff(d) == "+0.0 [-25.0, 25.0]"
    assert "changed by +0.0 points" in sig.sentence(d, -25.0, -25.0, "points")
    assert sig.fmt_estimate(sig.Estimate(1.0, -1e-9, 2.0)) == "1.0 [0.0, 2.0]"
