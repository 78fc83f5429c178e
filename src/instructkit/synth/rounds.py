"""Multi-round inference: chains of texts, and round prompts prefixed with earlier rounds under a token budget.

Texts are grouped into chains of consecutive texts (of the same document, when a group key is
given). Round r handles the r-th text of every chain; its prompt is prefixed with the chain's
earlier texts and their pairs, most recent first, while they fit the budget (counted in tokens) and
while each earlier round produced pairs (as the released code does: a round without pairs breaks
the chain). A text longer than the budget on its own is truncated, and marked so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .markup import Pair, SynthFormat, encode, encode_example


@dataclass(frozen=True)
class Entry:
    """An earlier round of a chain: its text and the pairs parsed from the synthesizer's output."""

    context: str
    pairs: tuple[Pair, ...]


@dataclass(frozen=True)
class RoundPrompt:
    """Token ids of one round's prompt, how many earlier rounds it carries, and whether text was cut."""

    ids: list[int]
    prefix_rounds: int
    truncated: bool


def plan_chains(n_texts: int, rounds: int, groups: Sequence[object] | None = None) -> list[list[int]]:
    """Indices of consecutive texts in chains of at most `rounds`; a change of group starts a new chain."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    chains: list[list[int]] = []
    for i in range(n_texts):
        same_group = groups is None or (i > 0 and groups[i] == groups[i - 1])
        if chains and len(chains[-1]) < rounds and same_group:
            chains[-1].append(i)
        else:
            chains.append([i])
    return chains


def build_prompt(
    tokenizer, fmt: SynthFormat, history: Sequence[Entry], context: str, budget: int
) -> RoundPrompt:
    """The prompt for `context`: earlier entries that fit (newest first, kept in order), then its reading block."""
    current, truncated = _reading_block(tokenizer, fmt, context, budget)
    room = budget - len(current)
    blocks: list[list[int]] = []
    for entry in reversed(history):
        if not entry.pairs:
            break
        ids, _ = encode_example(tokenizer, fmt, entry.context, entry.pairs)
        if len(ids) > room:
            break
        blocks.insert(0, ids)
        room -= len(ids)
    prefix = [t for block in blocks for t in block]
    return RoundPrompt(prefix + current, len(blocks), truncated)


def _reading_block(tokenizer, fmt: SynthFormat, context: str, budget: int) -> tuple[list[int], bool]:
    """Ids of the reading block, cutting the context's tail (in tokens) until the block fits."""
    ids = encode(tokenizer, fmt.read(context))
    if len(ids) <= budget:
        return ids, False
    context_ids = encode(tokenizer, context)
    keep = max(0, len(context_ids) - (len(ids) - budget))
    while True:
        cut = tokenizer.decode(context_ids[:keep], skip_special_tokens=True)
        ids = encode(tokenizer, fmt.read(cut))
        if len(ids) <= budget or keep == 0:
            break
        keep = max(0, keep - max(1, len(ids) - budget))
    if len(ids) > budget:
        raise ValueError(f"the budget of {budget} tokens cannot hold even an empty reading block")
    return ids, True
