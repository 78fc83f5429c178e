"""Synthesizer and corpus settings live once in `synth.config`: the CLI options, the recipe's `corpus:`
section and the corpus stage all derive from it, so defaults and help texts cannot disagree."""

from __future__ import annotations

import json

import datasets
import pytest
import typer
from typer.testing import CliRunner

from instructkit.cli import app
from instructkit.cli_options import field_help
from instructkit.synth.config import (
    CorpusConfig,
    CorpusDocuments,
    CorpusSpec,
    GenerateConfig,
    PretrainCorpusConfig,
    TrainDataConfig,
)

COMMANDS = {"generate": GenerateConfig, "corpus": CorpusConfig, "train-data": TrainDataConfig}
OLD_NAMES = {"generate": ["-m", "-i", "-o"], "corpus": ["--raw", "--raw-ratio", "-o"], "train-data": ["-o"]}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_field_has_exactly_one_option_with_its_default_and_help(name):
    model = COMMANDS[name]
    command = typer.main.get_command(app).commands["synth"].commands[name]
    for field, info in model.model_fields.items():
        params = [p for p in command.params if p.name == field]
        assert len(params) == 1, field
        (param,) = params
        # The help text states the model's default; an unset option passes nothing, so it applies.
        assert param.help == field_help(info), field
        assert param.required == info.is_required() and (param.required or param.default is None), field
    declared = {o for p in command.params for o in p.opts}
    assert set(OLD_NAMES[name]) <= declared


def test_corpus_settings_are_declared_once_for_command_recipe_and_stage():
    from instructkit import recipe

    assert recipe.Recipe.model_fields["corpus"].annotation == CorpusSpec | None
    for field, info in CorpusDocuments.model_fields.items():
        for model in (CorpusConfig, CorpusSpec, PretrainCorpusConfig):
            shared = model.model_fields[field]
            assert (shared.default, shared.description) == (info.default, info.description), (model, field)
    assert CorpusSpec().max_length == PretrainCorpusConfig(out="x").max_length == 2048


def test_a_bad_value_names_its_option(tmp_path):
    args = ["synth", "train-data", "paragraphs:people:4", "-o", str(tmp_path / "td"), "--holdout", "1.5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--holdout" in result.output


def test_corpus_command_mixes_plain_text_under_its_old_option_names(tmp_path, saved_tiny_model):
    rows = [{"id": i, "text": f"Town {i} lies on river R{i}.", "pairs": []} for i in range(8)]
    pairs, plain = tmp_path / "pairs.jsonl", tmp_path / "plain.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain.write_text("".join(json.dumps({"text": f"Plain line {i}."}) + "\n" for i in range(20)))
    out = tmp_path / "corpus"
    args = ["synth", "corpus", "--pairs", str(pairs), "-o", str(out), "--tokenizer", str(saved_tiny_model)]
    result = CliRunner().invoke(app, [*args, "--max-length", "32", "--raw", str(plain), "--raw-ratio", "1.0"])
    assert result.exit_code == 0, result.output
    sources = datasets.load_from_disk(str(out))["source"]
    assert 0 < sources.count("plain") == sources.count("augmented")
    assert json.loads((out / "corpus.json").read_text())["config"]["plain_ratio"] == 1.0


def test_generate_config_is_validated_and_keeps_its_budget():
    cfg = GenerateConfig(input="in.jsonl", out="out", max_model_len=256, max_new_tokens=100)
    assert cfg.model == "default" and cfg.budget == 156
    with pytest.raises(ValueError, match="extra"):
        GenerateConfig(input="in.jsonl", out="out", max_len=256)
