"""Parse a synthesizer's output into instruction–response pairs, counting every malformed piece by reason.

Follows the released parser: split on `</END>`, drop an incomplete trailing pair, require exactly one
`<ANS>` after a `<QUE>`, non-empty question and answer, and drop case-insensitive duplicate questions.
Never raises: any string parses, the failures are only counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .markup import ANS, END, QUE, Pair

REASONS = (
    "incomplete_trailing",
    "no_answer_marker",
    "several_answer_markers",
    "no_question_marker",
    "empty_instruction",
    "empty_response",
    "duplicate",
)


@dataclass
class ParseResult:
    """Pairs in output order plus the count of dropped pieces per reason (see `REASONS`)."""

    pairs: list[Pair] = field(default_factory=list)
    failures: Counter = field(default_factory=Counter)

    @property
    def segments(self) -> int:
        """Every piece the output was split into: kept pairs plus dropped pieces."""
        return len(self.pairs) + sum(self.failures.values())


def parse_pairs(text: str, eos: str | None = "</s>") -> ParseResult:
    """Split generated text into pairs; an `eos` string (and anything after it) ends the output."""
    result = ParseResult()
    if eos and eos in text:
        text = text[: text.index(eos)]
    pieces = text.split(END)
    trailing = pieces.pop()  # text after the last </END>: empty, or an unfinished pair
    seen: set[str] = set()
    for piece in pieces:
        pair, reason = _parse_piece(piece)
        if pair is not None and pair.instruction.lower() in seen:
            pair, reason = None, "duplicate"
        if pair is None:
            result.failures[reason] += 1
            continue
        seen.add(pair.instruction.lower())
        result.pairs.append(pair)
    if trailing.strip():
        result.failures["incomplete_trailing"] += 1
    return result


def _parse_piece(piece: str) -> tuple[Pair | None, str]:
    """One `<QUE> q <ANS> a` piece → (pair, "") or (None, reason)."""
    parts = piece.split(ANS)
    if len(parts) == 1:
        return None, "no_answer_marker"
    if len(parts) > 2:
        return None, "several_answer_markers"
    question, answer = parts[0].strip(), parts[1].strip()
    if not question.startswith(QUE):
        return None, "no_question_marker"
    question = question[len(QUE) :].replace(QUE, "").strip()
    if not question:
        return None, "empty_instruction"
    if not answer:
        return None, "empty_response"
    return Pair(question, answer), ""
