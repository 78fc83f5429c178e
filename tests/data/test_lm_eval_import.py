"""lm-eval tasks as catalog tasks: rendered prompts and targets equal lm-eval's own, on lm-eval's real
task definitions (boolq, rte, arc_easy, anli_r1, hellaswag with its `!function` preprocessing, gsm8k)
reading tiny local files; the eval split is registered for decontamination; hub data fails clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("lm_eval")

from typer.testing import CliRunner  # noqa: E402

from helpers.paths import FIXTURES_ROOT
from instructkit.cli.app import app  # noqa: E402
from instructkit.data.catalog.lm_eval import exemplar_role, load_lm_eval_task  # noqa: E402
from instructkit.data.mixture import plan_mixture  # noqa: E402
from instructkit.data.mixture_config import MixtureConfig  # noqa: E402
from instructkit.data.prompt_formats import FormatMix  # noqa: E402
from instructkit.data.tasks import TaskSource, load_catalog, render_task_rows, task_rows  # noqa: E402
from instructkit.errors import HubUnreachableError, InstructkitError  # noqa: E402

FIXTURES = FIXTURES_ROOT / "lm_eval_import"
# task -> (official YAML under lm_eval/tasks, {split name of the official YAML: fixture file})
TASKS = {
    "boolq": ("super_glue/boolq/default.yaml", ("train", "validation")),
    "rte": ("glue/rte/default.yaml", ("train", "validation")),
    "arc_easy": ("arc/arc_easy.yaml", ("train", "validation", "test")),
    "anli_r1": ("anli/anli_r1.yaml", ("train_r1", "dev_r1", "test_r1")),
    "hellaswag": ("hellaswag/hellaswag.yaml", ("train", "validation")),
    "gsm8k": ("gsm8k/gsm8k.yaml", ("train", "test")),
}
ZERO_SHOT = FormatMix(zero_shot=1.0, few_shot=0.0, cot=0.0, with_options=0.0)


def _official() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


@pytest.fixture(scope="module")
def include(tmp_path_factory) -> Path:
    """lm-eval task YAMLs: the official definition included, its data read from the fixtures."""
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    for name, (official, splits) in TASKS.items():
        files = {s: str(FIXTURES / f"{name}.{s}.jsonl") for s in splits}
        config = {
            "include": str(_official() / official),
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": files},
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    # boolq without a training split, and rte reading its data from the hub
    notrain = {"include": str(folder / "boolq.yaml"), "task": "boolq_notrain", "training_split": None}
    (folder / "boolq_notrain.yaml").write_text(yaml.safe_dump(notrain), encoding="utf-8")
    hub = {"include": str(_official() / "glue/rte/default.yaml"), "task": "rte_hub"}
    (folder / "rte_hub.yaml").write_text(yaml.safe_dump(hub), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def catalog_file(include, tmp_path_factory) -> Path:
    """A catalog YAML of `lm_eval: TASK` entries (the include folder given relative to it)."""
    folder = include.parent
    entries = [{"lm_eval": name, "include": [include.name]} for name in TASKS]
    path = folder / "catalog.yaml"
    path.write_text(yaml.safe_dump({"tasks": entries}), encoding="utf-8")
    return path


def _lm_eval_texts(include: Path, name: str, role: str) -> list[tuple[str, str]]:
    """(prompt, target text) of each document, straight from lm-eval's own task object."""
    from lm_eval.tasks import TaskManager

    task = TaskManager(include_path=str(include), include_defaults=False).load([name])["tasks"][name]
    docs = {"train": task.training_docs, "eval": lambda: task.eval_docs, "fewshot": task.fewshot_docs}[role]()
    out = []
    for doc in docs:
        target = task.doc_to_target(doc)
        if task.config.output_type == "multiple_choice":
            choices = task.doc_to_choice(doc)
            target = choices[target] if isinstance(target, int) else target
        out.append((task.doc_to_text(doc), str(target)))
    return out


