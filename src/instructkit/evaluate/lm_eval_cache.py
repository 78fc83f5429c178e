"""The request cache (cache.sqlite) for lm-eval's requests, as for instructkit's own: each answered
request of the three kinds is stored at once under the model's fingerprint and the LM settings that
change an answer, so an interrupted `eval run --lm-eval-tasks` resumes where it stopped and a re-run
with the same model costs nothing. (lm-eval's own `CachingLM` pickles its values and keys requests
without the model; this one stores JSON and never serves another model's answer.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..fingerprint import sha256_hex
from .cache import RequestCache

KINDS = ("loglikelihood", "loglikelihood_rolling", "generate_until")


class CachedRequests:
    """Mixin for instructkit's lm-eval `LM`: the three request methods answer from the cache first."""

    request_cache: RequestCache | None = None
    cache_hits = 0
    cache_misses = 0

    def use_cache(self, cache: RequestCache | None) -> None:
        """Answer from (and store into) `cache`; None turns caching off."""
        self.request_cache = cache

    def cache_model(self) -> str:
        """The cache's model key: the backend's weights and tokenizer, and every LM setting that
        changes an answer (truncation length, default generation length, BOS handling, model kind)."""
        settings = {
            "max_length": self.max_length,
            "max_gen_toks": self.max_gen_toks,
            "add_bos_token": self.add_bos_token,
            "prefix_token_id": self.prefix_token_id,
            "kind": self.backend,
        }
        return f"lm_eval:{self.engine.fingerprint()}:{sha256_hex(json.dumps(settings, sort_keys=True))}"

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        compute = super().loglikelihood  # type: ignore[misc]
        answers = self._cached("loglikelihood", requests, lambda rs: compute(rs, disable_tqdm=disable_tqdm))
        return [(float(logprob), bool(greedy)) for logprob, greedy in answers]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        compute = super().loglikelihood_rolling  # type: ignore[misc]
        answers = self._cached("loglikelihood_rolling", requests, lambda rs: compute(rs, disable_tqdm))
        return [float(a) for a in answers]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        compute = super().generate_until  # type: ignore[misc]
        return self._cached("generate_until", requests, lambda rs: compute(rs, disable_tqdm))

    def _cached(self, kind: str, requests: list[Any], compute: Callable[[list[Any]], list[Any]]) -> list[Any]:
        """Answers for `requests`: cached ones read, the rest computed in one call and stored at once.
        Sampled generations (`do_sample`) are never cached: a repeat must draw again."""
        if self.request_cache is None or not requests:
            return compute(requests)
        model = self.cache_model()
        keys = [None if _sampled(kind, r.args) else request_key(kind, r.args) for r in requests]
        found = self.request_cache.get_many(model, [k for k in keys if k is not None])
        missing = [i for i, k in enumerate(keys) if k is None or k not in found]
        self.cache_hits += len(requests) - len(missing)
        self.cache_misses += len(missing)
        fresh = compute([requests[i] for i in missing]) if missing else []
        answers = {i: found[k] for i, k in enumerate(keys) if k is not None and k in found}
        answers |= dict(zip(missing, fresh))
        stored = {keys[i]: _jsonable(a) for i, a in zip(missing, fresh) if keys[i] is not None}
        if stored:
            self.request_cache.put_many(model, stored)
        return [answers[i] for i in range(len(requests))]


def request_key(kind: str, args: tuple[Any, ...]) -> str:
    """A request's cache key: its kind and lm-eval's arguments (texts, generation settings)."""
    return sha256_hex(json.dumps([kind, list(args)], sort_keys=True, default=str))


def _sampled(kind: str, args: tuple[Any, ...]) -> bool:
    return kind == "generate_until" and bool(len(args) > 1 and dict(args[1] or {}).get("do_sample"))


def _jsonable(answer: Any) -> Any:
    return list(answer) if isinstance(answer, tuple) else answer
