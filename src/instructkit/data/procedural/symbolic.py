"""Symbolic generators: comparisons, string edits and list operations with exact, short answers."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import register, sample
from .words import WORDS, pseudo_word


def _two_distinct(rng: np.random.Generator, max_value: int) -> tuple[int, int]:
    a, b = (int(x) for x in rng.choice(max_value + 1, size=2, replace=False))
    return a, b


@register("compare_larger")
def larger(rng: np.random.Generator, max_value: int = 99) -> dict[str, Any]:
    """Which of two numbers is larger (two-way choice)."""
    a, b = _two_distinct(rng, max_value)
    return {"a": a, "b": b, "answer": str(max(a, b)), "options": [str(a), str(b)]}


@register("compare_smaller")
def smaller(rng: np.random.Generator, max_value: int = 99) -> dict[str, Any]:
    """Which of two numbers is smaller (two-way choice)."""
    a, b = _two_distinct(rng, max_value)
    return {"a": a, "b": b, "answer": str(min(a, b)), "options": [str(a), str(b)]}


@register("compare_longer_word")
def longer_word(rng: np.random.Generator) -> dict[str, Any]:
    """Which of two words has more letters (pairs of equal length are redrawn)."""
    while True:
        a, b = sample(rng, WORDS, 2)
        if len(a) != len(b):
            break
    return {"a": a, "b": b, "answer": max((a, b), key=len), "options": [a, b]}


@register("string_reverse")
def reverse(rng: np.random.Generator) -> dict[str, Any]:
    """A word spelled backwards."""
    word = pseudo_word(rng)
    return {"word": word, "answer": word[::-1]}


@register("string_first_letter")
def first_letter(rng: np.random.Generator) -> dict[str, Any]:
    """The first letter of a word."""
    word = pseudo_word(rng)
    return {"word": word, "answer": word[0]}


@register("string_last_letter")
def last_letter(rng: np.random.Generator) -> dict[str, Any]:
    """The last letter of a word."""
    word = pseudo_word(rng)
    return {"word": word, "answer": word[-1]}


def _numbers(rng: np.random.Generator, min_len: int, max_len: int, max_value: int) -> list[int]:
    length = int(rng.integers(min_len, max_len + 1))
    return [int(x) for x in rng.integers(0, max_value + 1, size=length)]


def _list_row(numbers: list[int], answer: str) -> dict[str, Any]:
    return {"numbers": numbers, "items": " ".join(map(str, numbers)), "answer": answer}


@register("list_max")
def list_max(
    rng: np.random.Generator, min_len: int = 3, max_len: int = 5, max_value: int = 9
) -> dict[str, Any]:
    """The largest of 3-5 small numbers."""
    numbers = _numbers(rng, min_len, max_len, max_value)
    return _list_row(numbers, str(max(numbers)))


@register("list_min")
def list_min(
    rng: np.random.Generator, min_len: int = 3, max_len: int = 5, max_value: int = 9
) -> dict[str, Any]:
    """The smallest of 3-5 small numbers."""
    numbers = _numbers(rng, min_len, max_len, max_value)
    return _list_row(numbers, str(min(numbers)))


@register("list_sort")
def list_sort(
    rng: np.random.Generator, min_len: int = 3, max_len: int = 5, max_value: int = 9
) -> dict[str, Any]:
    """3-5 small numbers in ascending order."""
    numbers = _numbers(rng, min_len, max_len, max_value)
    return _list_row(numbers, " ".join(map(str, sorted(numbers))))
