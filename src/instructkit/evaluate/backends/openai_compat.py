"""OpenAI-compatible HTTP endpoint (vLLM server, TGI, hosted APIs) for hosted models and judges.

Loglikelihood uses /v1/completions with `echo=True, max_tokens=0, logprobs=1` and sums the prompt
tokens' log-probs from the character offset where the continuation begins (needs a server that
returns `text_offset`). Generation uses /v1/completions, or /v1/chat/completions when `chat=True`.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ...errors import InstructkitError
from ..requests import GenerationRequest, Loglikelihood, LoglikelihoodRequest, Sample
from .base import Backend, cut_at_stop


class OpenAICompatBackend(Backend):
    """Requests to `base_url` (e.g. http://127.0.0.1:8000/v1) for `model`; key from OPENAI_API_KEY if set."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        chat: bool = False,
        concurrency: int = 4,
        timeout: float = 120.0,
        tokenizer: Any = None,
    ):
        self.base_url, self.model, self.chat = base_url.rstrip("/"), model, chat
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.concurrency, self.timeout, self.tokenizer = concurrency, timeout, tokenizer

    def fingerprint(self) -> str:
        """URL, model name and mode: a remote model cannot be digested by content, so after a server
        swaps the weights behind the same name, evaluate into a new run directory."""
        return f"openai:{self.base_url}:{self.model}:{'chat' if self.chat else 'completions'}"

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        return self._map(self._one_loglikelihood, requests)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        return self._map(self._one_generation, requests)

    def _map(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(fn, items))

    def _one_loglikelihood(self, req: LoglikelihoodRequest) -> Loglikelihood:
        body = {
            "model": self.model,
            "prompt": req.context + req.continuation,
            "max_tokens": 0,
            "echo": True,
            "logprobs": 1,
            "temperature": 0.0,
        }
        lp = self._post("/completions", body)["choices"][0]["logprobs"]
        start = len(req.context)
        picked = [i for i, off in enumerate(lp["text_offset"]) if off >= start]
        if not picked:
            raise InstructkitError(f"{self.base_url}: the echoed tokens do not cover the continuation")
        total = sum(lp["token_logprobs"][i] for i in picked)
        tops = lp.get("top_logprobs") or [None] * len(lp["tokens"])
        greedy = all(tops[i] and max(tops[i], key=tops[i].get) == lp["tokens"][i] for i in picked)
        return Loglikelihood(float(total), bool(greedy), len(picked))

    def _one_generation(self, req: GenerationRequest) -> list[Sample]:
        common = {
            "model": self.model,
            "max_tokens": req.max_new_tokens,
            "temperature": req.temperature,
            "n": req.n,
            "seed": req.seed,
        }
        if req.stop:
            common["stop"] = list(req.stop)[:4]  # the OpenAI API accepts at most 4
        if self.chat:
            reply = self._post(
                "/chat/completions", {**common, "messages": [{"role": "user", "content": req.prompt}]}
            )
            texts = [(c["message"]["content"] or "", None) for c in reply["choices"]]
        else:
            reply = self._post("/completions", {**common, "prompt": req.prompt, "logprobs": 1})
            texts = [(c["text"], (c.get("logprobs") or {}).get("token_logprobs")) for c in reply["choices"]]
        return [
            Sample(cut_at_stop(t, req.stop)[0], float(sum(lps)) if lps else 0.0, len(lps or []))
            for t, lps in texts
        ]

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.base_url + path, json.dumps(body).encode(), headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except OSError as exc:
            raise InstructkitError(f"{self.base_url}{path}: request failed: {exc}") from exc
