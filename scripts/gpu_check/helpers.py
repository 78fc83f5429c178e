"""Synthetic rows, random-init models from tiny presets, autocast and comparison helpers shared by sections."""

from __future__ import annotations

import contextlib
import math
import random

from .config import ModelSpec
from .context import Ctx


def synthetic_rows(n: int, lo: int, hi: int, vocab: int, seed: int) -> list[dict]:
    """Token rows with log-uniform lengths; the first ~40% of each is prompt (label -100), the rest answer."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        length = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
        ids = [rng.randrange(5, vocab) for _ in range(length)]
        prompt = max(1, int(0.4 * length))
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


def arrow_rows(rows: list[dict]):
    """The rows as an Arrow table with int32 list columns (the layout `data prepare` writes)."""
    import pyarrow as pa

    return pa.table(
        {
            "input_ids": pa.array([r["input_ids"] for r in rows], pa.list_(pa.int32())),
            "labels": pa.array([r["labels"] for r in rows], pa.list_(pa.int32())),
        }
    )


def model_config(spec: ModelSpec, **fields):
    """The LlamaConfig of a (tiny preset, overrides) spec as the check builds it; `fields` override both."""
    from instructkit.models.tiny import tiny_llama_config

    preset, overrides = spec
    base = dict(
        max_position_embeddings=16384, use_cache=False, bos_token_id=1, eos_token_id=2, pad_token_id=0
    )
    return tiny_llama_config(preset, **(base | overrides | fields))


def llama(spec: ModelSpec, attn: str, device: str, seed: int = 0):
    """A randomly initialised Llama-shaped causal LM built from a preset spec on `device` (fp32 weights)."""
    import torch
    from transformers import LlamaForCausalLM

    config = model_config(spec, attn_implementation=attn)
    torch.manual_seed(seed)
    with torch.device(device):
        return LlamaForCausalLM(config)


def autocast(device: str, dtype: str):
    """bf16 autocast over fp32 weights (what TrainingArguments(bf16=True) does), or nothing for fp32."""
    import torch

    if dtype == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: dict, device: str) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def grad_rel_error(a: dict, b: dict) -> float:
    """Max over parameter tensors of ‖a − b‖ / ‖b‖ (tensors whose reference gradient is zero skipped)."""
    worst = 0.0
    for name, ref in b.items():
        norm = float(ref.float().norm())
        if norm > 0:
            worst = max(worst, float((a[name].float() - ref.float()).norm()) / norm)
    return worst


def attention_implementations(ctx: Ctx) -> dict[str, str | None]:
    """Each attention implementation the check covers → None when usable here, else why not."""
    import torch
    from transformers.utils import import_utils as iu

    from instructkit.train.attention import DOCS, VARLEN, varlen_unavailable

    found: dict[str, str | None] = {"sdpa": None, DOCS: None}
    why = varlen_unavailable()
    found[VARLEN] = f"skipped: {why}" if why else None
    if not iu.is_torch_flex_attn_available():
        found["flex_attention"] = f"skipped: torch {torch.__version__} has no usable flex_attention"
    elif not ctx.cuda:
        found["flex_attention"] = "skipped: no CUDA (flex_attention compiles kernels; CPU mode keeps to sdpa)"
    else:
        found["flex_attention"] = None
    for impl, probe in (
        ("flash_attention_2", "is_flash_attn_2_available"),
        ("flash_attention_3", "is_flash_attn_3_available"),
    ):
        available = getattr(iu, probe, lambda: False)()
        found[impl] = None if available and ctx.cuda else f"skipped: {impl} not installed or no CUDA"
    return found


def timed_step(step, ctx: Ctx) -> tuple[float, float | str]:
    """Median milliseconds of `step` over the mode's repeats (after one warm-up), and its peak memory (GB)."""
    import statistics
    import time

    import torch

    step()
    if ctx.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(ctx.sizes.timing_repeats):
        start = time.perf_counter()
        step()
        if ctx.cuda:
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - start))
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if ctx.cuda else "skipped: no CUDA"
    return statistics.median(times), peak
