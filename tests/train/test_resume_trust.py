"""A resumed run is the same run: a checkpoint records what it was made under (settings, data and
model by content; in a pipeline also its stage key), `train --resume` refuses to continue it with
anything else and names the difference (unless forced), and `instructkit run` sets such checkpoints
aside (never deletes them) and starts over, saying so in the dry-run and the log."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.chats import append_chats
from helpers.prepared import copy_dir
from instructkit.cli.app import app
from instructkit.errors import InstructkitError
from instructkit.pipeline.recipe import load_recipe
from instructkit.pipeline.runner import build_pipeline
from instructkit.train import checkpoint as ckpt
from instructkit.train.config import PREFERENCE_FIELDS, TrainConfig
from instructkit.train.run import train

STEPS, SAVE_EVERY = 4, 2


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    fields = dict(
        model="tiny:nano",
        max_steps=STEPS,
        gradient_accumulation_steps=1,
        logging_steps=1,
        save_steps=SAVE_EVERY,
        save_total_limit=2,
        progress=False,
    )
    return TrainConfig(data=data, output_dir=out, **{**fields, **kw})


def _losses(out: Path) -> list[tuple[int, float]]:
    rows = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_tokenizer) -> Path:
    return copy_dir(tmp_path_factory.mktemp("resume-trust") / "data", tiny_tokenizer, n=24, max_length=48)


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory) -> Path:
    """A run of 4 steps with checkpoints at 2 and 4 (its losses are the uninterrupted reference)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(_config(data, out))
    return out


