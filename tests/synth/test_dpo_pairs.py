"""`synth pairs`: on-policy preference pairs checked by an exact answer (tiny model, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from instructkit.errors import BadRowError, InstructkitError
from instructkit.evaluate.extract import last_number
from instructkit.synth.pairs import build_pairs, load_exact_task
from instructkit.synth.pairs_config import PairsConfig


@pytest.fixture(scope="module")
def questions(tmp_path_factory) -> Path:
    """Single-digit sums: a random tiny model's last number is sometimes right, mostly wrong."""
    path = tmp_path_factory.mktemp("pairs") / "sums.jsonl"
    rows = [{"question": f"What is {a} + {b}?", "answer": a + b} for a in range(5) for b in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(model: Path, task: Path, out: Path, **kw) -> PairsConfig:
    settings = dict(samples=8, temperature=1.0, max_new_tokens=8, shard_size=5, seed=4) | kw
    return PairsConfig(model=str(model), task=str(task), out=str(out), **settings)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pairs_are_right_vs_wrong_and_counted(saved_tiny_model, questions, tmp_path):
    summary = build_pairs(_cfg(saved_tiny_model, questions, tmp_path / "a"))
    rows = _rows(tmp_path / "a" / "pairs.jsonl")
    gold = {f"sums/{i}": str(r["answer"]) for i, r in enumerate(_rows(questions))}
    assert summary["pairs"] == len(rows) >= 1
    assert summary["questions"] == 20
    assert summary["pairs"] + summary["skipped_all_right"] + summary["skipped_all_wrong"] == 20
    for row in rows:
        assert row["prompt"][-1]["role"] == "user" and row["prompt"][-1]["content"].startswith("What is")
        assert [m["role"] for m in row["chosen"]] == [m["role"] for m in row["rejected"]] == ["assistant"]
        # checked again here, independently of the builder: chosen's last number is the gold sum, rejected's is not
        assert last_number(row["chosen"][0]["content"]) == gold[row["id"]] == row["answer"]
        assert last_number(row["rejected"][0]["content"]) != gold[row["id"]]
    shard = [
        json.loads(line) for p in sorted((tmp_path / "a" / "shards").glob("*.jsonl")) for line in p.open()
    ]
    mixed = [r for r in shard if len({s["correct"] for s in r["samples"]}) == 2]
    assert len(mixed) == len(rows)  # every question with both a right and a wrong sample gives one pair


def test_same_seed_same_pairs_and_resume(saved_tiny_model, questions, tmp_path):
    first = build_pairs(_cfg(saved_tiny_model, questions, tmp_path / "a"))
    build_pairs(_cfg(saved_tiny_model, questions, tmp_path / "b"))
    expected = (tmp_path / "a" / "pairs.jsonl").read_bytes()
    assert (tmp_path / "b" / "pairs.jsonl").read_bytes() == expected
    # an interrupted run: one shard missing; the rerun makes only that one, and the same pairs
    (tmp_path / "a" / "shards" / "shard-00001.jsonl").unlink()
    again = build_pairs(_cfg(saved_tiny_model, questions, tmp_path / "a"))
    assert (tmp_path / "a" / "pairs.jsonl").read_bytes() == expected and again == first
    other = build_pairs(_cfg(saved_tiny_model, questions, tmp_path / "c", seed=5))
    assert (tmp_path / "c" / "pairs.jsonl").read_bytes() != expected or other != first
    with pytest.raises(InstructkitError, match="seed differ"):
        build_pairs(_cfg(saved_tiny_model, questions, tmp_path / "a", seed=5))


def test_cli_holdout_and_prepare_reads_pairs(saved_tiny_model, questions, tmp_path):
    from instructkit.cli.app import app

    out = tmp_path / "cli"
    args = ["synth", "pairs", "-m", str(saved_tiny_model), "-o", str(out), "--task", str(questions)]
    args += [
        "--samples",
        "8",
        "--temperature",
        "1.0",
        "--max-new-tokens",
        "8",
        "--seed",
        "4",
        "--holdout",
        "1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["heldout_pairs"] == 1 and len(_rows(out / "heldout.jsonl")) == 1
    assert len(_rows(out / "pairs.jsonl")) == summary["pairs"]
    prepared = tmp_path / "prepared"
    args = ["data", "prepare", str(out / "pairs.jsonl"), "--tokenizer", str(saved_tiny_model)]
    result = CliRunner().invoke(app, [*args, "--out", str(prepared), "--max-length", "128"])
    assert result.exit_code == 0, result.output
    meta = json.loads((prepared / "prepare.json").read_text())
    assert (
        meta["kind"] == "preference" and meta["input_formats"]["preference"]["rows_kept"] == summary["pairs"]
    )


def test_gsm8k_train_questions_by_default(shared_data):
    task = load_exact_task(PairsConfig(model="m", out="o", data_dir=str(shared_data), limit=3))
    first = json.loads((shared_data / "gsm8k" / "train.jsonl").open().readline())
    assert len(task.docs) == 3 and first["question"] in task.docs[0].query
    assert task.docs[0].answers == [first["answer"].split("####")[-1].strip()]
    assert task.stop == ("\n\nQ:", "\nQ:", "\n\n")  # the task's own, unless asked otherwise
    no_stop = PairsConfig(model="m", out="o", data_dir=str(shared_data), limit=1, stop=[""], max_new_tokens=9)
    assert (load_exact_task(no_stop).stop, load_exact_task(no_stop).max_new_tokens) == ((), 9)


def test_bad_question_file_names_row_and_field(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "1+1?", "answer": 2}\n{"question": "2+2?"}\n')
    with pytest.raises(BadRowError, match="answer") as info:
        load_exact_task(PairsConfig(model="m", out="o", task=str(path)))
    assert str(path) in str(info.value) and ":2" in str(info.value)
