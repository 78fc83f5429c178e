"""Synthesizer quality measures: response token F1 and statistics of generated pairs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..evaluate.metrics import normalize_answer


def answer_in_context(response: str, context: str) -> bool:
    """Whether the normalised response occurs as a span of the normalised context."""
    answer = normalize_answer(response)
    return bool(answer) and f" {answer} " in f" {normalize_answer(context)} "


def pair_statistics(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Pairs per text, parse failures by reason and their rate, share of answers found in the context.

    Each record has `text`, `pairs` ([{instruction, response}]) and `failures` ({reason: count}).
    The failure rate is dropped pieces over all pieces (kept pairs + dropped) of the outputs.
    """
    texts = pairs = in_context = 0
    failures: Counter = Counter()
    without_pairs = 0
    for record in records:
        texts += 1
        pairs += len(record["pairs"])
        without_pairs += not record["pairs"]
        failures.update(record.get("failures") or {})
        in_context += sum(answer_in_context(p["response"], record["text"]) for p in record["pairs"])
    dropped = sum(failures.values())
    return {
        "texts": texts,
        "pairs": pairs,
        "pairs_per_text": round(pairs / texts, 4) if texts else 0.0,
        "texts_without_pairs": without_pairs,
        "parse_failures": dict(sorted(failures.items())),
        "parse_failure_rate": round(dropped / (pairs + dropped), 4) if pairs + dropped else 0.0,
        "answer_in_context_share": round(in_context / pairs, 4) if pairs else 0.0,
    }
