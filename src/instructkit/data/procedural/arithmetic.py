"""Arithmetic generators: one-step sums, differences and products, and multi-step problems with rationales."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import pick, register
from .words import ITEMS, NAMES


def _num(rng: np.random.Generator, low: int, high: int) -> int:
    return int(rng.integers(low, high + 1))


@register("arithmetic_add")
def add(rng: np.random.Generator, max_value: int = 20) -> dict[str, Any]:
    """a + b with small operands."""
    a, b = _num(rng, 0, max_value), _num(rng, 0, max_value)
    return {"a": a, "b": b, "answer": str(a + b)}


@register("arithmetic_subtract")
def subtract(rng: np.random.Generator, max_value: int = 20) -> dict[str, Any]:
    """a - b with a >= b, so the answer is never negative."""
    a, b = sorted((_num(rng, 0, max_value), _num(rng, 0, max_value)), reverse=True)
    return {"a": a, "b": b, "answer": str(a - b)}


@register("arithmetic_multiply")
def multiply(rng: np.random.Generator, max_value: int = 9) -> dict[str, Any]:
    """a * b with single-digit operands by default."""
    a, b = _num(rng, 0, max_value), _num(rng, 0, max_value)
    return {"a": a, "b": b, "answer": str(a * b)}


@register("multistep_add_subtract")
def add_then_subtract(rng: np.random.Generator, max_value: int = 20) -> dict[str, Any]:
    """a + b - c, with a rationale that shows both steps."""
    a, b = _num(rng, 0, max_value), _num(rng, 0, max_value)
    c = _num(rng, 0, a + b)
    rationale = f"First, {a} + {b} = {a + b}. Then, {a + b} - {c} = {a + b - c}."
    return {"a": a, "b": b, "c": c, "answer": str(a + b - c), "rationale": rationale}


@register("multistep_three_sum")
def three_sum(rng: np.random.Generator, max_value: int = 20) -> dict[str, Any]:
    """a + b + c, summed left to right in the rationale."""
    a, b, c = (_num(rng, 0, max_value) for _ in range(3))
    rationale = f"First, {a} + {b} = {a + b}. Then, {a + b} + {c} = {a + b + c}."
    return {"a": a, "b": b, "c": c, "answer": str(a + b + c), "rationale": rationale}


@register("multistep_word_problem")
def word_problem(rng: np.random.Generator, max_value: int = 10) -> dict[str, Any]:
    """Someone has some items, buys more, then gives some away: how many are left?"""
    name, item = pick(rng, NAMES), pick(rng, ITEMS)
    start, bought = _num(rng, 1, max_value), _num(rng, 1, max_value)
    given = _num(rng, 0, start + bought)
    problem = f"{name} has {start} {item}. {name} buys {bought} more and then gives away {given}."
    rationale = (
        f"{name} starts with {start} {item}. After buying {bought}, {name} has {start} + {bought} = {start + bought}. "
        f"After giving away {given}, {name} has {start + bought} - {given} = {start + bought - given}."
    )
    return {
        "problem": problem,
        "name": name,
        "item": item,
        "answer": str(start + bought - given),
        "rationale": rationale,
    }


@register("multistep_multiply_add")
def multiply_add(rng: np.random.Generator, max_value: int = 9) -> dict[str, Any]:
    """a * b + c: multiplication first, as the rationale says."""
    a, b, c = _num(rng, 0, max_value), _num(rng, 0, max_value), _num(rng, 0, 20)
    rationale = f"First, {a} * {b} = {a * b}. Then, {a * b} + {c} = {a * b + c}."
    return {"a": a, "b": b, "c": c, "answer": str(a * b + c), "rationale": rationale}
