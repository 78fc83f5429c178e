"""Say what is noise: every report table carries 95% intervals, and a difference is called significant
only when a paired test over the same rows says so (exact sign flips / McNemar for 0/1 rows)."""

from __future__ import annotations

import math

import pytest

from helpers.report_runs import BASE, TUNED, flips, write_eval_run, write_pipeline_run
from instructkit.evaluate import significance as sig
from instructkit.evaluate.eval_report import (
    compare,
    compare_groups,
    compare_markdown,
    load_run,
    markdown_table,
)
from instructkit.evaluate.metrics import sign_flip_test
from instructkit.pipeline.recipe import load_recipe
from instructkit.pipeline.report import write_run_report


def test_sign_flip_test_is_the_exact_mcnemar_test_on_binary_rows():
    # 9 rows right only after tuning, none the other way: p = 2 · 0.5^9
    assert sign_flip_test([[1.0] * 9 + [0.0] * 5]) == pytest.approx(2 / 2**9)
    # 5 wins, 1 loss: P(|wins − 3| ≥ 2) under Binomial(6, ½) = 2 · (1 + 6) / 64
    assert sign_flip_test([[1.0] * 5 + [-1.0] + [0.0] * 4]) == pytest.approx(14 / 64)
    assert sign_flip_test([[0.0] * 12]) == 1.0


def test_sign_flip_test_sampled_when_many_rows_differ_matches_the_binomial():
    # 30 discordant rows (too many to enumerate): 20 wins, 10 losses; exact two-sided p = 2·P(W ≥ 20)
    exact = 2 * sum(math.comb(30, k) for k in range(20, 31)) / 2**30
    assert sign_flip_test([[1.0] * 20 + [-1.0] * 10]) == pytest.approx(exact, abs=0.01)


def test_set_interval_reproduces_the_normalized_macro_average(tmp_path):
    # constant rows: every resample equals the stored value, so the interval collapses onto it only
    # when the scale 100/(100 − random) and the chance offset are applied per task
    run = load_run(
        write_eval_run(tmp_path / "r", {"a": ("s", 50.0, flips(6, 6)), "b": ("s", 25.0, flips(8, 0))})
    )
    stored = run["clusters"]["s"]["normalized"]
    assert stored == pytest.approx((100 - 100 / 3) / 2)
    e = sig.estimate(run, sig.member_weights(run, "cluster", "s"), stored, normalized=True)
    assert e.low == pytest.approx(stored) and e.high == pytest.approx(stored)


def test_one_row_per_task_gain_is_reported_as_not_significant(tmp_path):
    inputs = write_pipeline_run(tmp_path / "quickstart")
    write_run_report(load_recipe("quickstart")[0], inputs, tmp_path / "quickstart" / "report")
    text = (tmp_path / "quickstart" / "report.md").read_text()
    by_set = text[text.index("## Evaluation by set") : text.index("## Evaluation by task")]
    assert "| eval set | base [95% CI] | tuned [95% CI] | Δ [95% CI] | paired test |" in by_set
    # 3 held-out-cluster tasks, 4 rows that flipped, all upward: exact p = 2/2^4
    assert "| heldout_cluster/0-shot | -16.7 [" in by_set and "| not significant (p=0.125) |" in by_set
    verdicts = text[text.index("## What improved") :].splitlines()
    cluster = next(line for line in verdicts if "heldout_cluster/0-shot" in line)
    assert "which is not significant (p=0.125; 95% CI of the difference [" in cluster
    assert "improved" not in cluster
    rows = next(line for line in verdicts if "heldout_rows/0-shot" in line)
    assert "improved by 77.8 normalized points" in rows and ": significant (p<0.001; 95% CI" in rows
    by_task = text[text.index("## Evaluation by task") : text.index("## What improved")]
    assert "| heldout_rows/task0 | acc | 25.0 [" in by_task and "significant (p=0.016)" in by_task


def test_compare_pairs_rows_and_refuses_to_test_unpaired_ones(tmp_path):
    a = write_eval_run(tmp_path / "a", BASE)
    b = write_eval_run(tmp_path / "b", TUNED)
    rows = {r["task"]: r for r in compare(a, b)}
    assert rows["heldout_rows/task0"]["p"] == pytest.approx(2 / 2**7)  # 7 rows flipped up
    assert rows["heldout_rows/task0"]["significant"] and rows["heldout_rows/task0"]["paired_rows"] == 12
    assert not rows["heldout_cluster/cmp1"]["significant"]
    groups = {r["task"]: r for r in compare_groups(a, b)}
    assert groups["normalized average"]["verdict"] == "significant"
    table = compare_markdown(list(rows.values()), "a", "b", groups=list(groups.values()))
    assert "| a [95% CI] | b [95% CI] | Δ b − a [95% CI] | paired test | after Holm (7 tests) |" in table
    assert "| normalized average | normalized | -7.1 [" in table

    other = write_eval_run(tmp_path / "c", TUNED, ids="other-")  # same tasks, other rows
    unpaired = {r["task"]: r for r in compare(a, other)}["heldout_rows/task0"]
    assert unpaired["p"] is None and not unpaired["significant"] and unpaired["verdict"] == "not tested"
    assert unpaired["ci95"][0] <= unpaired["delta"] <= unpaired["ci95"][1]


def test_eval_report_shows_intervals_and_the_test_against_the_first_run(tmp_path):
    a = load_run(write_eval_run(tmp_path / "a", BASE))
    b = load_run(write_eval_run(tmp_path / "b", TUNED))
    text = markdown_table([a, b])
    assert "| task | metric | random | a | b | Δ b − a [95% CI] | paired test |" in text
    assert "| heldout_rows/task0 | acc | 25.0 | 25.0 [" in text
    assert "| normalized average | -7.1 [" in text and "significant (p<0.001)" in text
    assert "not significant (p=" in text


def test_run_console_summary_includes_benchmark_rows(tmp_path, monkeypatch):
    from rich.console import Console

    from instructkit.cli import run as pipeline_cli

    piqa = {"piqa": ("", 50.0, flips(20, 15))}  # a benchmark: no eval-set cluster, its own group
    inputs = write_pipeline_run(
        tmp_path / "q", {**BASE, **piqa}, {**TUNED, "piqa": ("", 50.0, flips(20, 14))}
    )
    report = write_run_report(load_recipe("quickstart")[0], inputs, tmp_path / "q" / "report")
    monkeypatch.setattr(pipeline_cli, "console", Console(record=True, width=200))
    pipeline_cli._print_report_tables(report)
    printed = pipeline_cli.console.export_text()
    assert "piqa" in printed and "50.0 [" in printed and "40.0 [" in printed  # 75% → 70% normalized
    assert "piqa changed by -10.0 normalized points (50.0 → 40.0)" in printed
    assert "heldout_cluster/0-shot" in printed and "Normalized average, tuned" in printed
