"""Response F1 and pair statistics."""

from __future__ import annotations

import pytest

from instructkit.evaluate.metrics import token_f1
from instructkit.synth.quality import answer_in_context, pair_statistics


def test_token_f1_follows_squad_normalisation():
    assert token_f1("The Market!", ["market"]) == 1.0
    assert token_f1("red car", ["blue car"]) == pytest.approx(0.5)
    assert token_f1("", ["x"]) == 0.0
    assert token_f1("nothing", ["else"]) == 0.0


def test_answer_in_context_matches_whole_words_only():
    assert answer_in_context("the Market", "Alice went to the market today.")
    assert not answer_in_context("mark", "Alice went to the market today.")


def test_pair_statistics():
    records = [
        {
            "text": "Alice went to the market.",
            "pairs": [
                {"instruction": "Where?", "response": "market"},
                {"instruction": "Who?", "response": "Bob"},
            ],
            "failures": {"duplicate": 1},
        },
        {"text": "Nothing.", "pairs": [], "failures": {"incomplete_trailing": 1}},
    ]
    stats = pair_statistics(records)
    assert stats["pairs_per_text"] == 1.0 and stats["texts_without_pairs"] == 1
    assert stats["parse_failure_rate"] == 0.5
    assert stats["answer_in_context_share"] == 0.5
    assert stats["parse_failures"] == {"duplicate": 1, "incomplete_trailing": 1}
