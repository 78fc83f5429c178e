"""`eval run --executor ray`: the model's requests split across Ray actors (one model each), merged in order.

`RayBackend` is a `Backend`, so the runner, the scoring code and the per-request SQLite cache are
unchanged: the cache wrapper sends the misses here, each chunk of them is cut into one contiguous
slice per actor, and the answers come back in request order. Keys and fingerprint are the wrapped
backend's, so `cache.sqlite` and `results.json` are those of a single-process run. With
`--deterministic` (each request scored alone) every number is bit-identical; in batched mode the
slices batch differently, which moves log-likelihoods only by float rounding, as a change of batch
size does (docs/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..evaluate.backends.base import Backend
from ..evaluate.requests import GenerationRequest, Loglikelihood, LoglikelihoodRequest, Sample
from . import init_ray, pool_size


class _BackendActor:
    """Holds one backend (one model copy) in a Ray actor and answers request slices."""

    def __init__(self, factory: Callable[[], Backend]):
        self.backend = factory()

    def info(self) -> dict[str, Any]:
        backend = self.backend
        return {
            "fingerprint": backend.fingerprint(),
            "accepts_token_ids": backend.accepts_token_ids,
            "deterministic": getattr(backend, "deterministic", False),
            "warnings": list(backend.warnings),
        }

    def call(self, method: str, requests: list[Any]) -> list[Any]:
        return getattr(self.backend, method)(requests)

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return self.backend.render_chat(messages)


class RayBackend(Backend):
    """A pool of actors, each running `factory()`; requests are split across them in contiguous slices."""

    def __init__(self, factory: Callable[[], Backend], actors: int, ray: Any, num_gpus: float = 0.0):
        remote = ray.remote(num_cpus=0 if num_gpus else 1, num_gpus=num_gpus)(_BackendActor)
        self.ray = ray
        self.actors = [remote.remote(factory) for _ in range(max(1, actors))]
        info = ray.get([a.info.remote() for a in self.actors])
        self._fingerprint = info[0]["fingerprint"]
        self.accepts_token_ids = info[0]["accepts_token_ids"]
        self.deterministic = info[0]["deterministic"]
        self.warnings = info[0]["warnings"]

    def fingerprint(self) -> str:
        return self._fingerprint

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return self.ray.get(self.actors[0].render_chat.remote(messages))

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        return self._split("loglikelihood", requests)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        return self._split("generate", requests)

    def _split(self, method: str, requests: Sequence[Any]) -> list[Any]:
        """One contiguous slice per actor (the first ones one longer), answers concatenated in order."""
        n, k = len(requests), min(len(self.actors), len(requests))
        if n == 0:
            return []
        bounds = [(i * n // k, (i + 1) * n // k) for i in range(k)]
        refs = [a.call.remote(method, list(requests[s:e])) for a, (s, e) in zip(self.actors, bounds)]
        return [answer for part in self.ray.get(refs) for answer in part]

    def close(self) -> None:
        """Stop the actors (their models leave memory)."""
        for actor in self.actors:
            self.ray.kill(actor)


def ray_backend(
    factory: Callable[[], Backend],
    address: str | None = None,
    actors: int | None = None,
    gpu: bool = False,
    num_cpus: int | None = None,
) -> RayBackend:
    """Start (or join) Ray and a pool of `actors` backends: one per GPU or CPU of the cluster by default."""
    ray = init_ray(address, num_cpus)
    gpus = 1.0 if gpu or ray.cluster_resources().get("GPU") else 0.0
    return RayBackend(factory, pool_size(ray, actors, gpus), ray, gpus)
