"""Generation backends for the synthesizer: batched Hugging Face `generate` (KV cache) and vLLM (GPU).

Both take prompts as token ids, so the BOS written in the prompt text is never doubled by a
backend that would tokenize again, and both decode greedily (the released synthesizer's setting).
"""

from __future__ import annotations

from typing import Protocol

from ..errors import InstructkitError

BACKENDS = ("hf", "vllm")


class Backend(Protocol):
    def generate(self, prompts: list[list[int]], max_new_tokens: int, stop: str | None = None) -> list[str]:
        """Greedy continuations of token-id prompts, decoded; text from `stop` on is cut off."""
        ...


def _cut(text: str, stop: str | None) -> str:
    return text.split(stop, 1)[0] if stop else text


class HFBackend:
    """Left-padded batches through `model.generate` with the KV cache on, longest prompts first."""

    def __init__(self, model, tokenizer, batch_size: int = 16):
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @classmethod
    def load(cls, path: str, batch_size: int = 16, device: str | None = None) -> HFBackend:
        """Load a saved model and tokenizer; GPU in bf16 when present, else CPU in fp32."""
        import torch

        from ..hub import load_causal_lm, load_tokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        model = load_causal_lm(path, dtype=dtype).to(device)
        return cls(model, load_tokenizer(path), batch_size)

    def generate(self, prompts: list[list[int]], max_new_tokens: int, stop: str | None = None) -> list[str]:
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        texts: list[str] = [""] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, text in zip(
                batch, self._generate_batch([prompts[i] for i in batch], max_new_tokens, stop)
            ):
                texts[i] = _cut(text, stop)
        return texts

    def _generate_batch(self, prompts: list[list[int]], max_new_tokens: int, stop: str | None) -> list[str]:
        import torch

        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.model.device)
        mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.model.device
        )
        extra = {"stop_strings": [stop], "tokenizer": self.tokenizer} if stop else {}
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=self.pad_id,
                eos_token_id=self.tokenizer.eos_token_id,
                **extra,
            )
        return self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)


class VLLMBackend:
    """vLLM offline inference (imported only when chosen; needs a GPU and `pip install vllm`)."""

    def __init__(self, path: str, max_model_len: int, gpu_memory_utilization: float = 0.9, seed: int = 0):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise InstructkitError(
                "the vllm backend needs the `vllm` package and a GPU (pip install vllm)"
            ) from exc
        self.llm = LLM(
            model=path,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            trust_remote_code=False,
        )

    def generate(self, prompts: list[list[int]], max_new_tokens: int, stop: str | None = None) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(
            temperature=0.0,
            max_tokens=max_new_tokens,
            stop=[stop] if stop else None,
            skip_special_tokens=True,
        )
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return [_cut(o.outputs[0].text, stop) for o in outputs]


def load_backend(name: str, path: str, batch_size: int = 16, max_model_len: int = 4096) -> Backend:
    """The backend `name` ("hf" or "vllm") for the model saved at `path` (or a hub id)."""
    if name == "hf":
        return HFBackend.load(path, batch_size)
    if name == "vllm":
        return VLLMBackend(path, max_model_len)
    raise InstructkitError(f"unknown backend {name!r} (accepted: {', '.join(BACKENDS)})")
