"""`instructkit train` end to end on a tiny model, the files it leaves, and its config handling."""

from __future__ import annotations

import json

import pytest
import typer
import yaml
from typer.testing import CliRunner

from helpers.prepared import copy_dir
from instructkit.cli.app import app
from instructkit.cli.options import field_help, option_name
from instructkit.errors import InstructkitError
from instructkit.train.config import PRESETS, TINY_LEARNING_RATE, TrainConfig


def test_train_command_writes_model_tokenizer_metrics_config_and_card(tmp_path, tiny_tokenizer):
    data = copy_dir(tmp_path / "data", tiny_tokenizer, n=16, max_length=48)
    out = tmp_path / "out"
    args = [
        "train",
        "--data",
        str(data),
        "--model",
        "tiny:nano",
        "--output-dir",
        str(out),
        "--max-steps",
        "3",
        "--grad-accum",
        "2",
        "--logging-steps",
        "1",
        "--save-steps",
        "2",
        "--preset",
        "flan",
        "--no-progress",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    files = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "train_config.json",
        "metrics.jsonl",
        "README.md",
        "checkpoint-2",
    } <= files
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(
        {"loss", "learning_rate", "grad_norm", "tokens_per_second", "trainable_tokens"} <= r.keys()
        for r in rows
    )
    resolved = json.loads((out / "train_config.json").read_text())["resolved"]
    assert resolved["optimizer"] == "adafactor" and resolved["lr_scheduler"] == "constant"
    card = (out / "README.md").read_text()
    assert "tiny:nano" in card and str(data) in card and "examples_out" in card and "adafactor" in card


def test_config_file_and_flags_merge(tmp_path, tiny_tokenizer):
    data = copy_dir(tmp_path / "data", tiny_tokenizer, n=8, max_length=48)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": str(data),
                "output_dir": str(tmp_path / "o"),
                "model": "tiny:nano",
                "max_steps": 1,
                "progress": False,
                "lora_target_modules": ["q_proj"],
            }
        )
    )
    result = CliRunner().invoke(app, ["train", "--config", str(cfg), "--method", "lora", "--grad-accum", "1"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "o" / "train_config.json").read_text())
    assert saved["method"] == "lora" and saved["lora_target_modules"] == ["q_proj"]


def test_missing_data_directory_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(
        app, ["train", "--data", str(tmp_path / "nope"), "--output-dir", str(tmp_path)]
    )
    assert isinstance(result.exception, InstructkitError)
    assert "instructkit data prepare" in str(result.exception)


def test_bad_option_value_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(
        app, ["train", "--data", str(tmp_path), "--output-dir", str(tmp_path), "--objective", "kto"]
    )
    assert result.exit_code == 2  # refused while parsing, before anything loads
    assert "--objective" in result.output and "kto" in result.output


def test_presets_and_overrides_resolve():
    cfg = TrainConfig(data=".", output_dir=".", model="meta/llama", preset="tulu")
    assert cfg.optimizer_settings() == PRESETS["tulu"]
    flan = TrainConfig(data=".", output_dir=".", model="meta/llama", preset="flan", learning_rate=5e-4)
    s = flan.optimizer_settings()
    assert (s.optimizer, s.lr_scheduler, s.learning_rate) == ("adafactor", "constant", 5e-4)
    tulu_cosine = TrainConfig(data=".", output_dir=".", model="meta/llama", lr_scheduler="cosine")
    assert tulu_cosine.optimizer_settings().lr_scheduler == "cosine"
    assert TrainConfig(data=".", output_dir=".", model="tiny:micro").optimizer_settings().learning_rate == (
        TINY_LEARNING_RATE
    )


def test_config_rejects_contradictions():
    with pytest.raises(ValueError, match="merge_lora"):
        TrainConfig(data=".", output_dir=".", merge_lora=True)
    with pytest.raises(ValueError, match="resume and overwrite"):
        TrainConfig(data=".", output_dir=".", resume=True, overwrite=True)
    with pytest.raises(ValueError):
        TrainConfig(data=".", output_dir=".", unknown_field=1)


# Option names `train` had before its options were derived; scripts and docs/training.md type them.
TRAIN_OPTIONS = ["--data", "--output-dir", "-o", "--model", "--lr", "--learning-rate", "--grad-accum"]
TRAIN_OPTIONS += [
    "--max-steps",
    "--preset",
    "--method",
    "--objective",
    "--resume",
    "--no-progress",
    "--config",
]


def test_every_train_config_field_is_exactly_one_train_option_with_its_default_and_help():
    params = typer.main.get_command(app).commands["train"].params
    for name, field in TrainConfig.model_fields.items():
        matching = [p for p in params if p.name == name]
        assert len(matching) == 1, f"{name}: {len(matching)} parameters"
        (param,) = matching
        assert param.help == field_help(field), name
        assert param.opts[0] == option_name(name), name
        # data and output_dir may come from --config instead; every default is the model's own
        assert not param.required and param.default in (None, []), name
    opts = [o for p in params for o in p.opts + p.secondary_opts]
    assert len(opts) == len(set(opts)), "an option name is declared twice"
    assert set(TRAIN_OPTIONS) <= set(opts)


def test_train_without_data_names_the_missing_settings():
    result = CliRunner().invoke(app, ["train", "--max-steps", "1"])
    assert isinstance(result.exception, InstructkitError)
    message = str(result.exception)
    assert message.startswith("missing --data, --output-dir:") and "\n" not in message
