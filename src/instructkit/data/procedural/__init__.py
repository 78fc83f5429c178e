"""Procedural task generators: rows made from a seeded RNG, so the default catalog needs no download.

A generator is a function `(rng, **params) -> dict` registered by name; a task YAML names it
(`source: {procedural: arithmetic_add, size: 500}`). `generate` draws rows one after another from
one RNG seeded by (seed, name) and drops exact duplicates, so train and test never share a row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import InstructkitError
from .rng import stable_rng

Generator = Callable[..., dict[str, Any]]
GENERATORS: dict[str, Generator] = {}
MAX_ATTEMPTS_PER_ROW = 30


def register(name: str) -> Callable[[Generator], Generator]:
    """Decorator: make a generator available to task YAMLs under `name`."""

    def wrap(fn: Generator) -> Generator:
        if name in GENERATORS:
            raise InstructkitError(f"procedural generator {name!r} registered twice")
        GENERATORS[name] = fn
        return fn

    return wrap


def generate(
    name: str, size: int, seed: int = 0, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """`size` distinct rows of generator `name` (fewer only when the generator's space is smaller)."""
    _load_generators()
    if name not in GENERATORS:
        raise InstructkitError(
            f"unknown procedural generator {name!r} (known: {', '.join(sorted(GENERATORS))})"
        )
    rng = stable_rng(seed, "procedural", name)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(size * MAX_ATTEMPTS_PER_ROW):
        if len(rows) == size:
            break
        row = GENERATORS[name](rng, **(params or {}))
        key = json.dumps(row, sort_keys=True)
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows


def pick(rng: np.random.Generator, items: list[Any] | tuple[Any, ...]) -> Any:
    """One item, chosen by the row's RNG."""
    return items[int(rng.integers(len(items)))]


def sample(rng: np.random.Generator, items: list[Any] | tuple[Any, ...], k: int) -> list[Any]:
    """k distinct items, in random order."""
    return [items[int(i)] for i in rng.choice(len(items), size=k, replace=False)]


def _load_generators() -> None:
    from . import arithmetic, language, reasoning, symbolic  # noqa: F401  (registration side effect)
