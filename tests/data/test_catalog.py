"""The shipped catalog: procedural suite shape, every template renders on its data, shared data, hub schemas."""

from __future__ import annotations

from collections import defaultdict

import datasets
import pytest

from helpers.paths import FIXTURES_ROOT
from instructkit.data.conversation import CONVERSATION_FEATURES, Conversation
from instructkit.data.mixture_config import MixtureConfig
from instructkit.data.prompt_formats import FormatChoice, render_example
from instructkit.data.splits import leave_one_cluster_out
from instructkit.data.tasks import Task, TaskSource, load_catalog, render_task_rows, task_rows

CATALOG = load_catalog()
PROCEDURAL = [t for t in CATALOG.values() if t.collection == "procedural"]
SHARED = [
    t
    for t in CATALOG.values()
    if t.collection in {"p3_t0", "instruction_induction", "self_instruct", "math_cot"}
]
FIXTURES = FIXTURES_ROOT / "hub_schemas"
HUB_FIXTURES = {
    "flan_v2": "flan_v2.jsonl",
    "t0_p3": "p3.jsonl",
    "niv2": "niv2.jsonl",
    "niv2_task_files": "task900_synthetic_counting.json",
    "tulu_v2_mixture": "tulu_v2.jsonl",
    "tulu_3_mixture": "tulu_v2.jsonl",
    "dolly": "dolly.jsonl",
    "oasst1": "oasst1.jsonl",
    "sharegpt": "sharegpt.json",
}


def render_all_templates(task: Task, split: str, limit: int = 5) -> int:
    """Render every template (zero-shot with options, and CoT where possible) on the first rows of a split."""
    rendered = 0
    for row in task_rows(task, split)[:limit]:
        for template in task.templates:
            for choice in (FormatChoice("zero_shot", True), FormatChoice("cot", False)):
                if choice.format == "cot" and (task.rationale_field is None or template.inverted):
                    continue
                r = render_example(task, template, row, choice, [])
                Conversation.from_pairs(
                    ("user", r.prompt), ("assistant", r.target)
                )  # validates non-empty turns
                rendered += 1
    return rendered


def test_procedural_suite_shape():
    clusters = defaultdict(list)
    for task in PROCEDURAL:
        clusters[task.cluster].append(task)
        assert len(task.templates) >= 5 and any(t.inverted for t in task.templates), task.name
        assert task.held_out_templates and not any(task.template(t).inverted for t in task.held_out_templates)
    assert len(clusters) >= 8 and all(len(ts) >= 3 for ts in clusters.values())
    assert any(t.rationale_field for t in PROCEDURAL)


@pytest.mark.parametrize("task", PROCEDURAL, ids=lambda t: t.name)
def test_every_procedural_template_renders_on_every_split(task):
    for split in task.split_names():
        assert render_all_templates(task, split) >= len(task.templates)


@pytest.mark.parametrize(
    "name", ["arithmetic_add", "arithmetic_subtract", "arithmetic_multiply", "multistep_multiply_add"]
)
def test_procedural_answers_are_exact(name):
    ops = {
        "arithmetic_add": lambda r: r["a"] + r["b"],
        "arithmetic_subtract": lambda r: r["a"] - r["b"],
        "arithmetic_multiply": lambda r: r["a"] * r["b"],
        "multistep_multiply_add": lambda r: r["a"] * r["b"] + r["c"],
    }
    rows = task_rows(CATALOG[name], "train")
    assert rows and all(r["answer"] == str(ops[name](r)) for r in rows)


def test_procedural_splits_share_no_row_and_sizes_are_configurable():
    task = CATALOG["list_sort"]
    train = {r["items"] for r in task_rows(task, "train")}
    test = {r["items"] for r in task_rows(task, "test")}
    assert train and test and not train & test
    assert all(r["answer"].split() == sorted(r["items"].split(), key=int) for r in task_rows(task, "test"))
    small = task.model_copy(update={"source": task.source.model_copy(update={"size": 20})})
    assert sum(len(task_rows(small, s)) for s in small.split_names()) == 20


