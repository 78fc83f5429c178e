"""The one config front door (`settings_io`): YAML files, validation with did-you-mean, `KEY=VALUE`
overrides and file + command-line merges, and every config path of the toolkit going through it."""

from __future__ import annotations

import pytest
import typer
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typer.testing import CliRunner

from instructkit.cli.app import app
from instructkit.cli.options import config_from, options_from
from instructkit.errors import InstructkitError
from instructkit.settings_io import (
    apply_overrides,
    describe,
    load_settings,
    load_yaml,
    merge,
    parse_override,
    validate,
)


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(10, ge=1)
    tags: list[str] = Field(default_factory=list)


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "run"
    train: Inner | None = None
    stages: list[Inner] = Field(default_factory=list)


# --- YAML files -------------------------------------------------------------------------------------


def test_load_yaml_reads_a_mapping_and_an_empty_file_is_empty(tmp_path):
    (tmp_path / "a.yaml").write_text("name: x\ntrain: {max_steps: 3}\n")
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(tmp_path / "a.yaml") == {"name": "x", "train": {"max_steps": 3}}
    assert load_yaml(tmp_path / "empty.yaml") == {}


def test_every_yaml_failure_names_the_file(tmp_path):
    with pytest.raises(InstructkitError, match=r"nope\.yaml: no such recipe"):
        load_yaml(tmp_path / "nope.yaml", "recipe")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(InstructkitError, match=r"bad\.yaml: invalid YAML"):
        load_yaml(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(InstructkitError, match=r"list\.yaml: expected a mapping of settings .*got a list"):
        load_yaml(tmp_path / "list.yaml")
    with pytest.raises(InstructkitError, match=rf"{tmp_path.name}: cannot read this file"):
        load_yaml(tmp_path)


def test_yaml_is_read_safely(tmp_path):
    (tmp_path / "unsafe.yaml").write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(InstructkitError, match="invalid YAML"):
        load_yaml(tmp_path / "unsafe.yaml")


# --- validation -------------------------------------------------------------------------------------


def test_an_unknown_nested_key_names_the_closest_valid_one_with_its_place():
    with pytest.raises(
        InstructkitError, match=r"^r\.yaml: train\.max_step: unknown key; did you mean `max_steps`\?$"
    ):
        validate(Outer, {"train": {"max_step": 3}}, "r.yaml")
    with pytest.raises(InstructkitError, match=r"stages\.1\.tag: unknown key; did you mean `tags`\?"):
        validate(Outer, {"stages": [{}, {"tag": ["a"]}]}, "r.yaml")


def test_an_unknown_key_without_a_close_one_lists_the_valid_keys():
    with pytest.raises(InstructkitError, match=r"zzz: unknown key; valid keys: name, stages, train"):
        validate(Outer, {"zzz": 1}, "r.yaml")


def test_every_problem_is_reported_at_once_with_its_place():
    with pytest.raises(InstructkitError) as caught:
        validate(Outer, {"train": {"max_steps": 0}, "nmae": "x"}, "r.yaml")
    message = str(caught.value)
    assert message.startswith("r.yaml: ")
    assert "train.max_steps: Input should be greater than or equal to 1" in message
    assert "nmae: unknown key; did you mean `name`?" in message


def test_describe_can_name_each_problem_its_own_way():
    try:
        Inner(max_steps=0)
    except ValidationError as exc:
        assert describe(Inner, exc, lambda loc: f"--{loc[0]}") == (
            "--max_steps: Input should be greater than or equal to 1"
        )


# --- KEY=VALUE overrides ----------------------------------------------------------------------------


def test_overrides_are_dotted_and_yaml_typed_and_leave_the_original_alone():
    raw = {"name": "run", "train": None, "stages": [{"max_steps": 1}, {"max_steps": 2}]}
    out = apply_overrides(
        raw,
        {"train.max_steps": "50", "train.tags": "[a, b]", "stages.1.max_steps": "7", "new.deep.flag": "true"},
    )
    assert out == {
        "name": "run",
        "train": {"max_steps": 50, "tags": ["a", "b"]},
        "stages": [{"max_steps": 1}, {"max_steps": 7}],
        "new": {"deep": {"flag": True}},
    }
    assert raw["train"] is None and raw["stages"][1] == {"max_steps": 2}
    assert apply_overrides({}, {"a": 3, "b": "null"}) == {"a": 3, "b": None}  # non-strings as given


def test_an_override_that_cannot_apply_names_its_key_and_why():
    with pytest.raises(
        InstructkitError, match=r"stages\.5\.max_steps: stages is a list of 1; '5' is not an index"
    ):
        apply_overrides({"stages": [{}]}, {"stages.5.max_steps": "1"})
    with pytest.raises(InstructkitError, match=r"name\.x: name is a str, not a section"):
        apply_overrides({"name": "run"}, {"name.x": "1"})


def test_parse_override_splits_at_the_first_equals_sign():
    assert parse_override(" train.max_steps =50") == ("train.max_steps", "50")
    assert parse_override("a=b=c") == ("a", "b=c")
    for bad in ("train.max_steps", "=5"):
        with pytest.raises(InstructkitError, match="expected KEY=VALUE"):
            parse_override(bad)


def test_set_without_equals_is_a_usage_error_naming_set():
    done = CliRunner().invoke(app, ["run", "--dry-run", "--set", "train.max_steps"])
    assert done.exit_code == 2 and "--set" in done.output and "KEY=VALUE" in done.output


# --- merging a file with the command line -----------------------------------------------------------


def test_given_values_win_over_the_file_and_overrides_apply_first(tmp_path):
    assert merge({"a": 1, "b": 2}, {"b": 3}) == {"a": 1, "b": 3}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "file", "train": {"max_steps": 2}}))
    loaded = load_settings(Outer, path, given={"name": "flag"}, overrides={"train.tags": "[x]"})
    assert loaded == Outer(name="flag", train=Inner(max_steps=2, tags=["x"]))
    with pytest.raises(InstructkitError, match=r"s\.yaml: train\.max_steps: Input should be a valid integer"):
        load_settings(Outer, path, overrides={"train.max_steps": "many"})


