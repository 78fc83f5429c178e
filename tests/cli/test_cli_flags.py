"""Flags people already know: whole option names in piped help, TRL / lm-eval / axolotl spellings,
`--version`, one clear line for missing options, and what `doctor` checks for them."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest
import typer
from typer import rich_utils
from typer.testing import CliRunner

from instructkit import cli
from instructkit.cli.app import app, normalize_option_names
from instructkit.cli.evaluate import split_task_list
from instructkit.errors import InstructkitError


class Stop(Exception):
    """Raised by a recorder in place of the heavy work a command would start after parsing."""


def _main(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    """Run the console entry `instructkit ARGV` in this process; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["instructkit", *argv])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    out = capsys.readouterr()
    return int(stopped.value.code or 0), out.out, out.err


@pytest.fixture
def piped(monkeypatch):
    """Help read from a pipe with no COLUMNS set; rich's width is restored afterwards."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("TERMINAL_WIDTH", raising=False)
    monkeypatch.setattr(rich_utils, "MAX_WIDTH", rich_utils.MAX_WIDTH)


def _leaf_commands(command=None, path=()):
    command = command or typer.main.get_command(app)
    for name, sub in getattr(command, "commands", {}).items():
        if getattr(sub, "commands", None):
            yield from _leaf_commands(sub, (*path, name))
        else:
            yield (*path, name), sub


def test_piped_help_shows_every_option_name_whole_and_flags_without_a_type(monkeypatch, capsys, piped):
    for path, command in _leaf_commands():
        code, out, _ = _main(monkeypatch, capsys, *path, "--help")
        assert code == 0, path
        assert "…" not in out, f"{' '.join(path)} --help cuts a name"
        assert "<bool>" not in out, f"{' '.join(path)} --help shows <bool> after a flag"
        for param in command.params:
            for name in param.opts + param.secondary_opts:
                assert name in out, f"{' '.join(path)} --help lacks {name}"


def test_help_lists_the_aliases_beside_the_option(monkeypatch, capsys, piped):
    _, out, _ = _main(monkeypatch, capsys, "train", "--help")
    assert "--learning-rate,--lr" in out
    assert "--epochs,--num-train-epochs,--num-epochs" in out
    assert "--micro-batch-size,--per-device-train-batch-size" in out
    _, out, _ = _main(monkeypatch, capsys, "eval", "run", "--help")
    assert "--out,--output-path" in out


def test_version_prints_the_package_version(monkeypatch, capsys):
    code, out, _ = _main(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == f"instructkit {metadata.version('instructkit')}"


def test_train_without_options_names_the_missing_ones_in_one_line(monkeypatch, capsys):
    code, out, err = _main(monkeypatch, capsys, "train")
    assert code == 2 and out == ""
    assert err.strip().startswith("error: missing --data, --output-dir:") and err.count("\n") == 1
    assert "Field required" not in err


def test_every_command_with_required_parameters_names_them_without_pydantic_text():
    for path, command in _leaf_commands():
        required = [p for p in command.params if p.required]
        if not required:
            continue
        result = CliRunner().invoke(app, list(path))
        assert result.exit_code == 2, path
        assert "Missing" in result.output and required[0].name in result.output.replace("-", "_"), path
        assert "Field required" not in result.output and "validation error" not in result.output, path


def _record_train(monkeypatch) -> list:
    """Replace the training run (not the parsing) with a recorder of the TrainConfig it receives."""
    seen: list = []

    def record(config):
        seen.append(config)
        raise Stop

    monkeypatch.setattr("instructkit.train.run.train", record)
    return seen


SPELLINGS = [  # (theirs, ours): each pair must give the same TrainConfig
    (["--learning_rate", "1e-3"], ["--learning-rate", "1e-3"]),
    (["--num_train_epochs", "3"], ["--epochs", "3"]),
    (["--num_epochs", "3"], ["--epochs", "3"]),
    (["--per_device_train_batch_size", "4"], ["--micro-batch-size", "4"]),
    (["--gradient_accumulation_steps", "2"], ["--grad-accum", "2"]),
    (["--model_name_or_path", "tiny:nano"], ["--model", "tiny:nano"]),
    (["--base_model", "tiny:nano"], ["--model", "tiny:nano"]),
    (["--lr_scheduler_type", "constant_with_warmup"], ["--lr-scheduler", "constant_with_warmup"]),
    (["--gradient_checkpointing"], ["--gradient-checkpointing"]),
    (["--save_total_limit=3"], ["--save-total-limit", "3"]),
]


@pytest.mark.parametrize(("theirs", "ours"), SPELLINGS)
def test_trl_and_axolotl_spellings_reach_the_same_field(monkeypatch, capsys, tmp_path, theirs, ours):
    seen = _record_train(monkeypatch)
    for argv in (["--data", str(tmp_path), "--output_dir", str(tmp_path), *theirs],
                 ["--data", str(tmp_path), "--output-dir", str(tmp_path), *ours]):  # fmt: skip
        code, _, _ = _main(monkeypatch, capsys, "train", *argv)
        assert code == 1  # the recorder stopped it after parsing
    assert len(seen) == 2
    assert seen[0] == seen[1]
    assert seen[0].model_dump() != _default_train(tmp_path).model_dump()  # the flag did set something


def _default_train(tmp_path: Path):
    from instructkit.train.config import TrainConfig

    return TrainConfig(data=tmp_path, output_dir=tmp_path)


def test_spellings_without_a_twin_get_what_to_type(monkeypatch, capsys):
    code, _, err = _main(monkeypatch, capsys, "train", "--resume_from_checkpoint", "runs/x/checkpoint-5")
    assert code == 2 and "--resume" in err and "--output-dir" in err
    code, _, err = _main(monkeypatch, capsys, "eval", "run", "--num_fewshot", "5")
    assert code == 2 and "num_fewshot=8" in err
    code, _, err = _main(monkeypatch, capsys, "train", "--bf16")
    assert code == 2 and "--precision bf16" in err


def test_a_near_miss_gets_click_suggestion(monkeypatch, capsys):
    code, _, err = _main(monkeypatch, capsys, "train", "--lr-schedular", "cosine")
    assert code == 2 and "--lr-scheduler" in err


def test_only_option_names_are_normalized():
    argv = ["--output_dir=/a_b", "-o", "x_y", "--set", "train.max_steps=5", "--", "--x_y"]
    assert normalize_option_names(argv) == [
        "--output-dir=/a_b", "-o", "x_y", "--set", "train.max_steps=5", "--", "--x_y"
    ]  # fmt: skip
    with pytest.raises(InstructkitError, match="--precision fp16"):
        normalize_option_names(["--fp16"])


def test_lm_eval_comma_task_lists_split_between_specs_not_inside_them():
    assert split_task_list(["arc_easy,hellaswag"]) == ["arc_easy", "hellaswag"]
    assert split_task_list(["gsm8k:cot=true,num_fewshot=8,mmlu", "bbh"]) == [
        "gsm8k:cot=true,num_fewshot=8",
        "mmlu",
        "bbh",
    ]
    assert split_task_list(["gsm8k,num_fewshot=5"]) == ["gsm8k:num_fewshot=5"]


def test_eval_run_reads_lm_eval_spellings(monkeypatch, capsys, tmp_path):
    seen: dict = {}

    def record(engine, config, out_dir):
        seen.update(config=config, out=out_dir)
        raise Stop

    monkeypatch.setattr("instructkit.evaluate.backends.load.load_backend", lambda *a, **k: None)
    monkeypatch.setattr("instructkit.evaluate.runner.evaluate", record)
    argv = ["eval", "run", "--model", "m", "--output_path", str(tmp_path), "--tasks", "arc_easy,hellaswag"]
    code, _, _ = _main(monkeypatch, capsys, *argv, "--batch_size", "4")
    assert code == 1 and seen["out"] == tmp_path
    assert seen["config"].tasks == ["arc_easy", "hellaswag"] and seen["config"].batch_size == 4


def test_doctor_checks_the_attention_packed_training_uses():
    from instructkit.cli.doctor_checks import DOCS, Report, check_attention

    report = Report()
    check_attention(report)
    rows = {c.name: c for c in report.checks}
    assert rows[DOCS].ok and "isolated" in rows[DOCS].detail
    import torch

    if not torch.cuda.is_available():  # on a CPU packed training runs per-document attention
        assert rows["training uses"].ok and rows["training uses"].detail.startswith(DOCS)


def test_recipe_needs_the_hub_when_it_names_hub_models_or_data(tmp_path, monkeypatch):
    from instructkit.cli.doctor_checks import hub_references, recipe_needs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "local_model").mkdir()
    offline = {"train": {"model": "tiny:small"}, "prepare": {"tokenizer": "tiny"}, "sources": ["d.jsonl"]}
    assert recipe_needs(offline) == []
    assert recipe_needs({"train": {"model": "local_model"}}) == []  # a folder on disk wins
    assert recipe_needs({"train": {"model": "pretrained:smollm2-135m"}}) == []
    assert recipe_needs({"train": {"model": "Qwen/Qwen2.5-0.5B"}}) == ["hub"]
    data = {"sources": ["allenai/tulu-v2-sft-mixture@train"], "train": {"model": "tiny:nano"}}
    assert hub_references(data) == ["allenai/tulu-v2-sft-mixture@train"]
    assert recipe_needs(data) == ["hub"]
