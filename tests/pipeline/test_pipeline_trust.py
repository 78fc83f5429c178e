"""`instructkit run` never reuses a stale stage: local inputs hash by content, hub ids by revision,
the dry-run says why each stage reruns, and a recipe name cannot leave its run directory."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.chats import append_chats
from instructkit.cli import run as pipeline_cli
from instructkit.cli.app import app
from instructkit.errors import InstructkitError
from instructkit.pipeline.recipe import Recipe, load_recipe, run_root
from instructkit.pipeline.runner import build_pipeline

SOURCES_RECIPE = """\
name: trust
runs_dir: runs
sources: [data/train.jsonl]
prepare: {tokenizer: "tiny:nano", max_length: 64, pack: false}
"""

MIXTURE_RECIPE = """\
name: trust-mix
runs_dir: runs
mixture:
  tasks: [mine]
  catalog: [cat]
  data_root: cat
prepare: {tokenizer: "tiny:nano", max_length: 64, pack: false}
"""

TASK_YAML = """\
tasks:
  - {name: mine, cluster: user, source: {files: [rows.jsonl]}, split_fractions: {train: 1.0},
     templates: [{id: a, input: 'Q: {{ q }}', target: '{{ answer }}'}]}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working folder (relative paths in recipes resolve here) with its own digest memo."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INSTRUCTKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def append_rows(path: Path, start: int, count: int) -> None:
    with path.open("a", encoding="utf-8") as handle:
        for i in range(start, start + count):
            handle.write(json.dumps({"q": f"{i} + 1", "answer": str(i + 1)}) + "\n")


def sources_recipe(workdir: Path, **overrides: str) -> Recipe:
    (workdir / "recipe.yaml").write_text(SOURCES_RECIPE)
    return load_recipe(workdir / "recipe.yaml", overrides)[0]


def plan(recipe: Recipe) -> dict[str, tuple[str, list[str]]]:
    return {row.stage: (row.status, row.reasons) for row in build_pipeline(recipe).plan()}


