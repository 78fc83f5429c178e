"""The backend interface: loglikelihoods and generations for lists of requests, plus chat rendering."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from ..requests import GenerationRequest, Loglikelihood, LoglikelihoodRequest, Sample


class Backend(ABC):
    """A model behind one interface, so scoring code never knows which engine runs it."""

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
            from ...errors import InstructkitError

            raise InstructkitError(f"{type(self).__name__} has no chat template; use --prompt-style base")
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop sequence; also say whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
