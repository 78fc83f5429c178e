"""Shared helpers for the benchmarks: synthetic data, timing, and writing a results section."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
WORK_DIR = Path(__file__).resolve().parent / "_work"
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("INSTRUCTKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def offline() -> None:
    """No hub requests and no tokenizer thread pools, unless the caller's environment says otherwise."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"


def write_section(name: str, markdown: str, data: dict) -> Path:
    """Write `results/<name>.md` (a RESULTS.md section) and `results/<name>.json` (raw numbers)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(data, indent=2))
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(markdown.rstrip() + "\n")
    print(markdown)
    return path


def linear_work(pairs: list[tuple[list[int], list[int]]], engine: Any, batch_size: int) -> dict:
    """Forward-pass work on log-likelihood (context, continuation) token pairs, in linear-layer FLOPs
    (attention left out), of lm-eval's padded rows against instructkit's `engine` (an HFBackend).

    lm-eval runs every request's context + continuation (padded to the longest of each length-sorted batch)
    and projects every position onto the vocabulary. instructkit runs its packed trie rows (padding
    included) and projects only the scored positions: `ratio`. Over the fewest tokens an exact method needs
    (every distinct token once, no padding) it is `ceiling`, the speed-up a tool computing the same exact
    log-likelihoods can reach over lm-eval at equal FLOP/s.
    """
    config = engine.model.config
    head = 2 * config.vocab_size * config.hidden_size
    body = 2 * sum(p.numel() for p in engine.model.parameters()) - head  # tied embeddings: head counted once
    lengths = sorted((len(c) + len(x) - 1 for c, x in pairs), reverse=True)
    lm_tokens = sum(
        max(lengths[i : i + batch_size]) * len(lengths[i : i + batch_size])
        for i in range(0, len(lengths), batch_size)
    )
    prefix, tries, rows = engine.plan_rows(pairs)
    our_tokens = prefix + sum(max(sum(len(t.tokens) for t in r) for r in b) * len(b) for b in rows)
    needed = prefix + sum(len(t.tokens) for t in tries)  # every distinct token once, no padding
    scored = sum(len({node for _, node, _ in t.scores}) for t in tries)
    lm_flops = lm_tokens * (body + head)
    return {
        "lm_tokens": lm_tokens,
        "our_tokens": our_tokens,
        "needed_tokens": needed,
        "scored": scored,
        "ratio": lm_flops / (our_tokens * body + scored * head),
        "ceiling": lm_flops / (needed * body + scored * head),
    }


def generation_work(prompts: list[list[int]], generated: list[int], engine: Any, batch_size: int) -> dict:
    """Forward-pass work of greedy generation, in linear-layer FLOPs (attention left out): lm-eval's
    `hf` model over the fewest an exact method needs (`ceiling`), as `linear_work` does for scoring.

    lm-eval sorts prompts longest first and runs batches of `batch_size`, left-padded to the batch's
    longest prompt, decoding every row until the batch's last row stops (each step projects one position
    per row). Needed: every distinct prompt token once (prompts sharing a few-shot prefix share it),
    then each row's own generated tokens (`generated[i]` tokens, the last one never fed back), one
    vocabulary projection per generated token. `generated` comes from the run itself (same greedy text
    on both sides).
    """
    config = engine.model.config
    head = 2 * config.vocab_size * config.hidden_size
    body = 2 * sum(p.numel() for p in engine.model.parameters()) - head
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    lm_fed = lm_projected = 0
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        steps = max(generated[i] for i in batch)
        lm_fed += len(batch) * (max(len(prompts[i]) for i in batch) + steps - 1)
        lm_projected += len(batch) * steps
    needed = distinct_prefixes(prompts) + sum(max(g - 1, 0) for g in generated)
    return {
        "lm_tokens": lm_fed,
        "needed_tokens": needed,
        "ceiling": (lm_fed * body + lm_projected * head) / (needed * body + sum(generated) * head),
    }


def distinct_prefixes(seqs: list[list[int]]) -> int:
    """Distinct non-empty prefixes of `seqs` (nodes of their token trie): tokens an exact method runs."""
    root: dict = {}
    count = 0
    for seq in seqs:
        node = root
        for token in seq:
            child = node.get(token)
            if child is None:
                child = node[token] = {}
                count += 1
            node = child
    return count
