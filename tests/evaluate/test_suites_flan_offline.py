"""The Flan suite on what ../shared/data holds: MMLU from the original CSV files (the subjects present),
BBH and MGSM locally, and TyDiQA, which needs the hub, named before anything loads and left out when
the hub cannot be reached. A benchmark asked for by name still has to load."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructkit.errors import BadRowError, HubUnreachableError, InstructkitError
from instructkit.evaluate.suites.registry import (
    load_benchmark,
    parse_task_spec,
    read_suite,
    source_plan,
    tasks_from_entries,
)

MMLU_SUBJECTS = [
    "abstract_algebra",
    "anatomy",
    "college_computer_science",
    "high_school_government_and_politics",
    "marketing",
    "philosophy",
]


@pytest.mark.shared
def test_flan_suite_runs_on_the_shared_data_and_names_the_hub_part_first(shared_data, capsys):
    tasks = tasks_from_entries(read_suite("flan")["tasks"], shared_data)
    said = capsys.readouterr().err
    groups = {t.group for t in tasks}
    assert groups == {"mmlu", "bbh_direct", "bbh_cot", "mgsm_direct", "mgsm_cot"}
    mmlu = [t for t in tasks if t.group == "mmlu"]
    assert [t.name for t in mmlu] == [f"mmlu/{s}" for s in MMLU_SUBJECTS]
    assert sum(len(t.docs) for t in mmlu) == 1073 and all(len(t.fewshot()) == 5 for t in mmlu)
    plan = f"suite flan: from {shared_data}: mmlu, bbh, mgsm; from the hub: tydiqa (google-research-datasets/tydiqa)"
    left_out = f"suite flan: tydiqa left out: {shared_data} has no tydiqa/ folder"
    assert plan in said and left_out in said and said.index(plan) < said.index(left_out)


@pytest.mark.shared
def test_mmlu_from_the_original_csv_is_in_the_lm_eval_format(shared_data):
    (anatomy,) = load_benchmark("mmlu", shared_data, num_fewshot=5, subjects=["anatomy"])
    assert anatomy.description == "The following are multiple choice questions (with answers) about anatomy."
    shots = anatomy.fewshot()
    assert len(shots) == 5 and all(
        len(s.target) == 1 and s.target in "ABCD" and "\nA. " in s.query for s in shots
    )
    assert all(d.query.endswith("\nAnswer:") and d.choices == ["A", "B", "C", "D"] for d in anatomy.docs)
    assert len(anatomy.docs) == 135 and {d.gold for d in anatomy.docs} == {0, 1, 2, 3}
    with pytest.raises(InstructkitError, match=r"no test file for MMLU subjects \['astronomy'\]"):
        load_benchmark("mmlu", shared_data, subjects=["astronomy"])


def test_mmlu_csv_rows_span_lines_and_a_bad_answer_names_file_row_and_field(tmp_path: Path):
    for split in ("test", "dev"):
        (tmp_path / "mmlu" / split).mkdir(parents=True)
        (tmp_path / "mmlu" / split / f"logic_{split}.csv").write_text(
            '"Which is true,\nin two lines?",yes,no,maybe,never,A\nPlain?,a,b,c,d,D\n', encoding="utf-8"
        )
    (task,) = load_benchmark("mmlu", tmp_path, num_fewshot=1)
    assert task.docs[0].query.startswith("Which is true,\nin two lines?\nA. yes\n")
    assert [d.gold for d in task.docs] == [0, 3]
    (tmp_path / "mmlu" / "test" / "logic_test.csv").write_text("Q?,a,b,c,d,E\n", encoding="utf-8")
    with pytest.raises(BadRowError) as caught:
        load_benchmark("mmlu", tmp_path)
    assert "logic_test.csv" in str(caught.value) and "answer" in str(caught.value)


def test_a_benchmark_named_alone_must_load_and_the_plan_says_what_needs_the_hub(tmp_path: Path):
    entries = [parse_task_spec("tydiqa"), parse_task_spec("bbh")]
    assert source_plan(entries, tmp_path) == [
        "benchmarks: from the hub: tydiqa (google-research-datasets/tydiqa); "
        "missing (no bbh/ folder under --data-dir, and not on the hub): bbh"
    ]
    with pytest.raises(HubUnreachableError):  # HF_HUB_OFFLINE=1 in the tests: the hub is unreachable
        tasks_from_entries([parse_task_spec("tydiqa")], tmp_path)
