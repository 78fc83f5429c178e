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

from instructkit.cli import app  # noqa: E402
from instructkit.errors import HubUnreachableError, InstructkitError  # noqa: E402
from instructkit.evaluate.lm_eval_local import local_task_dir  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "lm_eval"
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
