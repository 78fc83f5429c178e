"""`instructkit eval run --lm-eval-tasks`: lm-eval's own tasks through instructkit's runner give per-row
records whose mean is lm-eval's aggregate, so the report's intervals and paired tests apply; unknown
names and hub-only data offline stop with one clear line."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is in the `test` extra")

from typer.testing import CliRunner  # noqa: E402

from helpers.paths import FIXTURES_ROOT
from instructkit.cli.app import app  # noqa: E402
from instructkit.errors import HubUnreachableError, InstructkitError  # noqa: E402
from instructkit.evaluate.lm_eval_local import local_task_dir  # noqa: E402

FIXTURES = FIXTURES_ROOT / "lm_eval"
LIMIT = "6"


@pytest.fixture(scope="module", autouse=True)
def _quiet():
    logging.getLogger("lm_eval").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def fixture_tasks(tmp_path_factory) -> Path:
    """Task YAMLs (official definitions over tests/fixtures/lm_eval rows) for --lm-eval-include."""
    folder = tmp_path_factory.mktemp("fixture_tasks")
    written = local_task_dir(tmp_path_factory.mktemp("no_data"), folder, fixtures=FIXTURES)
    assert "arc_easy" in written
    return folder


def _run(model: Path, out: Path, *options: str):
    args = ["eval", "run", "--model", str(model), "--out", str(out), "--limit", LIMIT, "--batch-size", "4"]
    return CliRunner().invoke(app, [*args, *options])


def _rows(out: Path, task: str, metric: str) -> list[float]:
    path = out / "samples" / (task.replace("/", "__") + ".jsonl")
    return [float(json.loads(line)[metric]) for line in path.read_text().splitlines()]


def test_lm_eval_tasks_per_row_scores_match_lm_eval(saved_tiny_model, shared_data, fixture_tasks, tmp_path):
    out = tmp_path / "run"
    done = _run(
        saved_tiny_model,
        out,
        "--lm-eval-tasks",
        "piqa,arc_easy",
        "--lm-eval-include",
        str(fixture_tasks),
        "--data-dir",
        str(shared_data),
    )
    assert done.exit_code == 0, done.output
    results = json.loads((out / "results.json").read_text())
    for task in ("lm_eval/piqa", "lm_eval/arc_easy"):
        summary = results["tasks"][task]
        assert summary["n"] == int(LIMIT)
        assert summary["metric"] == "acc"
        assert summary["random_baseline"] > 0
        for metric in ("acc", "acc_norm"):
            rows = _rows(out, task, metric)
            assert len(rows) == int(LIMIT)
            aggregate = summary["lm_eval"][f"{metric},none"]
            assert math.isclose(sum(rows) / len(rows), aggregate, abs_tol=1e-9)
            assert math.isclose(summary["metrics"][metric], 100 * aggregate, abs_tol=1e-9)
        assert summary["ci95"][0] <= summary["score"] <= summary["ci95"][1]

    # the same run twice: report renders, and compare pairs the rows (same doc ids)
    again = tmp_path / "again"
    done = _run(
        saved_tiny_model, again, "--lm-eval-tasks", "arc_easy", "--lm-eval-include", str(fixture_tasks)
    )
    assert done.exit_code == 0, done.output
    report = CliRunner().invoke(app, ["eval", "report", str(out), str(again)])
    assert report.exit_code == 0, report.output
    assert "lm_eval/arc_easy" in report.output
    compare = CliRunner().invoke(app, ["eval", "compare", str(out), str(again)])
    assert compare.exit_code == 0, compare.output
    assert "lm_eval/arc_easy" in compare.output


def test_unknown_lm_eval_task_is_one_clear_line(saved_tiny_model, tmp_path):
    done = _run(saved_tiny_model, tmp_path / "run", "--lm-eval-tasks", "piqa,no_such_task_xyz")
    assert isinstance(done.exception, InstructkitError)
    message = str(done.exception)
    assert message.startswith("unknown lm-eval task(s) no_such_task_xyz:") and "\n" not in message


def test_hub_only_lm_eval_task_offline_gives_offline_error(saved_tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    done = _run(saved_tiny_model, tmp_path / "run", "--lm-eval-tasks", "arc_easy")
    assert isinstance(done.exception, HubUnreachableError), done.exception
    message = str(done.exception)
    assert message.startswith("cannot load lm-eval task data for 'arc_easy'")
    assert "offline" in message.lower()


def test_metrics_that_are_not_means_of_rows_keep_lm_eval_values():
    """IFEval's shape: prompt-level values are per-row bools (scored, × 100); instruction-level values
    are lists per row whose aggregate is no mean of rows (kept as lm-eval gives it, no interval)."""
    from instructkit.evaluate.lm_eval_tasks import task_records, task_summary

    metrics = ["prompt_level_strict_acc", "inst_level_strict_acc"]
    samples = [
        {"doc_id": 0, "filter": "none", "metrics": metrics, "resps": [["a"]], "filtered_resps": ["a"],
         "prompt_level_strict_acc": True, "inst_level_strict_acc": [True, False]},
        {"doc_id": 1, "filter": "none", "metrics": metrics, "resps": [["b"]], "filtered_resps": ["b"],
         "prompt_level_strict_acc": False, "inst_level_strict_acc": [False]},
    ]  # fmt: skip
    results = {"alias": "ifeval", "prompt_level_strict_acc,none": 0.5, "inst_level_strict_acc,none": 1 / 3}
    out = {"results": {"ifeval": results}, "configs": {"ifeval": {"output_type": "generate_until"}}}
    records = task_records(samples)
    summary = task_summary("ifeval", records, out, resamples=50, seed=0)
    assert [r["id"] for r in records] == ["0", "1"]
    assert summary["metric"] == "prompt_level_strict_acc" and summary["score"] == 50.0
    assert summary["metrics"]["inst_level_strict_acc"] == pytest.approx(1 / 3)
    assert summary["random_baseline"] == 0.0 and summary["n"] == 2


def test_lm_eval_requests_resume_from_the_request_cache(saved_tiny_model, shared_data, tmp_path):
    """A re-run into the same folder answers every lm-eval request from cache.sqlite with the same scores;
    the same requests on other weights are never served from it."""
    import shutil

    from helpers.chats import perturb_weights

    out = tmp_path / "run"
    options = ("--lm-eval-tasks", "piqa", "--data-dir", str(shared_data))
    first = _run(saved_tiny_model, out, *options)
    assert first.exit_code == 0, first.output
    before = json.loads((out / "results.json").read_text())
    assert before["cache"]["misses"] >= 2 * int(LIMIT) and before["cache"]["hits"] == 0
    rows_before = _rows(out, "lm_eval/piqa", "acc_norm")

    again = _run(saved_tiny_model, out, *options)
    assert again.exit_code == 0, again.output
    after = json.loads((out / "results.json").read_text())
    assert after["cache"] == {"hits": before["cache"]["misses"], "misses": 0}
    assert after["tasks"]["lm_eval/piqa"]["metrics"] == before["tasks"]["lm_eval/piqa"]["metrics"]
    assert _rows(out, "lm_eval/piqa", "acc_norm") == rows_before

    other = shutil.copytree(saved_tiny_model, tmp_path / "other")
    perturb_weights(other)
    changed = _run(other, out, *options)
    assert changed.exit_code == 0, changed.output
    assert json.loads((out / "results.json").read_text())["cache"]["hits"] == 0


def test_sampled_lm_eval_generations_are_never_cached():
    from instructkit.evaluate.lm_eval_cache import _sampled, request_key

    assert _sampled("generate_until", ("Q:", {"do_sample": True, "until": ["\n"]}))
    assert not _sampled("generate_until", ("Q:", {"until": ["\n"]}))
    assert not _sampled("loglikelihood", ("Q:", " A"))
    assert request_key("loglikelihood", ("Q:", " A")) != request_key("loglikelihood", ("Q:", " B"))
    assert request_key("loglikelihood", ("Q:", " A")) != request_key("loglikelihood_rolling", ("Q:", " A"))


def test_a_suite_entry_runs_an_lm_eval_task_beside_instructkit_benchmarks(
    saved_tiny_model, shared_data, fixture_tasks, tmp_path
):
    """`{lm_eval: NAME, include: FOLDER}` in a suite YAML (FOLDER relative to the suite file) runs lm-eval's
    own definition through the same runner, beside the suite's own benchmarks."""
    import os

    suite = tmp_path / "suites" / "mixed.yaml"
    suite.parent.mkdir()
    include = os.path.relpath(fixture_tasks, suite.parent)
    suite.write_text(
        f"name: mixed\ntasks:\n  - {{benchmark: piqa}}\n  - {{lm_eval: arc_easy, include: {include}}}\n"
    )
    out = tmp_path / "run"
    done = _run(saved_tiny_model, out, "--suite", str(suite), "--data-dir", str(shared_data))
    assert done.exit_code == 0, done.output
    results = json.loads((out / "results.json").read_text())
    assert {"piqa", "lm_eval/arc_easy"} <= set(results["tasks"])
    assert results["tasks"]["lm_eval/arc_easy"]["n"] == int(LIMIT)
    assert results["config"]["lm_eval_tasks"] == ["arc_easy"]

    suite.write_text("name: bad\ntasks:\n  - {lm_eval: arc_easy, num_fewshot: 5}\n")
    refused = _run(saved_tiny_model, tmp_path / "bad", "--suite", str(suite))
    assert refused.exit_code != 0
    assert "tasks[0]: an lm_eval entry takes only 'lm_eval' and 'include'" in str(
        refused.exception or refused.output
    )