def test_appended_rows_rerun_prepare_and_the_dry_run_names_the_file(workdir, monkeypatch):
    source = workdir / "data" / "train.jsonl"
    append_chats(source, 0, 8)
    recipe = sources_recipe(workdir)
    first = build_pipeline(recipe).run(log=lambda _: None)
    assert first["prepare"]["summary"]["examples_out"] == 8
    assert plan(recipe) == {"prepare": ("cached", [])}

    append_chats(source, 8, 4)
    assert plan(recipe) == {"prepare": ("run", ["source data/train.jsonl changed (content)"])}
    monkeypatch.setattr(pipeline_cli.console, "width", 200)  # one table row per line
    result = CliRunner().invoke(app, ["run", str(workdir / "recipe.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "source data/train.jsonl changed (content)" in result.output

    log: list[str] = []
    again = build_pipeline(recipe).run(log=log.append)
    assert again["prepare"]["summary"]["examples_out"] == 12
    assert log[0].startswith("[prepare] running") and "data/train.jsonl changed (content)" in log[0]


def test_touching_a_source_without_changing_it_keeps_the_stage_cached(workdir):
    source = workdir / "data" / "train.jsonl"
    append_chats(source, 0, 6)
    recipe = sources_recipe(workdir)
    build_pipeline(recipe).run(log=lambda _: None)
    record = json.loads((workdir / "runs" / "trust" / "prepare" / "stage.json").read_text())
    expected = "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["inputs"] == {"source data/train.jsonl": expected}

    later = source.stat().st_mtime_ns + 5_000_000_000
    os.utime(source, ns=(later, later))
    source.write_bytes(source.read_bytes())  # rewritten, same bytes: size equal, mtime new
    log: list[str] = []
    build_pipeline(recipe).run(log=log.append)
    assert [line.split(" (")[0] for line in log] == ["[prepare] cached"]


def test_plan_names_changed_task_data_task_file_setting_and_upstream(workdir):
    (workdir / "cat").mkdir()
    (workdir / "cat" / "t.yaml").write_text(TASK_YAML)
    append_rows(workdir / "cat" / "rows.jsonl", 0, 6)
    (workdir / "recipe.yaml").write_text(MIXTURE_RECIPE)
    recipe = load_recipe(workdir / "recipe.yaml")[0]
    build_pipeline(recipe).run(log=lambda _: None)
    assert plan(recipe) == {"mixture": ("cached", []), "prepare": ("cached", [])}

    longer = load_recipe(workdir / "recipe.yaml", {"prepare.max_length": "32"})[0]
    assert plan(longer) == {
        "mixture": ("cached", []),
        "prepare": ("run", ["setting prepare.max_length changed"]),
    }

    append_rows(workdir / "cat" / "rows.jsonl", 6, 1)
    (workdir / "cat" / "t.yaml").write_text(TASK_YAML.replace("Q: ", "Question: "))
    assert plan(recipe) == {
        "mixture": (
            "run",
            ["source cat/rows.jsonl changed (content)", "task file cat/t.yaml changed (content)"],
        ),
        "prepare": ("run", ["upstream mixture changed"]),
    }


def test_hub_sources_are_pinned_by_the_cached_revision_or_marked_unpinned(workdir, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(workdir / "hub"))
    recipe = sources_recipe(workdir, sources="['someone/chats:default@train']")
    [row] = build_pipeline(recipe).plan()
    assert row.notes == ["hub source someone/chats"] and "unpinned" in row.why

    refs = workdir / "hub" / "datasets--someone--chats" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("0123abcd")
    [stage] = build_pipeline(recipe).stages
    assert stage.input_digests() == {"hub source someone/chats": "hub:0123abcd"}
    [pinned] = build_pipeline(recipe).plan()
    assert pinned.notes == [] and pinned.digest != row.digest


@pytest.mark.parametrize("name", ["../../etc", "/etc/passwd", "a/../../b", "a//b", ".", "a\\..\\b"])
def test_a_recipe_name_cannot_leave_the_run_directory(workdir, name):
    (workdir / "recipe.yaml").write_text(SOURCES_RECIPE)
    with pytest.raises(InstructkitError, match=r"name: .*recipe name .* not a plain relative folder"):
        load_recipe(workdir / "recipe.yaml", {"name": name})
    unchecked = Recipe.model_construct(name=name, runs_dir="runs")  # built in code, not validated
    with pytest.raises(InstructkitError, match="recipe name"):
        run_root(unchecked)


def test_sweep_labels_are_single_folder_names_and_nested_names_stay_inside(workdir):
    (workdir / "recipe.yaml").write_text(
        SOURCES_RECIPE + "sweep: {metrics: ['train:final_loss'], variants: [{label: '../x'}]}\n"
    )
    with pytest.raises(InstructkitError, match=r"sweep.variants.0.label: .*'\.\./x'"):
        load_recipe(workdir / "recipe.yaml")
    nested = sources_recipe(workdir, name="group/arm")
    assert run_root(nested) == Path("runs") / "group" / "arm"


def test_task_rows_see_rows_appended_within_one_process(tmp_path):
    """The per-process row cache keys on file content: an appended row is read, not served stale."""
    import yaml

    from instructkit.data.tasks import load_catalog, task_rows

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"q": f"q{i}", "a": f"a{i}"}) + "\n" for i in range(4)))
    task = {
        "name": "appendable",
        "cluster": "demo",
        "splits": {"train": {"files": [str(data)]}},
        "fields": {"question": "q", "answer": "a"},
        "templates": [{"id": "t0", "input": "{{ question }}", "target": "{{ answer }}"}],
    }
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "appendable.yaml").write_text(yaml.safe_dump({"tasks": [task]}))
    loaded = load_catalog([tmp_path / "catalog"])["appendable"]
    before = sum(len(task_rows(loaded, s)) for s in loaded.split_names())
    with data.open("a") as handle:
        handle.write(json.dumps({"q": "q4", "a": "a4"}) + "\n")
    after = sum(len(task_rows(loaded, s)) for s in loaded.split_names())
    assert (before, after) == (4, 5)
