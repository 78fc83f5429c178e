"""Benchmark loaders: the real files in ../shared/data, and hub-only benchmarks from fixture files in
their hub schema; suite YAMLs (built-in and user) resolve to tasks."""

from __future__ import annotations

import pytest

from helpers.paths import FIXTURES_ROOT
from instructkit.errors import InstructkitError
from instructkit.evaluate.prompting import base_text
from instructkit.evaluate.suites.registry import (
    load_benchmark,
    parse_task_spec,
    read_suite,
    tasks_from_entries,
)

FIXTURES = FIXTURES_ROOT / "eval"


def test_bbh_has_27_tasks_with_official_three_shot_prompts(shared_data):
    cot = load_benchmark("bbh", shared_data, cot=True)
    direct = load_benchmark("bbh", shared_data, cot=False, tasks=["date_understanding"])
    assert len(cot) == 27 and sum(len(t.docs) for t in cot) == 6511
    date_cot = next(t for t in cot if t.name == "bbh_cot/date_understanding")
    assert date_cot.fewshot_text.count("Q: ") == 3 and "Let's think step by step." in date_cot.fewshot_text
    assert date_cot.docs[0].query.endswith("A: Let's think step by step.")
    shots = direct[0].fewshot_text
    assert "\nA: (D)\n" in shots and "Let's think" not in shots  # answer-only form of the same exemplars
    assert direct[0].random_baseline > 0 and date_cot.extractor == "answer_is"


def test_gsm8k_mgsm_aqua_piqa_from_shared_files(shared_data):
    gsm = load_benchmark("gsm8k", shared_data)[0]
    assert len(gsm.docs) == 1319 and gsm.docs[0].answers == ["18"] and len(gsm.fewshot()) == 8
    assert base_text(gsm, gsm.docs[0]).count("The answer is") == 8
    mgsm = load_benchmark("mgsm", shared_data, languages=["de"])[0]
    assert mgsm.name == "mgsm_cot/de" and len(mgsm.docs) == 250
    assert (
        mgsm.docs[0].query.startswith("Frage: ") and "Schritt-für-Schritt-Antwort:" in mgsm.fewshot()[0].query
    )
    aqua = load_benchmark("aqua", shared_data)[0]
    assert aqua.method == "multiple_choice" and all(len(d.choices) == 5 for d in aqua.docs)
    aqua_cot = load_benchmark("aqua", shared_data, cot=True)[0]
    assert aqua_cot.fewshot()[0].target.endswith(").") and aqua_cot.docs[0].answers[0] in "ABCDE"
    piqa = load_benchmark("piqa", shared_data)[0]
    assert len(piqa.docs) == 1838 and piqa.docs[0].query.startswith("Question: ")
    assert {d.gold for d in piqa.docs} == {0, 1}


def test_hub_benchmarks_load_from_fixture_files_in_their_schema():
    mmlu = load_benchmark("mmlu", FIXTURES, num_fewshot=5)
    assert [t.name for t in mmlu] == ["mmlu/astronomy", "mmlu/elementary_mathematics"]
    prompt = base_text(mmlu[1], mmlu[1].docs[0])
    assert prompt.startswith(
        "The following are multiple choice questions (with answers) about elementary mathematics."
    )
    assert prompt.count("Answer:") == 6 and mmlu[1].docs[0].choices == ["A", "B", "C", "D"]
    tydi = load_benchmark("tydiqa", FIXTURES)
    assert [t.name for t in tydi] == ["tydiqa/english", "tydiqa/finnish"]
    assert tydi[0].fewshot()[0].target == "Paris" and tydi[0].metric == "f1"
    arc = load_benchmark("arc", FIXTURES)[0]
    assert [d.gold for d in arc.docs] == [1, 0]
    boolq = load_benchmark("boolq", FIXTURES)[0]
    assert [d.gold for d in boolq.docs] == [1, 0, 1] and boolq.docs[0].query.endswith("?\nAnswer:")
    hs = load_benchmark("hellaswag", FIXTURES)[0]
    assert hs.docs[0].gold == 3 and "[" not in hs.docs[1].query and hs.metric == "acc_norm"
    he = load_benchmark("humaneval", FIXTURES)[0]
    assert he.method == "code" and he.docs[0].meta["entry_point"] == "add"


def test_builtin_and_user_suites(tmp_path, shared_data):
    flan = read_suite("flan")
    assert {e["benchmark"] for e in flan["tasks"]} == {"mmlu", "bbh", "tydiqa", "mgsm"}
    assert {e["benchmark"] for e in read_suite("tulu")["tasks"]} >= {
        "mmlu",
        "gsm8k",
        "bbh",
        "tydiqa",
        "humaneval",
    }
    user = tmp_path / "mine.yaml"
    user.write_text("name: mine\ntasks:\n  - {benchmark: gsm8k, num_fewshot: 2, max_new_tokens: 7}\n")
    tasks = tasks_from_entries(read_suite(str(user))["tasks"], shared_data)
    assert len(tasks[0].fewshot()) == 2 and tasks[0].max_new_tokens == 7
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  - {oops: 1}\n")
    with pytest.raises(InstructkitError, match="tasks\\[0\\]"):
        read_suite(str(bad))


def test_task_spec_parsing():
    assert parse_task_spec("gsm8k:cot=false,num_fewshot=8") == {
        "benchmark": "gsm8k",
        "cot": False,
        "num_fewshot": 8,
    }
    assert parse_task_spec("bbh:tasks=navigate")["tasks"] == ["navigate"]
    assert parse_task_spec("mgsm:languages=de|ja")["languages"] == ["de", "ja"]
    assert parse_task_spec("catalog/arithmetic_add") == {"catalog": "arithmetic_add"}