@pytest.mark.parametrize("name", list(TASKS))
def test_rendered_template_equals_lm_eval_doc_to_text(name, include, catalog_file):
    task = load_catalog([catalog_file], include_builtin=False)[f"lm_eval_{name}"]
    assert task.eval_split == "eval" and task.exemplar_split == "train" and task.cluster == name
    for role in ("train", "eval", "fewshot"):
        expected = _lm_eval_texts(include, name, role)
        rendered = render_task_rows(task, role, mix=ZERO_SHOT)
        assert [(c.messages[0].content, c.messages[1].content) for c in rendered] == expected, role
        assert len(expected) >= 1


def test_target_is_the_gold_choice_and_data_braces_stay_text(catalog_file):
    tasks = load_catalog([catalog_file], include_builtin=False)
    rows = task_rows(tasks["lm_eval_boolq"], "train")
    assert [r["target"] for r in rows] == ["yes", "no"] and rows[0]["choices"] == ["no", "yes"]
    assert "{{ 7*7 }}" in rows[1]["prompt"] and "49" not in rows[1]["prompt"]
    arc = task_rows(tasks["lm_eval_arc_easy"], "eval")  # arc_easy evaluates on test
    assert [r["target"] for r in arc] == ["whale", "gravity"] and [r["gold"] for r in arc] == [1, 2]
    anli = task_rows(tasks["lm_eval_anli_r1"], "train")  # a target given as the option's text
    assert [r["target"] for r in anli] == ["True", "Neither", "False"]
    swag = task_rows(tasks["lm_eval_hellaswag"], "eval")  # lm-eval's process_docs ran
    assert swag[0]["prompt"].startswith("Washing a car: A woman sprays") and swag[0]["gold"] == 1
    gsm = task_rows(tasks["lm_eval_gsm8k"], "train")
    assert gsm[0]["target"].endswith("#### 72") and gsm[0]["choices"] is None


def test_import_command_materialises_rows_equal_to_the_lazy_source(include, catalog_file, tmp_path):
    out = tmp_path / "imported" / "lm.yaml"
    result = CliRunner().invoke(
        app, ["tasks", "import-lm-eval", "boolq", "gsm8k", "--include", str(include), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    imported = load_catalog([out], include_builtin=False)
    lazy = load_catalog([catalog_file], include_builtin=False)
    for name in ("lm_eval_boolq", "lm_eval_gsm8k"):
        task = imported[name]
        assert task.splits is not None and all(s.files for s in task.splits.values())
        for role in ("train", "fewshot", "eval"):
            a = [
                (c.messages[0].content, c.messages[1].content)
                for c in render_task_rows(task, role, mix=ZERO_SHOT)
            ]
            b = [
                (c.messages[0].content, c.messages[1].content)
                for c in render_task_rows(lazy[name], role, mix=ZERO_SHOT)
            ]
            assert a == b and a
    rows = [json.loads(x) for x in (out.parent / "gsm8k" / "eval.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"].startswith("Question: ") and rows[0]["prompt"].endswith("\nAnswer:")


def test_eval_split_registered_for_decontamination_in_a_mixed_mixture(catalog_file, tmp_path):
    leaked = "Water makes the surfaces it touches wet, which is why towels are used to dry hands after washing them"
    data = tmp_path / "mine.jsonl"
    data.write_text(
        json.dumps({"q": f"Explain: {leaked}.", "answer": "ok"})
        + "\n"
        + json.dumps({"q": "Unrelated text.", "answer": "x"})
        + "\n"
    )
    mine = {
        "name": "my_qa",
        "cluster": "qa",
        "splits": {"train": {"files": [str(data)]}},
        "templates": [{"id": "t", "input": "{{q}}", "target": "{{answer}}"}],
    }
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"tasks": [mine]}), encoding="utf-8")
    config = MixtureConfig(
        catalog=[str(catalog_file), str(tmp_path / "mine.yaml")],
        tasks=["my_qa", "lm_eval_boolq", "lm_eval_gsm8k"],
        decontaminate={"eval_sets": ["lm_eval_boolq"]},
    )
    plan = plan_mixture(config, load_catalog(config.catalog, include_builtin=False))
    assert plan.removed["my_qa"] == {0}
    assert plan.report[0]["eval_set"] == "lm_eval_boolq"
    assert plan.report[0]["eval_source"] == "lm_eval:boolq:eval:1"
    assert plan.sizes == {"my_qa": 1, "lm_eval_boolq": 2, "lm_eval_gsm8k": 3}


