"""vLLM backend (GPU extra): the same interface through vllm.LLM; imported lazily, untested here (no GPU).

Loglikelihood uses `prompt_logprobs` on context+continuation with lm-eval's token split; generation
uses SamplingParams (n samples share the prompt's prefix cache inside vLLM).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import InstructkitError
from ...fingerprint import text_digest
from ..requests import GenerationRequest, Loglikelihood, LoglikelihoodRequest, Sample
from .base import Backend, cut_at_stop, encode_pair
from .model_identity import source_digest, tokenizer_digest


class VLLMBackend(Backend):
    """A vllm.LLM over a local path or hub id; needs `pip install instructkit[gpu]` and a GPU."""

    accepts_token_ids = True

    def __init__(self, model: str, dtype: str = "auto", gpu_memory_utilization: float = 0.9, **kwargs: Any):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise InstructkitError(
                "the vLLM backend needs the 'vllm' package and a GPU: "
                "pip install 'instructkit[gpu]' (or use --backend hf)"
            ) from exc
        self.name, self.dtype = model, dtype
        self._fingerprint: str | None = None
        self.llm = LLM(
            model=model,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            trust_remote_code=False,
            enable_prefix_caching=True,
            **kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def fingerprint(self) -> str:
        """The model folder's files (or the cached hub snapshot's commit), tokenizer, chat template, dtype."""
        if self._fingerprint is None:
            weights = source_digest(self.name)
            if weights is None:
                raise InstructkitError(
                    f"cannot identify the content of {self.name!r} (neither a local folder nor a cached "
                    "hub snapshot), so cached results could be stale: pass a local model folder"
                )
            digest = text_digest(weights, tokenizer_digest(self.tokenizer), self.dtype)
            self._fingerprint = f"vllm:{self.name}:{self.dtype}:{digest[:32]}"
        return self._fingerprint

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        from vllm import SamplingParams, TokensPrompt

        pairs = [encode_pair(self.tokenizer, r.context, r.continuation) for r in requests]
        params = SamplingParams(max_tokens=1, prompt_logprobs=1, temperature=0.0)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=c + k) for c, k in pairs], params)
        results = []
        for (ctx, cont), out in zip(pairs, outputs):
            steps = out.prompt_logprobs[len(ctx) :]
            total = sum(step[tok].logprob for step, tok in zip(steps, cont))
            greedy = all(step[tok].rank == 1 for step, tok in zip(steps, cont))
            results.append(Loglikelihood(float(total), greedy, len(cont)))
        return results

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=r.n,
                temperature=r.temperature,
                max_tokens=r.max_new_tokens,
                stop=list(r.stop) or None,
                seed=r.seed,
                logprobs=0,
            )
            for r in requests
        ]
        from vllm import TokensPrompt

        prompts = [
            TokensPrompt(prompt_token_ids=list(r.prompt_ids)) if r.prompt_ids else r.prompt for r in requests
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [
            [
                Sample(cut_at_stop(c.text, r.stop)[0], float(c.cumulative_logprob or 0.0), len(c.token_ids))
                for c in out.outputs
            ]
            for r, out in zip(requests, outputs)
        ]
