"""Scoring methods with a tiny real model: self-consistency voting, Flan open-ended ranking, pairwise
judging in both orders, HumanEval execution, and catalog tasks."""

from __future__ import annotations

import pytest

from helpers.paths import FIXTURES_ROOT
from instructkit.errors import InstructkitError
from instructkit.evaluate.backends.hf import HFBackend
from instructkit.evaluate.code_exec import check_program, humaneval_program
from instructkit.evaluate.judge import pairwise_win_rate, parse_verdict
from instructkit.evaluate.requests import Sample
from instructkit.evaluate.scoring import majority_vote, rank_open_ended, score_task
from instructkit.evaluate.spec import EvalDoc, EvalTask
from instructkit.evaluate.suites.registry import load_benchmark

FIXTURES = FIXTURES_ROOT / "eval"


def test_majority_vote_and_open_ended_ranking():
    assert majority_vote(["3", "4", "4", "3", ""]) == "3"  # tie → first seen
    assert majority_vote(["", "", "7"]) == "7"
    samples = [
        Sample("a a a a", -2.0, 4),
        Sample("good", -30.0, 4),
        Sample("ok", -40.0, 4),
        Sample("bad", -90.0, 4),
    ]
    assert rank_open_ended(samples).text == "good"  # -2 is above half the median (-17.5): dropped


def test_self_consistency_votes_over_n_samples(tiny_model, tiny_tokenizer):
    docs = [EvalDoc(f"d{i}", f"What is {i} plus {i}? The answer is", answers=[str(2 * i)]) for i in range(3)]
    task = EvalTask(
        "sc",
        "self_consistency",
        docs,
        extractor="last_number",
        samples=4,
        temperature=0.8,
        max_new_tokens=6,
        stop=("\n",),
    )
    records, metrics = score_task(HFBackend(tiny_model, tiny_tokenizer), task)
    assert all(len(r["votes"]) == 4 and r["pred"] == majority_vote(r["votes"]) for r in records)
    assert 0.0 <= metrics["acc"] <= 100.0


def test_open_ended_keeps_k_candidates(tiny_model, tiny_tokenizer):
    task = EvalTask(
        "oe",
        "open_ended",
        [EvalDoc("x", "Write a short poem about the sea.", answers=["waves"])],
        samples=3,
        temperature=0.7,
        max_new_tokens=8,
        stop=(),
    )
    records, _ = score_task(HFBackend(tiny_model, tiny_tokenizer), task)
    assert len(records[0]["candidates"]) == 3
    assert (
        records[0]["output"]
        == rank_open_ended([Sample(c["text"], c["logprob"], 0) for c in records[0]["candidates"]]).text
    )


def test_pairwise_judging_in_both_orders_is_antisymmetric(tiny_model, tiny_tokenizer):
    judge = HFBackend(tiny_model, tiny_tokenizer)
    inst, a, b = ["Say hi.", "Add 2 and 2."], ["hi", "4"], ["hello there", "five"]
    ab = pairwise_win_rate(judge, inst, a, b)
    ba = pairwise_win_rate(judge, inst, b, a)
    assert ab["win_rate"] + ba["win_rate"] == pytest.approx(100.0)
    assert all(len(item["verdicts"]) == 2 for item in ab["items"])
    assert parse_verdict("b) is better") == "b" and parse_verdict("none") is None


def test_humaneval_execution_runs_tests_in_a_subprocess():
    problem = load_benchmark("humaneval", FIXTURES)[0].docs[0]
    test, entry = problem.meta["test"], problem.meta["entry_point"]
    assert check_program(humaneval_program(problem.query, problem.answers[0], test, entry), allow=True)
    assert not check_program(humaneval_program(problem.query, "    return a - b\n", test, entry), allow=True)
    assert not check_program("while True: pass", timeout=1, allow=True)
    with pytest.raises(InstructkitError, match="allow-code-execution"):
        check_program("pass")


def test_catalog_tasks_evaluate_with_their_templates(tiny_model, tiny_tokenizer):
    from instructkit.evaluate.catalog_tasks import catalog_eval_tasks

    tasks = catalog_eval_tasks(["entail_location", "arithmetic_add"], k_shot=1, limit=3)
    by_method = {t.method for t in tasks}
    assert by_method == {"multiple_choice", "generate"}
    option_task = next(t for t in tasks if t.method == "multiple_choice")
    assert option_task.random_baseline == pytest.approx(100 / 3) and option_task.cluster
    records, metrics = score_task(HFBackend(tiny_model, tiny_tokenizer), option_task)
    assert len(records) == 3 and all(len(r["loglikelihoods"]) == 3 for r in records)