@pytest.fixture
def unfinished(finished, tmp_path) -> Path:
    """The finished run as if killed after checkpoint-2: checkpoint-4 gone."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    shutil.rmtree(out / "checkpoint-4")
    return out


# One change of each kind a run's identity covers: settings (as given and as resolved from a preset),
# the model, its initialisation, the method, and the data by content.
CHANGES = {
    "learning_rate": ({"learning_rate": 5e-4}, "learning_rate changed since checkpoint-2 (0.001 → 0.0005)"),
    "preset": ({"preset": "flan"}, 'optimizer changed since checkpoint-2 ("adamw" → "adafactor")'),
    "seed": ({"seed": 7}, "seed changed since checkpoint-2 (42 → 7)"),
    "accumulation": ({"gradient_accumulation_steps": 2}, "gradient_accumulation_steps changed"),
    "max_steps": ({"max_steps": 6}, "max_steps changed since checkpoint-2 (4 → 6)"),
    "method": ({"method": "lora"}, "method changed since checkpoint-2"),
    "model": ({"model": "tiny:micro"}, 'model changed since checkpoint-2 ("tiny:nano" → "tiny:micro")'),
    "tiny_seed": ({"tiny_seed": 3}, "tiny_seed changed since checkpoint-2 (0 → 3)"),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_resume_with_another_setting_or_model_is_refused_naming_it(data, unfinished, change):
    update, named = change
    before = sorted(p.name for p in unfinished.iterdir())
    with pytest.raises(InstructkitError) as err:
        train(_config(data, unfinished, resume=True, **update))
    assert named in str(err.value) and "--force-resume" in str(err.value)
    assert sorted(p.name for p in unfinished.iterdir()) == before  # nothing touched


def test_resume_on_other_data_is_refused_and_the_same_data_elsewhere_is_not(
    data, unfinished, tmp_path, tiny_tokenizer
):
    other = copy_dir(tmp_path / "other", tiny_tokenizer, n=24, max_length=48, seed=1)
    with pytest.raises(InstructkitError, match="training data changed since checkpoint-2"):
        train(_config(other, unfinished, resume=True))
    moved = shutil.copytree(data, tmp_path / "moved")  # same content, another path
    resumed = train(_config(moved, unfinished, resume=True))
    assert resumed.resumed_from.name == "checkpoint-2" and resumed.global_step == STEPS


def test_every_setting_counts_unless_it_only_says_where_to_write_or_how_to_log(data, tmp_path):
    """The class: a TrainConfig field joins the identity by default; leaving one out is a named choice."""
    identity = ckpt.run_identity(_config(data, tmp_path, max_steps=-1))  # tulu: linear decay, by epochs
    # Preference settings shape nothing in an SFT run and are left out of its dumps (PREFERENCE_FIELDS) ...
    sft_fields = set(TrainConfig.model_fields) - ckpt.NOT_IDENTITY - set(PREFERENCE_FIELDS)
    assert sft_fields <= set(identity["settings"])
    # ... and count in a DPO run.
    dpo = ckpt.run_identity(_config(data, tmp_path, max_steps=-1, objective="dpo"))
    assert set(PREFERENCE_FIELDS) <= set(dpo["settings"])
    assert set(TrainConfig.model_fields) >= ckpt.NOT_IDENTITY  # no stale names
    resolved = {"optimizer", "learning_rate", "lr_scheduler", "warmup_ratio", "weight_decay", "precision"}
    assert resolved <= set(identity["settings"])


def test_a_constant_learning_rate_run_may_be_extended_and_ends_where_the_longer_run_ends(data, tmp_path):
    """Under a constant rate (flan preset) the length shapes no step: a 2-step run resumed to 4 is exact."""
    longer = train(_config(data, tmp_path / "longer", preset="flan"))
    short = tmp_path / "short"
    train(_config(data, short, preset="flan", max_steps=2))
    extended = train(_config(data, short, preset="flan", resume=True))
    assert extended.resumed_from.name == "checkpoint-2"
    assert _losses(short) == _losses(longer.output_dir)


def test_output_and_logging_settings_do_not_block_an_exact_resume(data, finished, unfinished):
    changed = {"logging_steps": 1, "save_total_limit": 3, "report_to": [], "dataloader_num_workers": 0}
    resumed = train(_config(data, unfinished, resume=True, save_steps=3, **changed))
    assert resumed.resumed_from.name == "checkpoint-2"
    assert _losses(unfinished) == _losses(finished)  # ends where the uninterrupted run ends


def test_force_resume_continues_and_records_what_changed(data, unfinished, capfd):
    resumed = train(_config(data, unfinished, force_resume=True, learning_rate=5e-4))
    assert resumed.resumed_from.name == "checkpoint-2" and resumed.global_step == STEPS
    assert (
        "resuming anyway (--force-resume): learning_rate changed since checkpoint-2" in capfd.readouterr().err
    )
    ran = json.loads((unfinished / "train_config.json").read_text())
    assert ran["forced_resume"]["from"] == "checkpoint-2"
    assert ran["forced_resume"]["changes"][0].startswith("learning_rate changed since checkpoint-2")
    record = ckpt.read_provenance(unfinished / "checkpoint-4")  # written after the forced resume
    assert (
        record["train"]["settings"]["learning_rate"] == 5e-4
        and record["forced_resume"]["from"] == "checkpoint-2"
    )
    again = train(_config(data, unfinished, resume=True, learning_rate=5e-4, max_steps=STEPS))
    assert again.resumed_from.name == "checkpoint-4"  # later resumes compare with the new record
    kept = json.loads((unfinished / "train_config.json").read_text())["forced_resume"]
    assert kept["from"] == "checkpoint-2"  # and the run still says it was forced once


def test_a_checkpoint_without_a_record_is_of_unknown_provenance(data, unfinished):
    (unfinished / "checkpoint-2" / ckpt.PROVENANCE).unlink()
    with pytest.raises(InstructkitError, match=r"checkpoint-2 has no record .*\(unknown provenance\)"):
        train(_config(data, unfinished, resume=True))
    forced = train(_config(data, unfinished, force_resume=True))
    assert forced.resumed_from.name == "checkpoint-2"


def test_the_train_command_refuses_then_forces(data, unfinished):
    args = ["train", "--data", str(data), "-o", str(unfinished), "--model", "tiny:nano", "--no-progress"]
    args += ["--max-steps", str(STEPS), "--save-steps", "2", "--grad-accum", "1", "--lr", "0.0005"]
    refused = CliRunner().invoke(app, [*args, "--resume"])
    assert isinstance(refused.exception, InstructkitError)
    assert "learning_rate changed since checkpoint-2 (0.001 → 0.0005)" in str(refused.exception)
    forced = CliRunner().invoke(app, [*args, "--force-resume"])
    assert forced.exit_code == 0, forced.output
    with pytest.raises(ValueError, match="force_resume and overwrite"):
        _config(data, unfinished, force_resume=True, overwrite=True)


def test_set_aside_moves_checkpoints_and_metrics_and_deletes_nothing(finished, tmp_path):
    out = shutil.copytree(finished, tmp_path / "run")
    weights = (out / "checkpoint-2" / "model.safetensors").read_bytes()
    moved = ckpt.set_aside(out)
    assert ckpt.checkpoints(out) == [] and not (out / "metrics.jsonl").exists()
    names = sorted(p.name.rsplit("-", 2)[0] for p in moved)
    assert names == ["checkpoint-2", "checkpoint-4", "metrics"]
    assert all(p.parent == out / ckpt.SUPERSEDED for p in moved)
    [kept] = [p for p in moved if p.name.startswith("checkpoint-2-")]
    assert (kept / "model.safetensors").read_bytes() == weights
    assert len(ckpt.set_aside(shutil.copytree(finished, tmp_path / "again"))) == 3


# --- instructkit run: the train stage ---------------------------------------------------------------

RECIPE = """\
name: resume
runs_dir: runs
sources: [data/train.jsonl]
prepare: {tokenizer: "tiny:nano", max_length: 64, pack: false}
train: {model: "tiny:nano", max_steps: 4, save_steps: 2, save_total_limit: 2, logging_steps: 1,
        gradient_accumulation_steps: 1, progress: false}
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A working folder with the recipe, its source and a finished run (prepare, 4 training steps)."""
    root = tmp_path_factory.mktemp("pipeline-resume")
    append_chats(root / "data" / "train.jsonl", 0, 12)
    (root / "recipe.yaml").write_text(RECIPE)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("INSTRUCTKIT_CACHE", str(root / "cache"))
        build_pipeline(load_recipe(root / "recipe.yaml")[0]).run(log=lambda _: None)
    return root


@pytest.fixture
def killed_run(finished_run, tmp_path, monkeypatch) -> Path:
    """The finished run copied and cut back to what a kill after checkpoint-2 leaves; cwd is its folder."""
    root = shutil.copytree(finished_run, tmp_path / "work")
    monkeypatch.chdir(root)
    monkeypatch.setenv("INSTRUCTKIT_CACHE", str(root / "cache"))
    stage = root / "runs" / "resume" / "train"
    (stage / "stage.json").unlink()
    shutil.rmtree(stage / "checkpoint-4")
    return root


def _train_plan(root: Path, **overrides: str) -> list[str]:
    recipe = load_recipe(root / "recipe.yaml", overrides)[0]
    return {row.stage: row.reasons for row in build_pipeline(recipe).plan()}["train"]


def _run(root: Path, **overrides: str) -> tuple[dict, list[str]]:
    log: list[str] = []
    recipe = load_recipe(root / "recipe.yaml", overrides)[0]
    return build_pipeline(recipe).run(log=log.append)["train"], log


def test_an_unfinished_stage_with_the_same_key_resumes_exactly(killed_run, finished_run):
    assert _train_plan(killed_run) == ["unfinished (no stage.json)", "resume from checkpoint-2"]
    record, log = _run(killed_run)
    assert record["summary"]["resumed_from"] == "checkpoint-2" and record["summary"]["set_aside"] == []
    assert "resume from checkpoint-2" in log[-1]
    stage = Path("runs/resume/train")
    assert _losses(stage) == _losses(finished_run / stage)


STARTS_OVER = {
    "setting": (
        {"train.learning_rate": "0.0005"},
        "setting train.learning_rate changed since checkpoint-2",
    ),
    "data": ({}, "training data changed since checkpoint-2 (stage prepare reran)"),
    "initialisation": ({"train.tiny_seed": "5"}, "setting train.tiny_seed changed since checkpoint-2"),
}


@pytest.mark.parametrize("case", STARTS_OVER.values(), ids=STARTS_OVER.keys())
def test_an_unfinished_stage_under_another_key_starts_over_and_sets_its_checkpoints_aside(
    killed_run, tmp_path, monkeypatch, case
):
    overrides, named = case
    if not overrides:  # rows appended: prepare reruns, so the training data differs
        append_chats(killed_run / "data" / "train.jsonl", 12, 4)
    note = f"start over: {named} (its checkpoints go to superseded/)"
    assert note in _train_plan(killed_run, **overrides)
    record, log = _run(killed_run, **overrides)
    assert note in log[-1]
    stage = Path("runs/resume/train")
    assert record["summary"]["resumed_from"] is None
    assert sorted(Path(p).name.rsplit("-", 2)[0] for p in record["summary"]["set_aside"]) == [
        "checkpoint-2",
        "metrics",
    ]
    [old] = (stage / "superseded").glob("checkpoint-2-*")
    assert (old / "model.safetensors").is_file() and ckpt.read_provenance(old)["stage"]["hash"]

    # The finished stage is what a fresh run with the new key computes, every step of it.
    fresh = shutil.copytree(killed_run, tmp_path / "fresh")
    shutil.rmtree(fresh / stage)
    monkeypatch.chdir(fresh)
    fresh_record, _ = _run(fresh, **overrides)
    assert _losses(killed_run / stage) == _losses(fresh / stage)
    assert record["hash"] == fresh_record["hash"]


def test_a_checkpoint_without_a_stage_key_is_set_aside_and_the_dry_run_says_so(killed_run, monkeypatch):
    from instructkit.cli import run as pipeline_cli

    stage = Path("runs/resume/train")
    (stage / "checkpoint-2" / ckpt.PROVENANCE).unlink()  # written before checkpoints recorded a key
    note = "start over: checkpoint-2 has no record of the stage key it was made under (unknown provenance)"
    monkeypatch.setattr(pipeline_cli.console, "width", 250)  # one table row per line
    result = CliRunner().invoke(app, ["run", str(killed_run / "recipe.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert note in result.output
    record, _ = _run(killed_run)
    assert record["summary"]["resumed_from"] is None and len(record["summary"]["set_aside"]) == 2
    assert not (stage / "stage-key.json").exists()  # stage.json holds the key now
    first = json.loads((stage / "stage.json").read_text())["hash"]
    _run(killed_run, **{"train.seed": "3"})  # a finished stage rerun: kept whole, with what was set aside
    assert len(list((stage.with_name(f"train.{first}") / "superseded").glob("checkpoint-2-*"))) == 1
