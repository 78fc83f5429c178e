"""Section `varlen`: packed attention alone, one layer forward + backward on a long packed row.

torch's varlen_attn (`instructkit_varlen`, CUDA, bf16) against sdpa with a dense block-causal mask (what
transformers builds from packed position_ids) and against `instructkit_docs` (per-document sdpa): time,
peak memory, and parity of the output and input gradients with an fp32 dense-mask reference. Also: the
training choice (varlen on CUDA without flash-attn, kept by the isolation pre-flight) and its refusal on CPU.
"""

from __future__ import annotations

import math
import random

from ..config import TOLERANCES
from ..context import Ctx, check
from ..helpers import llama, timed_step

DENSE = "sdpa dense mask"


def section_varlen(ctx: Ctx) -> None:
    ctx.case("training choice and pre-flight", varlen_choice, ctx)
    for name, row in ctx.sizes.attention_rows.items():
        ctx.case(name, attention_case, ctx, row)


def varlen_choice(ctx: Ctx) -> dict:
    """CPU: asking for varlen is refused in one line. CUDA: packed training picks it (unless flash-attn is
    installed) and the isolation pre-flight on a real model keeps it."""
    import inspect

    import torch

    from instructkit.errors import InstructkitError
    from instructkit.models.loading import default_attn_implementation
    from instructkit.train.attention import (
        DOCS,
        VARLEN,
        check_trainable_attention,
        training_attention,
        varlen_function,
        varlen_unavailable,
    )
    from instructkit.train.collators import packed_attention_preflight

    fn = varlen_function()
    metrics = {
        "torch_version": torch.__version__,
        "varlen_signature": sorted(inspect.signature(fn).parameters) if fn else None,
        "unavailable": varlen_unavailable(),
    }
    if not ctx.cuda:
        try:
            check_trainable_attention(VARLEN)
            message = ""
        except InstructkitError as exc:
            message = str(exc)
        metrics["refusal"] = message
        checks = [
            check(
                "explicit varlen refused on CPU, saying it needs CUDA", "needs CUDA" in message, True, "=="
            ),
            check("refusal is one line", message.count("\n"), 0, "=="),
        ]
        return {"metrics": metrics, "checks": checks}
    default = default_attn_implementation()
    expected = default if default != "sdpa" else (VARLEN if varlen_unavailable() is None else DOCS)
    chosen = training_attention(None, packed=True)
    model = llama(ctx.sizes.pack_model, chosen, ctx.device, seed=3)
    kept = packed_attention_preflight(model, None)
    metrics |= {"chosen": chosen, "after_preflight": kept}
    checks = [
        check("packed training attention on CUDA", chosen, expected, "=="),
        check("kept by the isolation pre-flight", kept, chosen, "=="),
    ]
    return {"metrics": metrics, "checks": checks}


def document_lengths(total: int, lo: int, hi: int, seed: int = 0) -> list[int]:
    """Log-uniform document lengths in [lo, hi] filling exactly `total` tokens."""
    rng, lengths = random.Random(seed), []
    while sum(lengths) < total:
        lengths.append(int(round(math.exp(rng.uniform(math.log(lo), math.log(hi))))))
    lengths[-1] -= sum(lengths) - total
    return [n for n in lengths if n > 0]


class _Layer:
    """What transformers' attention functions read from the attention module."""

    def __init__(self, groups: int):
        self.num_key_value_groups = groups
        self.is_causal = True
        self.training = True


def attention_case(ctx: Ctx, row: tuple[int, int, int]) -> dict:
    """Each implementation on the same packed [1, H, L, D] query/key/value: ms per forward + backward, peak
    memory, and max |Δ| / max |reference| of output and gradients against the fp32 dense-mask result."""
    import torch

    from instructkit.train import attention as A

    heads, kv_heads, dim = ctx.sizes.attention_heads
    total, lo, hi = row
    lengths = document_lengths(total, lo, hi)
    dtype = torch.bfloat16 if ctx.cuda else torch.float32
    gen = torch.Generator().manual_seed(0)
    leaves = [torch.randn(1, h, total, dim, generator=gen) for h in (heads, kv_heads, kv_heads)]
    grad_out = torch.randn(1, total, heads, dim, generator=gen).to(ctx.device, dtype)
    pos = torch.cat([torch.arange(n) for n in lengths])[None].to(ctx.device)
    doc = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths)).to(ctx.device)
    mask = (doc[:, None] == doc[None, :]).tril()
    layer = _Layer(heads // kv_heads)

    def dense(q, k, v):  # transformers' sdpa with the packed mask it builds from position_ids
        return A.sdpa_attention_forward(layer, q, k, v, mask[None, None])[0]

    impls = {
        DENSE: dense,
        A.DOCS: lambda q, k, v: A.per_document_attention_forward(layer, q, k, v, None, position_ids=pos)[0],
        A.VARLEN: lambda q, k, v: A.varlen_attention_forward(layer, q, k, v, None, position_ids=pos)[0],
    }
    reference = _results(*_step(dense, _inputs(leaves, ctx.device, torch.float32), grad_out.float()))
    tol = TOLERANCES["varlen"]["bf16" if ctx.cuda else "fp32"]
    metrics: dict = {"documents": len(lengths), "tokens": total, "dtype": str(dtype).removeprefix("torch.")}
    checks = []
    for name, fn in impls.items():
        if name == A.VARLEN and (why := A.varlen_unavailable()):
            metrics[f"ms_{name}"] = f"skipped: {why.split(':')[0]}"
            continue
        inputs = _inputs(leaves, ctx.device, dtype)
        ms, peak = timed_step(lambda fn=fn, inputs=inputs: _step(fn, inputs, grad_out), ctx)
        got = _results(*_step(fn, inputs, grad_out))
        metrics[f"ms_{name}"], metrics[f"peak_GB_{name}"] = ms, peak
        worst = max(_rel(a, b) for a, b in zip(got, reference, strict=True))
        checks.append(check(f"{name}: output and gradients vs fp32 dense mask", worst, tol))
    if isinstance(metrics.get(f"ms_{A.VARLEN}"), float):
        metrics["varlen_speedup_vs_dense"] = metrics[f"ms_{DENSE}"] / metrics[f"ms_{A.VARLEN}"]
        metrics["varlen_speedup_vs_docs"] = metrics[f"ms_{A.DOCS}"] / metrics[f"ms_{A.VARLEN}"]
    metrics["docs_speedup_vs_dense"] = metrics[f"ms_{DENSE}"] / metrics[f"ms_{A.DOCS}"]
    return {"metrics": metrics, "checks": checks}


def _inputs(leaves, device: str, dtype):
    """Query, key and value on the device in `dtype`, as leaves that collect gradients."""
    return [t.to(device, dtype).requires_grad_() for t in leaves]


def _step(fn, inputs, grad_out):
    """One forward + backward of an implementation; returns the output and the inputs (gradients set)."""
    for t in inputs:
        t.grad = None
    out = fn(*inputs)
    out.backward(grad_out)
    return out, inputs


def _results(out, inputs) -> list:
    """(output, dq, dk, dv) as fp32 CPU tensors."""
    return [t.detach().float().cpu() for t in (out, *(x.grad for x in inputs))]


def _rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
