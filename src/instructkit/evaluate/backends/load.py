"""Build a backend by name: the one place evaluation, `eval` commands and the instruction synthesizer
get their engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import InstructkitError
from .base import Backend

BACKENDS = ("hf", "vllm", "openai")


def load_backend(
    kind: str,
    model: Any,
    *,
    tokenizer: Any = None,
    batch_size: int = 16,
    max_model_len: int | None = None,
    dtype: str = "auto",
    served_model: str = "",
    deterministic: bool = False,
    max_batch_tokens: int | None = None,
    allow_base_mismatch: bool = False,
    **options: Any,
) -> Backend:
    """`hf` (transformers, CPU or GPU), `vllm` (GPU extra) or `openai` (a server's base URL) for `model`.

    `model` is a path, hub id, `pretrained:` name or GGUF file; for hf also an in-memory transformers
    model with its `tokenizer`. `dtype="auto"` keeps the checkpoint's dtype for hf; `max_model_len`
    bounds prompt + generation. `deterministic`, `max_batch_tokens` and `allow_base_mismatch` (a LoRA
    adapter on a base other than its own, see `models.adapters`) exist for hf only: asked of another
    backend they are refused, not ignored.
    """
    hf_only = {
        "--deterministic": deterministic,
        "--max-batch-tokens": max_batch_tokens is not None,
        "--allow-base-mismatch": allow_base_mismatch,
    }
    asked = [flag for flag, given in hf_only.items() if given]
    if kind != "hf" and asked:
        raise InstructkitError(f"{asked[0]} is supported by --backend hf only, not {kind!r}")
    if kind == "hf":
        backend_class = _hf_backend_class(model)
        hf = {"batch_size": batch_size, "max_length": max_model_len, "deterministic": deterministic}
        hf |= {"max_batch_tokens": max_batch_tokens, **options}
        if not isinstance(model, (str, Path)):  # already loaded (e.g. by a pipeline stage)
            return backend_class(model, tokenizer, **hf)
        return backend_class.from_pretrained(
            str(model), dtype=dtype, allow_base_mismatch=allow_base_mismatch, **hf
        )
    if kind == "vllm":
        from .vllm import VLLMBackend

        extra = {"max_model_len": max_model_len} if max_model_len else {}
        return VLLMBackend(model, dtype=dtype, **extra, **options)
    if kind == "openai":
        from .openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(model, served_model or "default", **options)
    raise InstructkitError(f"unknown backend {kind!r}; backends: {', '.join(BACKENDS)}")


def _hf_backend_class(model: Any) -> type[Backend]:
    """`Seq2SeqBackend` for an encoder-decoder model (loaded, or a reference whose config says so, see
    `models.loading.model_kind`), `HFBackend` for every other one."""
    from ...models.loading import model_kind, model_kind_of

    if isinstance(model, (str, Path)):
        kind = model_kind_of(str(model))
    else:
        kind = model_kind(getattr(model, "config", None))
    if kind == "seq2seq":
        from .seq2seq import Seq2SeqBackend

        return Seq2SeqBackend
    from .hf import HFBackend

    return HFBackend
