"""Encoder-decoder pairs (one user turn, one reply) prepared with the tiny T5 tokenizer."""

from __future__ import annotations

from pathlib import Path

from helpers.files import write_jsonl
from instructkit.data.prepare import PrepareConfig, prepare


def pair_rows(n: int = 24, seed: int = 0) -> list[dict]:
    """Arithmetic questions of varied length, one user turn and one reply each."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        question = f"What is {a} plus {b}?" + " Think." * rng.randint(0, 6)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": str(a + b)},
                ]
            }
        )
    return rows


def prepare_pairs(tmp: Path, rows: list[dict], **kw) -> tuple[dict, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    src = write_jsonl(tmp / "pairs.jsonl", rows)
    out = tmp / "prepared"
    fields = {"tokenizer": "tiny:t5-nano", "max_length": 64} | kw
    return prepare(PrepareConfig(sources=[str(src)], out=str(out), **fields), progress=False), out
