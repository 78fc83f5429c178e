"""A `--set` variant never deletes a finished stage: the old result is kept as `<stage>.<hash>/`, moved
back when its settings return, the dry-run says which folders are written, kept and reused, and
`--run-name` gives a variant a run folder of its own beside the recipe's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from instructkit.cli import run as pipeline_cli
from instructkit.cli.app import app
from instructkit.errors import InstructkitError
from instructkit.pipeline.recipe import load_recipe, run_root
from instructkit.pipeline.runner import build_pipeline

RECIPE = """\
name: variants
runs_dir: runs
sources: [data/train.jsonl]
prepare: {tokenizer: "tiny:nano", max_length: 64, pack: false}
train: {model: "tiny:nano", max_steps: 2, save_steps: 1000, micro_batch_size: 2, progress: false}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding the recipe and 8 chats (relative paths resolve here)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INSTRUCTKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pipeline_cli.console, "width", 250)  # one plan row per line
    (tmp_path / "data").mkdir()
    chats = [
        {
            "messages": [
                {"role": "user", "content": f"{i} plus one?"},
                {"role": "assistant", "content": f"{i + 1}."},
            ]
        }
        for i in range(8)
    ]
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    return tmp_path


def _recipe(**overrides: str):
    return load_recipe("recipe.yaml", overrides)[0]


def _hash(stage_dir: Path) -> str:
    return json.loads((stage_dir / "stage.json").read_text())["hash"]


def _plan_line(output: str, stage: str) -> str:
    return next(line for line in output.splitlines() if line.strip("│┃ ").startswith(stage + " "))


def test_a_set_variant_keeps_the_finished_stage_and_settings_coming_back_reuse_it(workdir):
    root = workdir / "runs" / "variants"
    build_pipeline(_recipe()).run(log=lambda _: None)
    first = _hash(root / "train")
    weights = (root / "train" / "model.safetensors").read_bytes()

    dry = CliRunner().invoke(app, ["run", "recipe.yaml", "--set", "train.max_steps=3", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    line = _plan_line(dry.output, "train")
    assert " run " in line and "setting train.max_steps changed" in line
    assert f"writes train/; the finished train/ is kept as train.{first}/" in line
    assert " cached " in _plan_line(dry.output, "prepare")
    assert not (root / f"train.{first}").exists()  # a dry run moves nothing

    log: list[str] = []
    build_pipeline(_recipe(**{"train.max_steps": "3"})).run(log=log.append)
    assert any(f"kept as train.{first}/" in line for line in log if line.startswith("[train] running")), log
    kept = root / f"train.{first}"
    assert _hash(kept) == first and (kept / "model.safetensors").read_bytes() == weights
    second = _hash(root / "train")
    assert (
        second != first
        and json.loads((root / "train" / "stage.json").read_text())["summary"]["global_step"] == 3
    )

    back = CliRunner().invoke(app, ["run", "recipe.yaml", "--dry-run"])
    line = _plan_line(back.output, "train")
    assert " reuse " in line and f"reuses train.{first}/" in line and f"kept as train.{second}/" in line

    log.clear()
    build_pipeline(_recipe()).run(log=log.append)
    assert [entry.split(" (")[0] for entry in log] == ["[prepare] cached", "[train] reused"]
    assert _hash(root / "train") == first and (root / "train" / "model.safetensors").read_bytes() == weights
    assert _hash(root / f"train.{second}") == second and not kept.exists()


def test_run_name_puts_a_variant_in_its_own_folder_beside_the_recipes_run(workdir):
    build_pipeline(_recipe()).run(log=lambda _: None)
    base = workdir / "runs" / "variants"
    before = _hash(base / "train")

    result = CliRunner().invoke(
        app, ["run", "recipe.yaml", "--set", "train.max_steps=3", "--run-name", "steps3", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert str(Path("runs") / "variants" / "steps3") in result.output.replace("\n", "")
    assert "writes train/" in _plan_line(result.output, "train")

    named = pipeline_cli.named_run(_recipe(**{"train.max_steps": "3"}), "steps3")
    assert run_root(named) == Path("runs") / "variants" / "steps3"
    build_pipeline(named).run(log=lambda _: None)
    assert json.loads((base / "steps3" / "train" / "stage.json").read_text())["summary"]["global_step"] == 3
    assert _hash(base / "train") == before and not list(base.glob("train.*"))  # the recipe's run untouched


@pytest.mark.parametrize("bad", ["train", "a/b", "..", "x.y"])
def test_run_name_must_be_one_folder_that_is_no_stage(workdir, bad):
    with pytest.raises(InstructkitError, match="run-name"):
        pipeline_cli.named_run(_recipe(), bad)