# --- every config path goes through the front door --------------------------------------------------


def test_a_mixture_file_typo_names_the_file_and_the_closest_key(tmp_path):
    from instructkit.data.mixture_config import load_mixture_config

    path = tmp_path / "m.yaml"
    path.write_text("sed: 3\ntasks: [{cluster: comparison}]\n")
    with pytest.raises(InstructkitError, match=r"m\.yaml: sed: unknown key; did you mean `seed`\?"):
        load_mixture_config(path)
    with pytest.raises(InstructkitError, match=r"nope\.yaml: no such mixture file"):
        load_mixture_config(tmp_path / "nope.yaml")


def test_a_train_config_file_typo_names_the_file_and_the_closest_key(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"data": "d", "output_dir": "o", "max_step": 3}))
    done = CliRunner().invoke(app, ["train", "--config", str(cfg)])
    assert isinstance(done.exception, InstructkitError)
    assert str(done.exception) == f"{cfg}: max_step: unknown key; did you mean `max_steps`?"


def test_evaluation_settings_name_the_closest_field():
    from instructkit.evaluate.runner import eval_config

    with pytest.raises(
        InstructkitError, match=r"evaluation settings: batch_sise: unknown key; did you mean `batch_size`"
    ):
        eval_config(batch_sise=4)


def test_a_task_file_typo_names_file_task_and_closest_key(tmp_path):
    from instructkit.data.tasks.registry import load_task_file

    path = tmp_path / "t.yaml"
    path.write_text(
        yaml.safe_dump(
            {"tasks": [{"name": "t1", "cluster": "c", "source": {"files": ["x.jsonl"]}, "templats": []}]}
        )
    )
    with pytest.raises(
        InstructkitError, match=r"t\.yaml: task #0 \(t1\): .*templats: unknown key; did you mean `templates`"
    ):
        load_task_file(path)


def test_evaluate_takes_its_settings_one_way():
    from instructkit.evaluate.runner import evaluate

    with pytest.raises(InstructkitError, match=r"benchmark specs \['boolq'\] go in EvalConfig\(tasks=...\)"):
        evaluate("unused", tasks=["boolq"])
    with pytest.raises(TypeError):
        evaluate("unused", batch_size=4)  # no second way to give a setting


def test_command_line_values_report_every_bad_option_by_its_name():
    from instructkit.synth.config import TrainDataConfig

    with pytest.raises(typer.BadParameter) as caught:
        config_from(TrainDataConfig, {"sources": ["x"], "out": "o", "holdout": 1.5, "max_shots": 0})
    assert "--holdout: Input should be less than 1" in str(caught.value)
    assert "--max-shots: Input should be greater than or equal to 1" in str(caught.value)


def test_two_models_of_one_command_cannot_share_an_option():
    class Other(BaseModel):
        name: str = "x"

    with pytest.raises(TypeError, match="Other and Outer both declare 'name'"):
        options_from(Outer, Other)
