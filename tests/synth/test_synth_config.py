"""Synthesizer and corpus settings live once in `synth.config`: the CLI options, the recipe's `corpus:`
section and the corpus stage all derive from it, so defaults and help texts cannot disagree."""

from __future__ import annotations

import json

import datasets
import pytest
import typer
from typer.testing import CliRunner

from instructkit.cli.app import app
from instructkit.cli.options import field_help
from instructkit.synth.config import (
    CorpusConfig,
    CorpusDocuments,
    CorpusSpec,
    GenerateConfig,
    MeasureSettings,
    PretrainCorpusConfig,
    SynthEngine,
    SynthEvalConfig,
    TrainDataConfig,
)

COMMANDS = {
    "generate": GenerateConfig,
    "corpus": CorpusConfig,
    "train-data": TrainDataConfig,
    "evaluate": SynthEvalConfig,
}
OLD_NAMES = {
    "generate": ["-m", "-i", "-o"],
    "corpus": ["--raw", "--raw-ratio", "-o"],
    "train-data": ["-o"],
    "evaluate": [
        "-m",
        "--model",
        "--train-data",
        "--seen",
        "--backend",
        "--batch-size",
        "--max-model-len",
        "--out",
    ],
}


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
    from instructkit.pipeline import recipe

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


def test_synth_evaluate_and_its_function_share_one_set_of_defaults():
    """`synth evaluate --max-model-len` defaulted to 4096 while `evaluate_synthesizer` used 1024."""
    import inspect

    from instructkit.synth.measure import evaluate_synthesizer

    assert MeasureSettings().max_model_len == SynthEvalConfig.model_fields["max_model_len"].default == 4096
    for field in SynthEngine.model_fields:  # generate and evaluate run the synthesizer the same way
        generate, evaluate = GenerateConfig.model_fields[field], SynthEvalConfig.model_fields[field]
        assert (generate.default, generate.description) == (evaluate.default, evaluate.description), field
    settings = inspect.signature(evaluate_synthesizer).parameters
    assert [n for n, p in settings.items() if p.default is not inspect.Parameter.empty] == [
        "seen",
        "settings",
    ]
    with pytest.raises(ValueError, match="pair_max_new_tokens must be below max_model_len"):
        MeasureSettings(max_model_len=64)


def test_synth_evaluate_runs_with_its_derived_options(tmp_path, saved_tiny_model):
    rows = [
        {
            "dataset": d,
            "context": f"Town {i} lies on river R{i}.",
            "instruction": "Which river?",
            "response": f"R{i}",
        }
        for i, d in enumerate(["a", "a", "b"])
    ]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "report.json"
    args = ["synth", "evaluate", str(data), "-m", str(saved_tiny_model), "--seen", "a", "--out", str(out)]
    options = [
        "--max-model-len",
        "64",
        "--max-new-tokens",
        "2",
        "--pair-texts",
        "1",
        "--pair-max-new-tokens",
        "4",
    ]
    result = CliRunner().invoke(app, [*args, *options])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["rows"] == 3 and report["seen_datasets"] == ["a"] and report["unseen_datasets"] == ["b"]
    assert report["pair_statistics"]["texts"] == 1  # --pair-texts reached the function
