"""The two request kinds every backend answers (loglikelihood, generation) and their results.

Requests are plain frozen data so they can be hashed into the per-request cache and sent to any backend.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ..fingerprint import sha256_hex


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score `continuation` after `context` (lm-eval's convention: trailing context spaces move over)."""

    context: str
    continuation: str

    def key(self) -> str:
        """Stable hash of the request, used as the cache key."""
        return _digest("ll", asdict(self))


@dataclass(frozen=True)
class GenerationRequest:
    """Generate after `prompt`: greedy when temperature is 0, else `n` samples sharing the prompt prefix.

    `prompt_ids`, when given, are the prompt's token ids and are used instead of tokenizing `prompt`
    (the synthesizer builds token-budgeted prompts whose BOS must not be added twice).
    """

    prompt: str
    stop: tuple[str, ...] = ()
    max_new_tokens: int = 256
    temperature: float = 0.0
    n: int = 1
    seed: int = 0
    prompt_ids: tuple[int, ...] = ()

    def key(self) -> str:
        """Stable hash of the request, used as the cache key (text-only requests keep their old keys)."""
        payload = asdict(self)
        if not self.prompt_ids:
            del payload["prompt_ids"]
        return _digest("gen", payload)


@dataclass(frozen=True)
class Loglikelihood:
    """Sum of continuation token log-probs, whether every token was the argmax, and the token count."""

    logprob: float
    is_greedy: bool
    num_tokens: int


@dataclass(frozen=True)
class Sample:
    """One generated text (cut at the first stop sequence) and its unscaled log-probability."""

    text: str
    logprob: float
    num_tokens: int


def _digest(kind: str, payload: dict) -> str:
    text = json.dumps([kind, payload], sort_keys=True, ensure_ascii=False)
    return sha256_hex(text)
