"""Evaluation settings are declared once (evaluate.config): `eval run` derives its options from
EvalConfig, a recipe's `evaluate:` section shares its settings, and the recipe's eval sets (held-out
corpus QA included) resolve inside the evaluation package."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from helpers.paths import FIXTURES_ROOT
from instructkit.cli.app import app
from instructkit.cli.options import field_help, option_name
from instructkit.errors import BadRowError, InstructkitError
from instructkit.evaluate.config import EvalConfig, EvalSettings, EvaluateSpec
from instructkit.evaluate.recipe_sets import HELDOUT_QA, eval_tasks
from instructkit.pipeline.recipe import Recipe, load_recipe

FIXTURES = FIXTURES_ROOT / "eval"
# The config keys results.json has always recorded (eval report / compare / judge read them).
RECORDED_KEYS = {
    "suite",
    "tasks",
    "data_dir",
    "prompt_style",
    "limit",
    "batch_size",
    "max_batch_tokens",
    "deterministic",
    "seed",
    "use_cache",
    "allow_code_execution",
    "bootstrap",
    "lm_eval_tasks",
    "lm_eval_include",
    "allow_base_mismatch",
}
# Option names `eval run` had before its options were derived; scripts type them.
KNOWN_OPTIONS = [
    "--model",
    "--out",
    "--suite",
    "--tasks",
    "-t",
    "--data-dir",
    "--prompt-style",
    "--backend",
    "--served-model",
    "--batch-size",
    "--deterministic",
    "--limit",
    "--seed",
    "--allow-code-execution",
    "--executor",
    "--ray-address",
]


def _eval_run_params() -> list:
    group = typer.main.get_command(app)
    return group.commands["eval"].commands["run"].params


def test_every_eval_config_field_is_exactly_one_eval_run_option_with_its_default_and_help():
    params = _eval_run_params()
    for name, field in EvalConfig.model_fields.items():
        matching = [p for p in params if option_name(name) in p.opts]
        assert len(matching) == 1, f"{name}: {len(matching)} options"
        option = matching[0]
        assert option.name == name and option.help == field_help(field)
        assert "(default: " in option.help and field.description in option.help
        assert option.default in (None, [])  # unset: the model's own default applies
    opts = [o for p in params for o in p.opts + p.secondary_opts]
    assert len(opts) == len(set(opts)), "an option name is declared twice"
    assert set(KNOWN_OPTIONS) <= set(opts)


def test_eval_run_records_the_flags_given_and_every_other_field_at_its_default(saved_tiny_model, tmp_path):
    out = tmp_path / "run"
    args = ["eval", "run", "--model", str(saved_tiny_model), "--out", str(out), "-t", "boolq"]
    done = CliRunner().invoke(app, [*args, "--data-dir", str(FIXTURES), "--limit", "2", "--no-use-cache"])
    assert done.exit_code == 0, done.output
    recorded = json.loads((out / "results.json").read_text())["config"]
    expected = EvalConfig(tasks=["boolq"], data_dir=str(FIXTURES), limit=2, use_cache=False)
    assert recorded == expected.model_dump(mode="json")
    assert set(recorded) == RECORDED_KEYS
    assert not (out / "cache.sqlite").exists()


def test_an_invalid_eval_run_value_names_the_field(tmp_path):
    args = ["eval", "run", "--model", "m", "--out", str(tmp_path), "-t", "boolq", "--batch-size", "0"]
    done = CliRunner().invoke(app, args)
    assert isinstance(done.exception, InstructkitError)
    assert "batch_size" in str(done.exception) and "greater than or equal to 1" in str(done.exception)


def test_a_recipe_evaluate_section_shares_the_eval_settings():
    assert Recipe.model_fields["evaluate"].annotation == EvaluateSpec | None
    shared = set(EvalSettings.model_fields)
    assert {"suite", "data_dir", "prompt_style", "batch_size"} <= shared
    for name in shared:  # one description each; only prompt_style's default differs (chat models)
        assert EvaluateSpec.model_fields[name].description == EvalConfig.model_fields[name].description
    assert EvaluateSpec().prompt_style == "chat" and EvalConfig().prompt_style == "base"
    spec = EvaluateSpec(benchmarks=["piqa"], benchmark_limit=7, batch_size=4)
    assert spec.eval_config(3, "/data") == EvalConfig(
        tasks=["piqa"], limit=7, batch_size=4, seed=3, data_dir="/data", prompt_style="chat"
    )
    assert EvaluateSpec(data_dir="/mine").eval_config(0, "/data").limit is None  # sets keep their own
    assert EvaluateSpec(data_dir="/mine").eval_config(0, "/data").data_dir == "/mine"


@pytest.mark.parametrize(
    ("key", "closest"),
    [("evaluate.prompt_styl", "prompt_style"), ("evaluate.sets.0.k_shots", "k_shot")],
)
def test_a_typo_in_a_recipe_evaluate_key_names_the_closest_valid_one(key, closest):
    with pytest.raises(InstructkitError, match=rf"{key}: unknown key; did you mean `{closest}`\?"):
        load_recipe("quickstart", {key: "1"})


def _qa_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_the_heldout_qa_set_resolves_through_evaluate(tmp_path):
    from instructkit.synth.pretrain_corpus import write_heldout_qa

    texts = [
        {"text": f"Ana lives in Town{i}.", "qa": [(f"Where does Ana live ({i})?", f"Town{i}")]}
        for i in range(3)
    ]
    assert write_heldout_qa(tmp_path / HELDOUT_QA, texts) == 3  # the corpus stage's writer, same file
    spec = EvaluateSpec(sets=[{"name": "qa", "kind": "heldout_qa", "limit": 2}])
    [task] = eval_tasks(spec, None, 0, tmp_path)
    assert (task.name, task.group, task.cluster) == ("qa/heldout_qa", "qa/heldout_qa", "qa/0-shot")
    assert [d.answers for d in task.docs] == [["Town0"], ["Town1"]]
    assert task.docs[0].query == "Ana lives in Town0.\n\nQuestion: Where does Ana live (0)?\nAnswer:"
    with pytest.raises(InstructkitError, match="heldout_qa needs the corpus stage's folder"):
        eval_tasks(spec, None, 0, None)


def test_a_heldout_qa_row_without_an_answer_names_file_row_and_field(tmp_path):
    _qa_rows(
        tmp_path / HELDOUT_QA, [{"text": "t", "question": "q", "answer": "a"}, {"text": "t", "question": "q"}]
    )
    spec = EvaluateSpec(sets=[{"name": "qa", "kind": "heldout_qa"}])
    with pytest.raises(BadRowError, match=rf"{HELDOUT_QA}:2: answer: missing"):
        eval_tasks(spec, None, 0, tmp_path)


def test_catalog_sets_resolve_per_template_and_shot():
    recipe, _ = load_recipe("quickstart")
    tasks = eval_tasks(recipe.evaluate, recipe.mixture, recipe.seed)
    clusters = {t.cluster for t in tasks}
    assert {"heldout_rows/0-shot", "heldout_cluster/0-shot", "heldout_cluster/2-shot"} <= clusters
    assert all(t.name.startswith(t.cluster.split("/")[0] + "/") for t in tasks)
    assert all(0 < len(t.docs) <= 24 for t in tasks)
    with pytest.raises(InstructkitError, match="`@train` needs a recipe with a mixture"):
        eval_tasks(recipe.evaluate, None, 0)
