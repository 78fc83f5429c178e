"""Varied templates that render a raw text with its pairs as pretraining text (seeded choice per text).

Every template keeps each pair's instruction and response verbatim; a pair whose instruction lists
options (`Options:` then `- item` lines) gets them re-lettered as (A), (B), ... with the answer's
letter, and a response that carries a rationale (it ends with "... the answer is X") is introduced as
step-by-step reasoning. Templates are data: prefixes, speaker names and headers drawn from lists.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from .markup import Pair

QA_STYLES = [
    ("Question: ", "Answer: ", "\n"),
    ("Q: ", "A: ", "\n"),
    ("Input: ", "Output: ", "\n"),
    ("", "Answer: ", "\n\n"),
    ("Problem: ", "Solution: ", "\n"),
    ("QUESTION: ", "ANS: ", "\n"),
]
SPEAKERS = [("User", "Assistant"), ("Student", "Teacher"), ("Reader", "Expert"), ("Human", "AI")]
NUMBERED_HEADERS = [
    "Answer the following questions about the text above.",
    "Questions:",
    "Now answer these questions based on the passage.",
    "Read the text and answer:",
]
INLINE_LEADS = ["Based on the text,", "From the passage above:", "According to the article,", ""]
OPTION_HEADERS = ["Options:", "Choose from:", "Pick one:", "Possible answers:"]
COT_LEADS = ["Let's think step by step.", "Let's reason it out.", "Step by step:"]
PAIR_SEPARATORS = ["\n\n", "\n"]

_OPTIONS = re.compile(
    r"\n\s*(?:Options|Choices|Choose from)\s*:\s*\n((?:\s*-\s*[^\n]+\n?)+)\s*$", re.IGNORECASE
)
_RATIONALE = re.compile(r"(?is)\S.*[.!?]\s+(?:so|therefore|thus|hence)?,?\s*the answer is\b")


def split_options(instruction: str) -> tuple[str, list[str]]:
    """(stem, options) when the instruction ends with an options list, else (instruction, [])."""
    m = _OPTIONS.search(instruction)
    if not m:
        return instruction, []
    options = [line.strip()[1:].strip() for line in m.group(1).splitlines() if line.strip().startswith("-")]
    return instruction[: m.start()].rstrip(), options


def has_rationale(response: str) -> bool:
    """A response with reasoning before a final "the answer is ..." sentence."""
    return bool(_RATIONALE.search(response))


def question_text(pair: Pair, rng: random.Random) -> str:
    stem, options = split_options(pair.instruction)
    if not options:
        return pair.instruction
    lettered = "\n".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(options))
    return f"{stem}\n{rng.choice(OPTION_HEADERS)}\n{lettered}"


def answer_text(pair: Pair, rng: random.Random) -> str:
    _, options = split_options(pair.instruction)
    if pair.response in options:
        return f"({chr(65 + options.index(pair.response))}) {pair.response}"
    if has_rationale(pair.response):
        return f"{rng.choice(COT_LEADS)} {pair.response}"
    return pair.response


def render_qa(text: str, pairs: Sequence[Pair], rng: random.Random) -> str:
    q, a, delim = rng.choice(QA_STYLES)
    sep = rng.choice(PAIR_SEPARATORS)
    body = sep.join(f"{q}{question_text(p, rng)}{delim}{a}{answer_text(p, rng)}" for p in pairs)
    return f"{text}\n\n{body}"


def render_dialogue(text: str, pairs: Sequence[Pair], rng: random.Random) -> str:
    user, bot = rng.choice(SPEAKERS)
    turns = "\n".join(f"{user}: {question_text(p, rng)}\n{bot}: {answer_text(p, rng)}" for p in pairs)
    return f"{text}\n\n{turns}"


def render_numbered(text: str, pairs: Sequence[Pair], rng: random.Random) -> str:
    questions = "\n".join(f"{i}. {question_text(p, rng)}" for i, p in enumerate(pairs, 1))
    answers = "\n".join(f"{i}. {answer_text(p, rng)}" for i, p in enumerate(pairs, 1))
    return f"{text}\n\n{rng.choice(NUMBERED_HEADERS)}\n{questions}\n\nAnswers:\n{answers}"


def render_inline(text: str, pairs: Sequence[Pair], rng: random.Random) -> str:
    lead = rng.choice(INLINE_LEADS)
    lines = "\n".join(f"{lead} {question_text(p, rng)} {answer_text(p, rng)}".strip() for p in pairs)
    return f"{text}\n{lines}"


TEMPLATES: dict[str, Callable[[str, Sequence[Pair], random.Random], str]] = {
    "qa": render_qa,
    "dialogue": render_dialogue,
    "numbered": render_numbered,
    "inline": render_inline,
}


def render(text: str, pairs: Sequence[Pair], rng: random.Random) -> tuple[str, str]:
    """(template name, rendered text); a text without pairs stays plain raw text."""
    if not pairs:
        return "raw", text
    name = rng.choice(sorted(TEMPLATES))
    return name, TEMPLATES[name](text, pairs, rng)
