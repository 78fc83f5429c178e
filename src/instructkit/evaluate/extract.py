"""Answer extraction from generated text: "the answer is X", last number, option letter, first line.

Each extractor maps a model's raw output to the short answer that is compared with the gold one.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_ANSWER_IS = re.compile(r"answer is[:\s]*(.+?)(?:\.\s|\.$|\n|$)", re.IGNORECASE)
_NUMBER = re.compile(r"-?[$]?\d[\d,]*(?:\.\d+)?")
# Tried in order: "(B)", then "B)", then a bare leading option letter ("B", "B.", "B: ...").
_LETTERS = (re.compile(r"\(([A-Z])\)"), re.compile(r"\b([A-Z])\)"), re.compile(r"^\s*([A-E])(?:[.:,]|\s|$)"))


def answer_is(text: str) -> str:
    """The text after the last "the answer is" (BBH / CoT convention), else the stripped first line."""
    found = _ANSWER_IS.findall(text)
    return found[-1].strip() if found else first_line(text)


def last_number(text: str) -> str:
    """The last number in the text, without $ and thousands separators and trailing ".0" (GSM8K / MGSM)."""
    found = _NUMBER.findall(text)
    return normalize_number(found[-1]) if found else ""


def normalize_number(text: str) -> str:
    """'$1,200.00' → '1200'; leaves non-numbers as they are."""
    cleaned = text.replace("$", "").replace(",", "").strip().rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return text.strip()
    return str(int(value)) if value == int(value) else str(value)


def option_letter(text: str) -> str:
    """The option letter written as "(B)", "B)" or a leading "B" (after "the answer is" when present)."""
    scopes = [answer_is(text), text] if _ANSWER_IS.search(text) else [text]
    for scope in scopes:
        for pattern in _LETTERS:
            match = pattern.search(scope)
            if match:
                return match.group(1)
    return ""


def first_line(text: str) -> str:
    """The first non-empty line, stripped."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def identity(text: str) -> str:
    """The text, stripped."""
    return text.strip()


def answer_is_number(text: str) -> str:
    """The number after "the answer is" when present (strict), else the last number (flexible)."""
    found = _ANSWER_IS.findall(text)
    return last_number(found[-1]) if found and last_number(found[-1]) else last_number(text)


EXTRACTORS: dict[str, Callable[[str], str]] = {
    "answer_is": answer_is,
    "last_number": last_number,
    "answer_is_number": answer_is_number,
    "option_letter": option_letter,
    "first_line": first_line,
    "identity": identity,
}


def get_extractor(name: str) -> Callable[[str], str]:
    """Look an extractor up by name, with a clear error listing the names."""
    from ..errors import InstructkitError

    try:
        return EXTRACTORS[name]
    except KeyError:
        raise InstructkitError(f"unknown answer extractor {name!r}; known: {', '.join(EXTRACTORS)}") from None
