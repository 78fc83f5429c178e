"""N-gram decontamination: drop training rows that share an n-gram (default 13 tokens) with an evaluation set.

Tokens are lower-cased word characters (`\\w+`). A text shorter than n tokens contributes one gram,
itself, so short rows are only flagged when they equal a short evaluation text. Checks run on a row's
field values (not the rendered prompt), so template wording shared by train and eval never matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_TOKEN = re.compile(r"\w+")


class DecontaminateSpec(BaseModel):
    """Which evaluation sets to check against and how."""

    model_config = ConfigDict(extra="forbid")

    eval_sets: list[str] = Field(description="task names, `cluster:NAME` or `collection:NAME`")
    n: int = Field(13, ge=1, description="n-gram length in tokens")
    split: str | None = Field(
        None, description="split of the eval tasks to read (default: each task's eval_split)"
    )


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens."""
    return _TOKEN.findall(text.lower())


def ngrams(text: str, n: int) -> set[str]:
    """The set of n-grams of a text (one gram for texts shorter than n tokens, none for empty text)."""
    toks = tokens(text)
    if len(toks) < n:
        return {" ".join(toks)} if toks else set()
    return {" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def row_text(row: dict[str, Any]) -> str:
    """All text of a task row (strings, numbers, lists of strings or messages), in field order."""
    parts: list[str] = []
    for key, value in row.items():
        if key.startswith("_"):
            continue
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            parts.append(str(value))
        elif isinstance(value, list):
            parts.extend(
                v if isinstance(v, str) else v.get("content", "") for v in value if isinstance(v, str | dict)
            )
    return "\n".join(parts)


@dataclass(frozen=True)
class Hit:
    """One contaminated training row and the evaluation row it overlaps."""

    index: int
    eval_set: str
    eval_source: str
    ngram: str


class EvalIndex:
    """Every n-gram of the evaluation sets, mapped to (eval set, row source) of its first occurrence."""

    def __init__(self, n: int = 13):
        self.n = n
        self.grams: dict[str, tuple[str, str]] = {}

    def add(self, eval_set: str, rows: Iterable[dict[str, Any]]) -> None:
        """Index the rows of one evaluation set."""
        for row in rows:
            for gram in ngrams(row_text(row), self.n):
                self.grams.setdefault(gram, (eval_set, str(row.get("_source", ""))))

    def find(self, rows: list[dict[str, Any]]) -> list[Hit]:
        """Rows (by index) sharing an n-gram with the index; the first shared gram in sorted order is reported."""
        hits = []
        for i, row in enumerate(rows):
            shared = sorted(g for g in ngrams(row_text(row), self.n) if g in self.grams)
            if shared:
                eval_set, source = self.grams[shared[0]]
                hits.append(Hit(i, eval_set, source, shared[0]))
        return hits
