"""The instruction-augmented corpus: lengths within the limit, every pair kept, varied templates, mixing."""

from __future__ import annotations

import json
import random

import datasets
from hypothesis import given, settings
from hypothesis import strategies as st

from instructkit.synth.corpus import CorpusConfig, TokenCounter, build_corpus, concatenate
from instructkit.synth.corpus_templates import answer_text, question_text, split_options
from instructkit.synth.markup import Pair


def _records(n: int) -> list[dict]:
    return [
        {
            "id": i,
            "text": f"Text {i}: the river Ome{i} flows past the town of Vell{i}.",
            "pairs": [
                {"instruction": f"Which river flows past Vell{i}?", "response": f"Ome{i}"},
                {"instruction": f"What is text {i} about?", "response": f"A river and the town Vell{i}."},
            ],
        }
        for i in range(n)
    ]


def _corpus(tmp_path, tokenizer, records, **kw) -> tuple[list[dict], dict]:
    cfg = CorpusConfig(pairs="unused", out=str(tmp_path / "corpus"), tokenizer="unused", **kw)
    stats = build_corpus(cfg, records=records, tokenizer=tokenizer)
    return list(datasets.load_from_disk(str(tmp_path / "corpus"))), stats


def test_documents_fit_and_every_text_and_pair_is_kept(tmp_path, tiny_tokenizer):
    records = _records(40)
    docs, stats = _corpus(tmp_path, tiny_tokenizer, records, max_length=400)
    count = TokenCounter(tiny_tokenizer)
    assert all(count(d["text"]) + 1 <= 400 for d in docs)  # + the EOS preparation appends
    everything = "\n".join(d["text"] for d in docs)
    for r in records:
        assert r["text"] in everything
        for p in r["pairs"]:
            assert p["instruction"] in everything and p["response"] in everything
    assert stats["pairs"] == 80 and len(stats["templates"]) >= 3
    assert len(docs) < len(records)  # several texts per document (M-shot)


def test_options_are_lettered_with_the_answer():
    pair = Pair("Which colour is the sky?\nOptions:\n- red\n- blue", "blue")
    assert split_options(pair.instruction) == ("Which colour is the sky?", ["red", "blue"])
    rng = random.Random(0)
    assert question_text(pair, rng).endswith("(A) red\n(B) blue")
    assert answer_text(pair, rng) == "(B) blue"


def test_rationale_responses_are_rendered_as_reasoning():
    pair = Pair("What is 2 + 3?", "Two plus three makes five. So the answer is 5.")
    rendered = answer_text(pair, random.Random(0))
    assert rendered.endswith(pair.response) and rendered != pair.response


def test_overlong_text_is_split_at_token_boundaries(tiny_tokenizer):
    text = " ".join(f"word{i}" for i in range(300))
    count = TokenCounter(tiny_tokenizer)
    docs = concatenate([text], count, budget=50, separator="\n\n")
    assert len(docs) > 1 and "".join(docs) == text
    assert all(count(d) <= 50 for d in docs)


def test_mixing_with_general_instructions_at_a_ratio(tmp_path, tiny_tokenizer):
    general = tmp_path / "general.jsonl"
    general.write_text(
        "".join(json.dumps({"prompt": f"Say {i}.", "completion": f"{i}"}) + "\n" for i in range(50))
    )
    docs, stats = _corpus(
        tmp_path, tiny_tokenizer, _records(12), max_length=120, general=str(general), general_ratio=1.0
    )
    assert stats["documents"]["general"] == stats["documents"]["augmented"]
    assert sum(d["source"] == "general" for d in docs) == stats["documents"]["general"]


@settings(max_examples=40, deadline=None)
@given(words=st.lists(st.integers(1, 60), min_size=1, max_size=12), budget=st.integers(8, 90))
def test_concatenation_respects_budget_and_order(tiny_tokenizer, words, budget):
    pieces = [" ".join(["lorem"] * n) + f" end{i}." for i, n in enumerate(words)]
    count = TokenCounter(tiny_tokenizer)
    docs = concatenate(pieces, count, budget, "\n\n")
    assert all(count(d) <= budget for d in docs)
    joined = "".join(docs).replace("\n\n", "")
    assert joined == "".join(pieces).replace("\n\n", "")
