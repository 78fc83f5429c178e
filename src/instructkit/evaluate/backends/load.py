"""Build a backend by name: the one place evaluation and the instruction synthesizer get their engines."""

from __future__ import annotations

from typing import Any

from ...errors import InstructkitError
from .base import Backend

BACKENDS = ("hf", "vllm", "openai")


def load_backend(
    kind: str,
    model: str,
    *,
    batch_size: int = 16,
    max_model_len: int | None = None,
    dtype: str = "auto",
    served_model: str = "",
    **options: Any,
) -> Backend:
    """`hf` (transformers, CPU or GPU), `vllm` (GPU extra) or `openai` (a server's base URL) for `model`.

    `dtype="auto"` keeps the checkpoint's dtype for hf; `max_model_len` bounds prompt + generation.
    """
    if kind == "hf":
        from .hf import HFBackend

        return HFBackend.from_pretrained(
            model, dtype=dtype, batch_size=batch_size, max_length=max_model_len, **options
        )
    if kind == "vllm":
        from .vllm import VLLMBackend

        extra = {"max_model_len": max_model_len} if max_model_len else {}
        return VLLMBackend(model, dtype=dtype, **extra, **options)
    if kind == "openai":
        from .openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(model, served_model or "default", **options)
    raise InstructkitError(f"unknown backend {kind!r}; backends: {', '.join(BACKENDS)}")
