"""`data build`: options overriding the mixture YAML come from MixtureConfig (help written once, at the
field) and the value given on the command line is the one the built mixture used."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import typer
from typer.testing import CliRunner

from instructkit.cli import app
from instructkit.cli_options import field_help, option_name
from instructkit.data.mixture import build_mixture
from instructkit.data.mixture_config import MixtureConfig, load_mixture_config


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
