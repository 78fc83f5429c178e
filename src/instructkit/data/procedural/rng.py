"""Stable per-item randomness: an RNG derived from a hash of its identity, never from global state.

Every random choice in task rendering and mixing goes through `stable_rng(seed, task, row, ...)`, so a
result is a pure function of those parts, whatever the process, worker count or order of work.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stable_seed(*parts: object) -> int:
    """A 64-bit integer from a BLAKE2b hash of the parts' text (stable across runs and machines)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def stable_rng(*parts: object) -> np.random.Generator:
    """A numpy Generator seeded by `stable_seed(*parts)`."""
    return np.random.Generator(np.random.PCG64(stable_seed(*parts)))
