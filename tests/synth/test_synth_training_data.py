"""Synthesizer training data: context + pairs in the published format, labels on the pairs only."""

from __future__ import annotations

import json

import datasets

from instructkit.data.tokenize import IGNORE_INDEX
from instructkit.synth.markup import Pair, SynthFormat
from instructkit.synth.paragraphs import generate_paragraph_rows
from instructkit.synth.task_rows import normalize_row, read_task_rows, split_context
from instructkit.synth.training_data import TrainDataConfig, group_examples, make_training_data


def test_rows_sharing_a_context_become_one_example():
    rows = [
        {"dataset": "d", "context": "C", "instruction": "Q1", "response": "A1"},
        {"dataset": "d", "context": "C", "instruction": "q1", "response": "dup"},
        {"dataset": "d", "context": "C", "instruction": "Q2", "response": "A2"},
        {"dataset": "e", "context": "C", "instruction": "Q1", "response": "A1"},
    ]
    examples = group_examples(rows)
    assert [(e.dataset, e.pairs) for e in examples] == [
        ("d", [Pair("Q1", "A1"), Pair("Q2", "A2")]),
        ("e", [Pair("Q1", "A1")]),
    ]


def test_labels_cover_exactly_the_pairs_and_eos(tmp_path):
    rows = generate_paragraph_rows("people", 30) + generate_paragraph_rows("towns", 30)
    out = tmp_path / "td"
    stats = make_training_data(
        TrainDataConfig(
            sources=[], out=str(out), tokenizer="tiny:nano", max_length=200, max_shots=3, holdout=0.2
        ),
        rows=rows,
    )
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out / "tokenizer")
    ds = datasets.load_from_disk(str(out))
    fmt = SynthFormat.for_tokenizer(tok)
    assert stats["datasets"] == ["people", "towns"] and stats["held_out_examples"] == 12
    for row in ds:
        assert len(row["input_ids"]) <= 200 and 1 <= row["shots"] <= 3
        text = tok.decode(row["input_ids"])
        blocks = text.split(fmt.eos)[:-1]
        assert len(blocks) == row["shots"]
        labelled = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
        expected = "".join(b.split("</CON>\n\n", 1)[1] + fmt.eos for b in blocks)
        assert tok.decode(labelled) == expected
        assert all(label in (IGNORE_INDEX, t) for t, label in zip(row["input_ids"], row["labels"]))
    held = [json.loads(line) for line in (out / "held_out.jsonl").read_text().splitlines()]
    train_text = "\n".join(tok.decode(r["input_ids"]) for r in ds)
    assert held and all(h["context"] not in train_text for h in held)


def test_training_loader_accepts_the_output(tmp_path):
    from instructkit.data.prepared import read_prepared

    out = tmp_path / "td"
    make_training_data(
        TrainDataConfig(sources=[], out=str(out), tokenizer="tiny:nano", max_length=256),
        rows=generate_paragraph_rows("people", 10),
    )
    data = read_prepared(out)
    assert not data.packed and data.tokenizer_dir is not None and len(data.dataset) >= 1


def test_procedural_reading_tasks_are_a_source():
    rows = read_task_rows("procedural:reading_where:5")
    assert len(rows) == 5 and all(r["response"] in r["context"] for r in rows)


def test_context_is_cut_out_of_a_prompt():
    prompt = "Read this:\n" + "The quick brown fox jumps over the lazy dog. " * 6 + "\nWhat jumps?"
    context, rest = split_context(prompt)
    assert context.startswith("The quick brown fox") and rest == "Read this:\nWhat jumps?"
    assert normalize_row({"prompt": "short prompt", "completion": "x"}, "d") == "no_context"


def test_p3_extractive_qa_rows_yield_contexts(shared_data):
    path = shared_data / "p3_t0_subset" / "quoref_Answer_Question_Given_Context.jsonl"
    rows = read_task_rows(str(path))
    assert len(rows) > 50
    first = rows[0]
    assert len(first["context"].split()) >= 40 and first["context"] not in first["instruction"]
    assert not first["response"].endswith("<|endoftext|>")
