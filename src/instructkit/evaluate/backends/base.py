"""The backend interface: loglikelihoods and generations for lists of requests, plus chat rendering.

One stack serves evaluation and the instruction synthesizer: `encode_pair` is the single tokenisation of
(context, continuation) every local backend uses, and `greedy_texts` is the synthesizer's entry point.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from ...errors import InstructkitError
from ..requests import GenerationRequest, Loglikelihood, LoglikelihoodRequest, Sample


class Backend(ABC):
    """A model behind one interface, so scoring code never knows which engine runs it."""

    # Whether `GenerationRequest.prompt_ids` (token-id prompts) are honoured.
    accepts_token_ids: bool = False
    # What loading the model found that its results must carry (results.json `warnings`, the reports),
    # e.g. a LoRA adapter allowed onto a base other than the one it was trained on.
    warnings: Sequence[str] = ()

    @abstractmethod
    def fingerprint(self) -> str:
        """A string that identifies the model weights and settings; part of every cache key."""

    @abstractmethod
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """One result per request, in order."""

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        """`request.n` samples per request, in order."""

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The prompt text for a chat, ending where the assistant's reply begins."""
        tokenizer = getattr(self, "tokenizer", None)
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise InstructkitError(f"{type(self).__name__} has no chat template; use --prompt-style base")
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids; special tokens as the tokenizer adds them, unless the text already starts with BOS."""
    bos = tokenizer.bos_token
    return tokenizer.encode(text, add_special_tokens=not (bos and text.startswith(bos)))


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-evaluation-harness's split: trailing context spaces move to the continuation, and the
    continuation's ids are tokenize(context + continuation) beyond tokenize(context)."""
    if not context:
        cont = tokenizer.encode(continuation, add_special_tokens=False)
        prefix = next(t for t in (tokenizer.bos_token_id, tokenizer.eos_token_id, 0) if t is not None)
        return ([prefix], cont) if prefix != cont[0] else (cont[:1], cont[1:])
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole, ctx = encode_text(tokenizer, context + continuation), encode_text(tokenizer, context)
    return ctx, whole[len(ctx) :]


def greedy_texts(
    backend: Backend, prompts: Sequence[Sequence[int]], max_new_tokens: int, stop: str | None = None
) -> list[str]:
    """Greedy continuations of token-id prompts, cut at `stop` (the synthesizer's call)."""
    if not backend.accepts_token_ids:
        raise InstructkitError(f"{type(backend).__name__} cannot take token-id prompts; use hf or vllm")
    requests = [
        GenerationRequest("", (stop,) if stop else (), max_new_tokens, prompt_ids=tuple(p)) for p in prompts
    ]
    return [samples[0].text for samples in backend.generate(requests)]


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop sequence; also say whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
