"""`judge_runs`: the judge compares two runs' answers row by row, and refuses rather than judge without
the instruction (a silent wrong verdict) or with no shared rows."""

from __future__ import annotations

import pytest

from helpers.files import write_jsonl
from instructkit.errors import InstructkitError
from instructkit.evaluate.backends.hf import HFBackend
from instructkit.evaluate.judge import judge_runs, parse_verdict


def _run(folder, outputs: dict[str, str]):
    (folder / "samples").mkdir(parents=True)
    write_jsonl(folder / "samples" / "t__a.jsonl", [{"id": i, "output": o} for i, o in outputs.items()])
    return folder


def test_judge_runs_pairs_rows_by_id_and_refuses_a_missing_prompt(tmp_path, tiny_model, tiny_tokenizer):
    base = _run(tmp_path / "base", {"1": "8", "2": "5", "3": "0"})
    tuned = _run(tmp_path / "tuned", {"2": "4", "1": "8"})  # row 3 unanswered: not judged
    judge = HFBackend(tiny_model, tiny_tokenizer)
    queries = {"1": "What is 18 minus 10?", "2": "What is 9 minus 5?"}
    result = judge_runs(judge, base, tuned, "t/a", queries)
    assert result["ids"] == ["1", "2"] and result["n"] == 2 and 0 <= result["win_rate"] <= 100
    with pytest.raises(InstructkitError, match="no prompt for row '2'"):
        judge_runs(judge, base, tuned, "t/a", {"1": "What is 18 minus 10?"})
    with pytest.raises(InstructkitError, match="no samples"):
        judge_runs(judge, base, tuned, "t/b", queries)


def test_a_chat_judge_verdict_in_a_fresh_turn_is_read():
    # a chat judge (SmolLM2-135M-Instruct) answers "Output (b)", not the continuation "b)"
    assert parse_verdict("Output (b)") == "b" and parse_verdict(" output (A) is better") == "a"
    assert parse_verdict("Output (c)") is None and parse_verdict("Outputs differ") is None
