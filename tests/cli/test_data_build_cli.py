"""`data build` and `data prepare`: their options come from MixtureConfig / PrepareConfig (help written
once, at the field), the value given on the command line is the one used, and the executor options of
every command that has them are declared once (ExecutorSettings)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import typer
from typer.testing import CliRunner

from instructkit.cli.app import app
from instructkit.cli.options import field_help, option_name
from instructkit.data.mixture import build_mixture
from instructkit.data.mixture_config import MixtureConfig, load_mixture_config
from instructkit.data.prepare_config import PrepareConfig
from instructkit.errors import InstructkitError
from instructkit.executors import ExecutorSettings


def _build_params() -> list:
    return typer.main.get_command(app).commands["data"].commands["build"].params


def test_data_build_seed_help_is_the_field_description_and_the_override_reaches_the_mixture(tmp_path: Path):
    field = MixtureConfig.model_fields["seed"]
    (seed,) = [p for p in _build_params() if option_name("seed") in p.opts]
    assert field.description and seed.help == field_help(field)
    shown = CliRunner().invoke(app, ["data", "build", "--help"], env={"COLUMNS": "300"})
    assert shown.exit_code == 0 and field.description in " ".join(shown.output.replace("│", " ").split())

    path = tmp_path / "m.yaml"
    path.write_text("name: cli\nseed: 1\ntasks: [{cluster: comparison}]\nrate: {cap: 4}\n")
    done = CliRunner().invoke(
        app, ["data", "build", str(path), "--out", str(tmp_path / "cli"), "--seed", "7"]
    )
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "cli" / "stats.json").read_text())["seed"] == 7
    build_mixture(load_mixture_config(path, seed=7), tmp_path / "seven")
    build_mixture(load_mixture_config(path), tmp_path / "one")
    built, seven, one = (
        datasets.load_from_disk(str(tmp_path / n)).to_list() for n in ("cli", "seven", "one")
    )
    assert built == seven and built != one


# Option names `data prepare` had before its options were derived; scripts and the docs type them.
PREPARE_OPTIONS = [
    "--out",
    "--tokenizer",
    "--max-length",
    "--pack",
    "--no-pack",
    "--chat-template",
    "--loss-on",
    "--overlong",
    "--format",
    "--input-format",
    "--on-error",
    "--skip-unknown-files",
    "--num-proc",
    "--executor",
    "--ray-address",
]


def _prepare_params() -> list:
    return typer.main.get_command(app).commands["data"].commands["prepare"].params


def test_every_prepare_config_field_is_exactly_one_data_prepare_option_with_its_default_and_help():
    params = _prepare_params()
    for name, field in PrepareConfig.model_fields.items():
        matching = [p for p in params if p.name == name]
        assert len(matching) == 1, f"{name}: {len(matching)} parameters"
        (param,) = matching
        assert param.help == field_help(field), name
        assert param.required == field.is_required(), name
        assert param.required or param.default in (None, []), name  # unset: the model's default applies
    (sources,) = [p for p in params if p.name == "sources"]
    assert sources.param_type_name == "argument" and sources.nargs == -1  # positional, any number
    opts = [o for p in params for o in p.opts + p.secondary_opts]
    assert len(opts) == len(set(opts)), "an option name is declared twice"
    assert set(PREPARE_OPTIONS) <= set(opts)


def test_data_prepare_writes_the_settings_given_and_every_other_field_at_its_default(
    tmp_path, tiny_tokenizer
):
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(3)
    ]
    src = tmp_path / "chat.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokenizer = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(str(tokenizer))
    out = tmp_path / "prepared"
    args = [
        "data",
        "prepare",
        str(src),
        "--out",
        str(out),
        "--tokenizer",
        str(tokenizer),
        "--max-length",
        "64",
    ]
    done = CliRunner().invoke(app, [*args, "--pack"])
    assert done.exit_code == 0, done.output
    recorded = json.loads((out / "prepare.json").read_text())
    expected = PrepareConfig(
        sources=[str(src)], out=str(out), tokenizer=str(tokenizer), max_length=64, pack=True
    ).model_dump(mode="json", exclude={"input_format"})  # prepare.json records the detected format
    assert {k: recorded[k] for k in expected} == expected


def test_a_bad_data_prepare_value_is_a_usage_error_naming_its_option(tmp_path):
    done = CliRunner().invoke(
        app, ["data", "prepare", "x.jsonl", "--out", str(tmp_path), "--max-length", "4"]
    )
    assert (
        done.exit_code == 2 and "--max-length" in done.output and "greater than or equal to 8" in done.output
    )


# The four commands that run on an executor declare its options once (ExecutorSettings).
EXECUTOR_COMMANDS = [("data", "prepare"), ("data", "build"), ("synth", "generate"), ("eval", "run")]


@pytest.mark.parametrize(("group", "name"), EXECUTOR_COMMANDS)
def test_executor_options_are_declared_once_for_every_command_that_takes_them(group, name):
    params = typer.main.get_command(app).commands[group].commands[name].params
    for field, info in ExecutorSettings.model_fields.items():
        (param,) = [p for p in params if p.name == field]
        assert param.opts == [option_name(field)] and param.help == field_help(info)
        assert param.default is None and not param.required


def test_ray_address_without_ray_is_refused_by_every_executor_command(tmp_path):
    done = CliRunner().invoke(
        app,
        ["data", "build", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "o"), "--ray-address", "auto"],
    )
    assert isinstance(done.exception, InstructkitError)
    assert "--ray-address needs --executor ray" in str(done.exception)