def test_missing_training_split_and_hub_data_give_clear_errors(include):
    from instructkit.data.catalog.lm_eval import lm_eval_records

    with pytest.raises(InstructkitError, match="'boolq_notrain' has no train split"):
        list(lm_eval_records("boolq_notrain", "train", (str(include),)))
    with pytest.raises(HubUnreachableError, match="rte_hub.*'nyu-mll/glue'.*dataset_path: json"):
        load_lm_eval_task("rte_hub", (str(include),))
    with pytest.raises(InstructkitError, match="include folder .*missing does not exist"):
        load_lm_eval_task("boolq", (str(include / "missing"),))
    bad = include.parent / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"tasks": [{"lm_eval": "boolq", "include": ["missing"]}]}), encoding="utf-8"
    )
    with pytest.raises(InstructkitError, match=r"bad.yaml: task #0 \(boolq\): .*missing does not exist"):
        load_catalog([bad], include_builtin=False)
    with pytest.raises(ValueError, match="include: only for an lm_eval source"):
        TaskSource(files=["x.jsonl"], include=["tasks"])


def test_exemplars_never_include_the_example_itself(catalog_file):
    """lm-eval draws boolq's exemplars from its training split: the imported task does too (split
    `train`), so a few-shot training example never shows its own answer among its exemplars."""
    task = load_catalog([catalog_file], include_builtin=False)["lm_eval_boolq"]
    rows = task_rows(task, "train")
    one_shot = FormatMix(zero_shot=0.0, few_shot=1.0, min_shots=1, max_shots=1, delimiters=["q_a"])
    for seed in range(5):
        for i, conv in enumerate(render_task_rows(task, "train", mix=one_shot, seed=seed)):
            prompt = conv.messages[0].content
            assert prompt.count(rows[i]["prompt"]) == 1 and rows[1 - i]["prompt"] in prompt


@pytest.mark.parametrize(
    ("config", "role"),
    [
        ({"training_split": "train", "validation_split": "validation"}, "train"),
        ({"training_split": "train", "test_split": "test", "fewshot_split": "train"}, "train"),
        ({"validation_split": "validation", "test_split": "test", "fewshot_split": "dev"}, "fewshot"),
        ({"test_split": "test"}, "eval"),  # lm-eval falls back to the evaluated documents
        ({"validation_split": "validation"}, "eval"),
        ({"test_split": "test", "fewshot_config": {"samples": [{"q": 1}]}}, "fewshot"),
    ],
)
def test_exemplar_role_follows_lm_evals_fewshot_docs(config, role):
    assert exemplar_role(config) == role


def test_the_reused_index_of_lm_evals_tasks_equals_a_fresh_task_manager(include):
    """lm_eval_task_manager builds lm-eval's own index once per process and merges the include folders over
    it: the names, kinds and YAML files it knows are exactly those of a TaskManager built from scratch."""
    from lm_eval.tasks import TaskManager

    from instructkit.data.catalog.lm_eval import lm_eval_task_manager

    fresh = TaskManager(include_path=[str(include)])
    reused = lm_eval_task_manager([include])
    assert reused.all_tasks == fresh.all_tasks and reused.all_groups == fresh.all_groups
    assert reused.all_subtasks == fresh.all_subtasks and reused.all_tags == fresh.all_tags
    assert {n: (e.kind, e.yaml_path) for n, e in reused.task_index.items()} == {
        n: (e.kind, e.yaml_path) for n, e in fresh.task_index.items()
    }
    local = {
        n for n, e in fresh.task_index.items() if e.yaml_path and Path(e.yaml_path).parent == Path(include)
    }
    assert set(TASKS) <= local  # the include folder's tasks replace lm-eval's own of the same name, in both
