"""Shared helpers for the benchmarks: synthetic data, timing, and writing a results section."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
WORK_DIR = Path(__file__).resolve().parent / "_work"


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    """Run fn `repeat` times; return the last result and the best wall time in seconds."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def synthetic_conversations(n: int, seed: int = 0, median_words: float = 240.0) -> list[dict]:
    """Heavy-tailed single-turn conversations (lognormal word counts) over a fixed pseudo-word vocabulary."""
    rng = np.random.default_rng(seed)
    syllables = ["ka", "lo", "mi", "ten", "ra", "su", "vo", "pe", "dri", "an", "ol", "chu", "ne", "zi", "ba"]
    vocab = ["".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(3000)]
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    rows = []
    for _ in range(n):
        total = int(np.clip(rng.lognormal(np.log(median_words), 0.9), 4, 6000))
        user_words = max(2, int(total * rng.uniform(0.3, 0.8)))
        words = rng.choice(vocab, size=total + 2, p=weights)
        user = " ".join(words[:user_words]).capitalize() + "?"
        reply = " ".join(words[user_words:]).capitalize() + "."
        rows.append(
            {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}
        )
    return rows


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"


def write_section(name: str, markdown: str, data: dict) -> Path:
    """Write `results/<name>.md` (a RESULTS.md section) and `results/<name>.json` (raw numbers)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(data, indent=2))
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(markdown.rstrip() + "\n")
    print(markdown)
    return path
