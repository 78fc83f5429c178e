"""Prompt-lookup drafts for greedy decoding: guesses of a row's next tokens, for the model to check.

A row's next tokens often repeat its prompt or its own earlier text (a GSM8K question's numbers and
names, a few-shot answer's wording). The tokens that followed the latest earlier occurrence of the row's
last n tokens (n = MAX_NGRAM down to 1) are fed after its next input in the same forward pass. The
decoder keeps a guess only while it equals the model's own greedy choice at the position before it, so
the text is the one plain greedy decoding writes, and a pass that keeps m guesses emits m + 1 tokens for
one read of the weights and the KV cache (which bound a CPU decoding step with few rows).
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_NGRAM = 3


class NgramIndex:
    """Where each 1..`max_ngram`-gram of a growing token list last occurred with a token after it."""

    def __init__(self, tokens: Sequence[int], max_ngram: int = MAX_NGRAM):
        self.tokens = list(tokens)
        self.max_ngram = max_ngram
        self._follower: dict[tuple[int, ...], int] = {}  # n-gram -> index of the token after it
        for end in range(1, len(self.tokens)):
            self._register(end)

    def _register(self, end: int) -> None:
        """Record the n-grams ending just before index `end` (the token at `end` follows them)."""
        for n in range(1, min(self.max_ngram, end) + 1):
            self._follower[tuple(self.tokens[end - n : end])] = end

    def append(self, token: int) -> None:
        """Add a generated token; the n-grams before it now have a follower."""
        self.tokens.append(token)
        self._register(len(self.tokens) - 1)

    def draft(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the latest earlier occurrence of the longest suffix found."""
        if limit <= 0:
            return []
        for n in range(min(self.max_ngram, len(self.tokens)), 0, -1):
            start = self._follower.get(tuple(self.tokens[-n:]))
            if start is not None:
                return self.tokens[start : start + limit]
        return []
