"""Per-request SQLite cache: every answered request is stored at once, so an interrupted run resumes
where it stopped and a re-run with the same model and requests costs nothing."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .backends.base import Backend
from .requests import GenerationRequest, Loglikelihood, LoglikelihoodRequest, Sample


class RequestCache:
    """A (model fingerprint, request hash) → JSON result table in one SQLite file."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path))
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS results (model TEXT, key TEXT, value TEXT, PRIMARY KEY (model, key))"
        )

    def get_many(self, model: str, keys: Sequence[str]) -> dict[str, Any]:
        """Cached values for the keys that have one."""
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT key, value FROM results WHERE model=? AND key IN ({marks})", [model, *chunk]
            )
            found.update({k: json.loads(v) for k, v in rows})
        return found

    def put_many(self, model: str, items: dict[str, Any]) -> None:
        """Store results and commit (a crash after this line loses nothing)."""
        self.db.executemany(
            "INSERT OR REPLACE INTO results VALUES (?, ?, ?)",
            [(model, k, json.dumps(v)) for k, v in items.items()],
        )
        self.db.commit()

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self.db.close()


class CachedBackend(Backend):
    """Answers from the cache, sends only misses to the wrapped backend, in chunks committed one by one."""

    def __init__(self, backend: Backend, cache: RequestCache, chunk_size: int = 1024):
        self.backend, self.cache, self.chunk_size = backend, cache, chunk_size
        self.model = backend.fingerprint()
        self.hits = self.misses = 0

    def fingerprint(self) -> str:
        return self.model

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return self.backend.render_chat(messages)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        raw = self._through(requests, self.backend.loglikelihood, asdict)
        return [Loglikelihood(**r) for r in raw]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        raw = self._through(requests, self.backend.generate, lambda samples: [asdict(s) for s in samples])
        return [[Sample(**s) for s in r] for r in raw]

    def _through(self, requests: Sequence[Any], compute: Callable, encode: Callable) -> list[Any]:
        keys = [r.key() for r in requests]
        found = self.cache.get_many(self.model, keys)
        seen: set[str] = set()
        missing = [i for i, k in enumerate(keys) if k not in found and not (k in seen or seen.add(k))]
        self.hits += len(requests) - len(missing)
        self.misses += len(missing)
        for start in range(0, len(missing), self.chunk_size):
            chunk = missing[start : start + self.chunk_size]
            answers = compute([requests[i] for i in chunk])
            fresh = {keys[i]: encode(a) for i, a in zip(chunk, answers)}
            self.cache.put_many(self.model, fresh)
            found.update(fresh)
        return [found[k] for k in keys]
