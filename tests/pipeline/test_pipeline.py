"""`instructkit run`: recipes validate, stages cache by hash, a small quickstart runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from instructkit.cli.app import app
from instructkit.errors import InstructkitError
from instructkit.pipeline.recipe import RECIPES_DIR, load_recipe
from instructkit.pipeline.report import SECTIONS
from instructkit.pipeline.runner import build_pipeline

SMALL = {
    "mixture.rate.cap": "20",
    "mixture.tasks": "[{cluster: arithmetic}, {cluster: list_ops}, {cluster: comparison}]",
    "prepare.tokenizer": "tiny:nano",
    "prepare.max_length": "256",
    "train.model": "tiny:nano",
    "train.epochs": "1",
    "train.save_steps": "1000",
    "train.progress": "false",
    "evaluate.sets": "[{name: heldout_rows, tasks: ['@train'], templates: train, limit: 2},"
    " {name: heldout_cluster, clusters: [comparison], limit: 3, k_shot: [0, 1]}]",
}


def small_recipe(tmp_path: Path, **extra: str):
    return load_recipe("quickstart", {**SMALL, "runs_dir": str(tmp_path), **extra})[0]


def shipped_recipes() -> list[Path]:
    return sorted(RECIPES_DIR.rglob("*.yaml"))


@pytest.mark.parametrize("path", shipped_recipes(), ids=lambda p: str(p.relative_to(RECIPES_DIR)))
def test_every_shipped_recipe_validates_with_dry_run(path):
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "train" in result.output
    assert ("== variant" in result.output) if "sweep:" in path.read_text() else ("plan" in result.output)


def test_recipe_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmixture: {tasks: [{cluster: arithmetic}]}\nprepare: {max_lenght: 5}\n")
    with pytest.raises(
        InstructkitError, match=r"bad.yaml: prepare.max_lenght: unknown key; did you mean `max_length`\?"
    ):
        load_recipe(bad)


def test_hash_changes_only_downstream_of_a_changed_setting(tmp_path):
    before = {r.stage: r.digest for r in build_pipeline(small_recipe(tmp_path)).plan()}
    after = {
        r.stage: r.digest
        for r in build_pipeline(small_recipe(tmp_path, **{"train.learning_rate": "0.01"})).plan()
    }
    assert [s for s in before if before[s] != after[s]] == ["train", "eval-tuned", "report"]


@pytest.mark.slow
def test_small_quickstart_end_to_end_then_cached_then_partial_rerun(tmp_path):
    recipe = small_recipe(tmp_path)
    records = build_pipeline(recipe).run(log=lambda _: None)
    root = tmp_path / "quickstart"
    report = (root / "report.md").read_text()
    for section in SECTIONS:
        assert f"## {section}" in report
    for chart in ("loss.png", "sets.png", "tasks.png"):
        assert (root / "report" / chart).stat().st_size > 1000
    assert {"heldout_rows/0-shot", "heldout_cluster/0-shot", "heldout_cluster/1-shot"} <= set(
        json.loads((root / "eval-tuned" / "results.json").read_text())["clusters"]
    )
    assert records["train"]["summary"]["global_step"] > 0

    again = []
    build_pipeline(recipe).run(log=again.append)
    assert all("cached" in line for line in again), again

    changed = small_recipe(
        tmp_path, **{"evaluate.sets": "[{name: heldout_rows, tasks: ['@train'], limit: 1}]"}
    )
    log: list[str] = []
    build_pipeline(changed).run(log=log.append)
    ran = [line.split("]")[0][1:] for line in log if "running" in line]
    assert ran == ["eval-base", "eval-tuned", "report"]
