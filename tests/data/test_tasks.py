"""Task YAMLs: validation errors name file and field; rows, splits, bad rows; the evaluation API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructkit.data.prompt_formats import ANSWER_PREFIX, FormatMix
from instructkit.data.rejects import RejectLog
from instructkit.data.tasks import eval_examples, load_catalog, load_task_file, render_task_rows, task_rows
from instructkit.errors import BadRowError, HubUnreachableError, InstructkitError

TEMPLATES = """
    templates:
      - {id: t1, input: "Q: {{ question }}", target: "{{ answer }}"}
      - {id: t2, input: "{{ question }}?", target: "{{ answer }}"}
"""


def write_task(
    tmp_path: Path, body: str, rows: list | None = None, raw_lines: list[str] | None = None
) -> Path:
    """A user catalog dir with one task file (and a data file next to it)."""
    lines = raw_lines if raw_lines is not None else [json.dumps(r) for r in rows or []]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "tasks.yaml").write_text(body)
    return tmp_path / "tasks.yaml"


def qa_rows(n: int) -> list[dict]:
    return [{"question": f"what is {i} doubled", "answer": str(2 * i)} for i in range(n)]


def test_unknown_key_error_names_file_task_and_field(tmp_path):
    path = write_task(
        tmp_path,
        "tasks:\n  - name: qa\n    cluster: c\n    colour: red\n    source: {files: [data.jsonl]}\n"
        + TEMPLATES,
    )
    with pytest.raises(InstructkitError) as info:
        load_task_file(path)
    assert str(path) in str(info.value) and "qa" in str(info.value) and "colour" in str(info.value)


def test_broken_template_fails_at_load(tmp_path):
    path = write_task(
        tmp_path,
        "tasks:\n  - name: qa\n    cluster: c\n    source: {files: [data.jsonl]}\n"
        "    templates: [{id: bad, input: '{{ x', target: y}]\n",
    )
    with pytest.raises(InstructkitError, match="bad"):
        load_task_file(path)


def test_held_out_templates_must_exist_and_leave_some_for_training(tmp_path):
    base = "tasks:\n  - name: qa\n    cluster: c\n    source: {files: [data.jsonl]}\n"
    with pytest.raises(InstructkitError, match="held_out_templates"):
        load_task_file(write_task(tmp_path, base + "    held_out_templates: [nope]\n" + TEMPLATES))
    with pytest.raises(InstructkitError, match="held_out_templates"):
        load_task_file(write_task(tmp_path, base + "    held_out_templates: [t1, t2]\n" + TEMPLATES))


def test_splits_are_disjoint_deterministic_and_complete(tmp_path):
    path = write_task(
        tmp_path,
        "tasks:\n  - name: qa\n    cluster: c\n    source: {files: [data.jsonl]}\n" + TEMPLATES,
        qa_rows(50),
    )
    task = load_task_file(path)[0]
    splits = {s: [r["_source"] for r in task_rows(task, s)] for s in ("train", "validation", "test")}
    assert [len(v) for v in splits.values()] == [40, 5, 5]
    assert len(set().union(*splits.values())) == 50
    assert splits["train"] == [r["_source"] for r in task_rows(task.model_copy(), "train")]


def test_bad_rows_raise_with_file_row_field_or_go_to_rejects(tmp_path):
    lines = [json.dumps(r) for r in qa_rows(3)] + ["{not json", json.dumps({"question": "no answer here"})]
    path = write_task(
        tmp_path,
        "tasks:\n  - name: qa\n    cluster: c\n    source: {files: [data.jsonl]}\n"
        "    split_fractions: {train: 1.0}\n" + TEMPLATES,
        raw_lines=lines,
    )
    task = load_task_file(path)[0]
    with pytest.raises(BadRowError) as info:
        task_rows(task, "train")
    assert info.value.row == 4 and info.value.file.endswith("data.jsonl")
    rejects = RejectLog("skip")
    rows = task_rows(task, "train", rejects=rejects)
    assert len(rows) == 3
    assert [(r["row"], r["field"]) for r in rejects.rows] == [(4, "<row>"), (5, "answer")]


def test_eval_examples_default_to_held_out_templates_and_never_show_the_row_as_exemplar():
    task = load_catalog()["arithmetic_add"]
    examples = eval_examples(task, k_shot=3, limit=20)
    assert {e.template_id for e in examples} == {"add_5"} == set(task.held_out_templates)
    for e in examples:
        assert e.meta["source"] not in e.meta["exemplar_sources"] and len(e.meta["exemplar_sources"]) == 3
        assert e.prompt.count("Compute the sum") == 4 and e.target == e.answer
        assert int(e.answer) == sum(
            int(x) for x in e.prompt.rsplit("sum of ", 1)[1].split(".")[0].split(" and ")
        )


def test_eval_examples_with_exemplars_from_the_same_split_exclude_the_row():
    task = load_catalog()["compare_larger"].model_copy(update={"exemplar_split": "test"})
    for e in eval_examples(task, k_shot=5, template_ids=["larger_1"], limit=30):
        assert e.meta["source"] not in e.meta["exemplar_sources"]
        assert e.options is not None and e.answer in e.options


def test_cot_eval_examples_carry_the_answer_prefix():
    task = load_catalog()["multistep_three_sum"]
    ex = eval_examples(task, cot=True, k_shot=2, limit=3)
    assert all(e.answer_prefix == ANSWER_PREFIX and e.format == "few_shot_cot" for e in ex)
    assert all(ANSWER_PREFIX in e.prompt for e in ex)


def test_rendering_is_a_pure_function_of_task_row_and_seed():
    task = load_catalog()["reading_who"]
    mix = FormatMix(zero_shot=0.4, few_shot=0.6)
    a = [c.to_record() for c in render_task_rows(task, "validation", mix=mix, seed=3)]
    b = [c.to_record() for c in render_task_rows(task, "validation", mix=mix, seed=3)]
    c = [c.to_record() for c in render_task_rows(task, "validation", mix=mix, seed=4)]
    assert a == b and a != c
    assert {r["template_id"] for r in a} <= {t.id for t in task.train_templates()}


def test_hub_task_offline_error_is_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = load_catalog()["dolly"]
    with pytest.raises(HubUnreachableError, match="databricks"):
        task_rows(task, "train")