def test_benchmark_tasks_are_marked_eval_only():
    assert {"gsm8k", "aqua", "self_instruct_user_oriented"} <= {
        t.name for t in CATALOG.values() if t.eval_only
    }
    assert not any(t.eval_only for t in PROCEDURAL) and not CATALOG["gsm8k_train_cot"].eval_only


@pytest.mark.shared
@pytest.mark.parametrize("task", SHARED, ids=lambda t: t.name)
def test_every_shared_task_renders_every_template(shared_data, task, monkeypatch):
    monkeypatch.setenv("INSTRUCTKIT_DATA_ROOT", str(shared_data))
    for split in task.split_names():
        if task.splits is not None or task.split_fractions[split] > 0:
            assert render_all_templates(task, split, limit=3) > 0


@pytest.mark.shared
def test_p3_t0_leave_one_cluster_out_splits_build(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTKIT_DATA_ROOT", str(shared_data))
    config = MixtureConfig.model_validate(
        {
            "name": "p3",
            "tasks": [{"collection": "p3_t0"}],
            "rate": {"cap": 10},
            "formats": {"zero_shot": 0.7, "few_shot": 0.3, "max_shots": 1},
        }
    )
    summary = leave_one_cluster_out(config, tmp_path, eval_limit=2)
    expected = {
        "closed_book_qa",
        "extractive_qa",
        "multiple_choice_qa",
        "paraphrase_identification",
        "structure_to_text",
        "summarization",
        "topic_classification",
    }
    assert set(summary["splits"]) == expected
    for cluster in expected:
        train = datasets.load_from_disk(str(tmp_path / cluster / "train"))
        evals = datasets.load_from_disk(str(tmp_path / cluster / "eval"))
        assert train.features == evals.features == CONVERSATION_FEATURES
        assert cluster not in set(train["cluster"]) and set(evals["cluster"]) == {cluster}
        assert len(train) == summary["splits"][cluster]["train_rows"] > 0 and len(evals) > 0


@pytest.mark.parametrize("name", sorted(HUB_FIXTURES))
def test_hub_collections_render_on_fixture_files(name):
    task = CATALOG[name]
    source = task.source.model_copy(
        update={"hub": None, "config": None, "files": [str(FIXTURES / HUB_FIXTURES[name])]}
    )
    local = task.model_copy(
        update={"source": TaskSource.model_validate(source.model_dump()), "split_fractions": {"train": 1.0}}
    )
    rows = task_rows(local, "train")
    assert rows
    if task.kind == "chat":
        convs = render_task_rows(local, "train")
        assert all(c.format == "chat" and c.messages[-1].role == "assistant" for c in convs)
    else:
        assert render_all_templates(local, "train") >= len(task.templates)


def test_oasst_trees_flatten_to_the_highest_ranked_path():
    task = CATALOG["oasst1"]
    local = task.model_copy(
        update={
            "source": TaskSource(files=[str(FIXTURES / "oasst1.jsonl")], reader="oasst_tree"),
            "split_fractions": {"train": 1.0},
        }
    )
    rows = task_rows(local, "train")
    assert len(rows) == 10
    contents = [m["content"] for m in rows[0]["messages"]]
    assert contents == [
        "Tell me a fact about the number 0.",
        "The best answer about 0.",
        "Tell me more.",
        "More about 0.",
    ]


def test_sni_task_files_keep_definition_and_positive_examples():
    task = CATALOG["niv2_task_files"]
    local = task.model_copy(
        update={
            "source": TaskSource(
                files=[str(FIXTURES / "task900_synthetic_counting.json")], reader="sni_task"
            ),
            "split_fractions": {"train": 1.0},
        }
    )
    rows = task_rows(local, "train")
    assert len(rows) == 12 and rows[0]["definition"].startswith("Answer the question")
    prompt = render_example(
        local, local.template("definition_pos2"), rows[0], FormatChoice("zero_shot", False), []
    ).prompt
    assert prompt.count("Positive example:") == 2 and rows[0]["input"] in prompt
