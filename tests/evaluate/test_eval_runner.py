"""End-to-end evaluation runs: batch-size independence, resuming from the request cache, results files,
reports, comparisons and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.paths import FIXTURES_ROOT
from instructkit.evaluate.backends.hf import HFBackend
from instructkit.evaluate.config import EvalConfig
from instructkit.evaluate.eval_report import compare, write_report
from instructkit.evaluate.runner import evaluate

FIXTURES = FIXTURES_ROOT / "eval"
TASKS = ["boolq", "hellaswag", "arc", "tydiqa:max_new_tokens=6", "mmlu:num_fewshot=2"]


def _per_example(run: dict, out: Path) -> dict:
    return {p.name: p.read_text() for p in sorted((out / "samples").glob("*.jsonl"))}


def _records(out: Path) -> dict:
    rows = {}
    for path in sorted((out / "samples").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            rows[(path.name, r["id"])] = r
    return rows


def test_batch_1_and_16_give_identical_per_example_results(tiny_model, tiny_tokenizer, tmp_path):
    runs = {}
    for bs in (1, 16):
        out = tmp_path / f"bs{bs}"
        config = EvalConfig(tasks=TASKS, data_dir=str(FIXTURES), batch_size=bs)
        evaluate(tiny_model, tiny_tokenizer, config=config, out_dir=out)
        runs[bs] = _records(out)
    assert runs[1].keys() == runs[16].keys() and len(runs[1]) == 15
    for key, a in runs[1].items():
        b = runs[16][key]
        assert {k: v for k, v in a.items() if k != "loglikelihoods"} == {
            k: v for k, v in b.items() if k != "loglikelihoods"
        }
        assert a.get("loglikelihoods", []) == pytest.approx(b.get("loglikelihoods", []), abs=1e-4)


class _Interrupted(HFBackend):
    """Fault injection: the real backend, dying after `allowed` calls (like a killed job)."""

    allowed = 1

    def loglikelihood(self, requests):
        if self.allowed <= 0:
            raise KeyboardInterrupt
        self.allowed -= 1
        return super().loglikelihood(requests)


def test_interrupted_run_resumes_from_cache_and_ends_the_same(tiny_model, tiny_tokenizer, tmp_path):
    config = EvalConfig(tasks=["boolq", "hellaswag", "arc"], data_dir=str(FIXTURES))
    full = evaluate(tiny_model, tiny_tokenizer, config=config, out_dir=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        evaluate(_Interrupted(tiny_model, tiny_tokenizer), config=config, out_dir=tmp_path / "resumed")
    resumed = evaluate(tiny_model, tiny_tokenizer, config=config, out_dir=tmp_path / "resumed")
    assert resumed["cache"]["hits"] > 0 and resumed["cache"]["misses"] > 0
    assert {k: v["score"] for k, v in resumed["tasks"].items()} == {
        k: v["score"] for k, v in full["tasks"].items()
    }
    again = evaluate(tiny_model, tiny_tokenizer, config=config, out_dir=tmp_path / "resumed")
    assert again["cache"]["misses"] == 0


def test_results_file_report_and_compare(tiny_model, tiny_tokenizer, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    config = EvalConfig(tasks=["boolq", "arc"], data_dir=str(FIXTURES))
    res = evaluate(tiny_model, tiny_tokenizer, config=config, out_dir=a)
    chat = config.model_copy(update={"prompt_style": "chat"})
    evaluate(tiny_model, tiny_tokenizer, config=chat, out_dir=b)
    saved = json.loads((a / "results.json").read_text())
    assert (
        saved["tasks"]["boolq"]["random_baseline"] == 50.0
        and len(saved["tasks"]["boolq"]["data_sha256"]) == 64
    )
    assert saved["versions"]["transformers"] and saved["config"]["batch_size"] == 16
    boolq = res["tasks"]["boolq"]
    assert boolq["normalized"] == pytest.approx(100 * (boolq["score"] - 50) / 50)
    assert "auc_roc" in boolq["metrics"]
    report = write_report([a, b], tmp_path / "report")
    text = report.read_text()
    assert "| boolq | acc | 50.0 |" in text and "normalized average" in text
    assert all(
        (tmp_path / "report" / f"{n}.png").stat().st_size > 0
        for n in ("tasks", "groups")  # groups.png carries the normalized average too
    )
    rows = compare(a, b)
    assert {r["task"] for r in rows} == {"boolq", "arc_challenge"}
    for r in rows:
        assert r["delta"] == pytest.approx(r["b"] - r["a"]) and r["ci95"][0] <= r["ci95"][1]


def test_cli_run_report_compare(tiny_model, tiny_tokenizer, tmp_path):
    from instructkit.cli.app import app

    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    runner = CliRunner()
    for name in ("r1", "r2"):
        done = runner.invoke(
            app,
            [
                "eval",
                "run",
                "--model",
                str(model_dir),
                "--tasks",
                "boolq",
                "--tasks",
                "arc",
                "--data-dir",
                str(FIXTURES),
                "--out",
                str(tmp_path / name),
                "--batch-size",
                "4",
            ],
        )
        assert done.exit_code == 0, done.output
        assert "boolq" in done.output
    done = runner.invoke(app, ["eval", "report", str(tmp_path / "r1"), str(tmp_path / "r2")])
    assert done.exit_code == 0 and (tmp_path / "r1" / "report.md").is_file()
    done = runner.invoke(app, ["eval", "compare", str(tmp_path / "r1"), str(tmp_path / "r2")])
    assert done.exit_code == 0 and "+0.0" in done.output  # same model, same data: zero delta


def test_limit_truncates_the_named_benchmarks_not_tasks_built_elsewhere(tiny_model, tiny_tokenizer):
    """A recipe's catalog sets carry their own limit; `limit` (its benchmark_limit) must not cut them."""
    from instructkit.evaluate.catalog_tasks import catalog_eval_tasks

    catalog_task = catalog_eval_tasks(["entail_location"], limit=3)[0]
    config = EvalConfig(tasks=["boolq"], data_dir=str(FIXTURES), limit=1, use_cache=False)
    res = evaluate(tiny_model, tiny_tokenizer, tasks=[catalog_task], config=config)
    assert res["tasks"][catalog_task.name]["n"] == 3 and res["tasks"]["boolq"]["n"] == 1
