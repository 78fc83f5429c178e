"""Per-document attention for packed rows, registered with transformers as `instructkit_docs`.

A packed row holds several examples whose `position_ids` restart at 0. transformers' sdpa/eager
paths isolate them with a dense L×L block-diagonal mask, so a row costs L² attention whatever its
documents. `instructkit_docs` never builds that mask: its mask hook returns None for packed rows,
and the attention reads document boundaries from `position_ids` (or the flash-attention
`cu_seq_lens_q` kwarg) and runs causal sdpa per document (on a GPU, one batched call per length
bucket): Σ len_i² work. Anything else (padding masks, KV-cache decoding) goes to transformers' sdpa.

`instructkit_varlen` (CUDA only) runs the same packed rows through torch's variable-length attention
(`torch.nn.attention.varlen.varlen_attn`, torch ≥ 2.10: flash-attention kernels fed `cu_seqlens`, one
call per layer whatever the documents); where it cannot run a call (fp32, dropout, an option this
torch's signature lacks) that call takes the per-document path above, which is exact too.

`training_attention` picks the implementation a training run uses and refuses, before training,
one that cannot train here (flex_attention has no backward on CPU; varlen needs CUDA);
`collators.packed_attention_preflight` keeps the automatic varlen choice only if the isolation check passes.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

from ..errors import InstructkitError

DOCS = "instructkit_docs"
VARLEN = "instructkit_varlen"
# On a GPU, documents whose lengths round up to the same bucket share one batched sdpa call,
# right-padded to the bucket length: under a causal mask a real query never sees the padding after
# it, so this is exact. A bucket is at most ~1/BUCKET_SLACK longer than its documents (a multiple of
# BUCKET_MIN); a document alone in its bucket runs unpadded. On CPU each document gets its own call
# on a view of the row: measured (benchmarks/bench_attention.py), the copies that batching needs
# cost more there than the per-call overhead they save.
BUCKET_SLACK = 8
BUCKET_MIN = 16
GROUPING: str | None = None  # None: by device (see above); "none", "exact" or "padded" forces one
# What one extra sdpa call costs, in units of attention over that many (query, key) pairs. Measured on
# CPU (tiny:small, 512-token packs of ~45-token documents): below this a single call with a
# block-diagonal mask is faster than one call per document; above it, per-document wins.
DOC_CALL_COST = 256 * 256


@dataclass(frozen=True)
class DocumentPlan:
    """A flattened row's documents as (start, length) spans, and the spans grouped by bucket length."""

    spans: tuple[tuple[int, int], ...]
    buckets: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]  # (bucket length, its spans)


def bucket_length(n: int) -> int:
    """The padded length a document of `n` tokens runs at: n rounded up by at most ~1/BUCKET_SLACK."""
    step = max(BUCKET_MIN, 1 << max(0, (n // BUCKET_SLACK).bit_length() - 1))
    return -(-n // step) * step


def document_starts(position_ids: torch.Tensor) -> torch.Tensor:
    """Flattened start offsets of the documents in a [B, L] `position_ids`: each row start and every
    position that does not continue the previous one (the rule transformers' packed masks use)."""
    first = position_ids[:, :1] - 1
    starts = torch.diff(position_ids, prepend=first, dim=-1) != 1
    starts[:, 0] = True
    return starts.reshape(-1).nonzero().view(-1)


def plan_documents(starts: list[int], total: int, grouping: str = "padded") -> DocumentPlan:
    """Split a row of `total` tokens at `starts` and group the documents: by bucket length
    ("padded"), by exact length ("exact": bidirectional attention would see padding) or not at all."""
    spans = tuple((s, e - s) for s, e in zip(starts, [*starts[1:], total], strict=True) if e > s)
    by_bucket: dict[int, list[tuple[int, int]]] = {}
    for s, n in spans:
        by_bucket.setdefault(bucket_length(n) if grouping == "padded" else n, []).append((s, n))
    if grouping == "none":
        return DocumentPlan(spans, tuple((n, ((s, n),)) for s, n in spans))
    return DocumentPlan(spans, tuple((m, tuple(docs)) for m, docs in sorted(by_bucket.items())))


_last_plan: tuple[Any, int, str, DocumentPlan] | None = None  # (weakref to key, version, grouping, plan)


def _plan_for(
    position_ids: torch.Tensor | None,
    cu_seq_lens: torch.Tensor | None,
    batch: int,
    length: int,
    grouping: str,
) -> DocumentPlan:
    """The plan for this forward pass, computed once and reused by every layer (same position_ids)."""
    global _last_plan
    key = cu_seq_lens if cu_seq_lens is not None else position_ids
    cached = _last_plan
    if cached is not None and cached[0]() is key and cached[1] == key._version and cached[2] == grouping:
        return cached[3]
    if cu_seq_lens is not None:
        starts = cu_seq_lens[:-1].tolist()
    else:
        starts = document_starts(position_ids.expand(batch, -1)).tolist()
    plan = plan_documents(starts, batch * length, grouping)
    _last_plan = (weakref.ref(key), key._version, grouping, plan)
    return plan


def _gather(t: torch.Tensor, docs: tuple[tuple[int, int], ...], m: int) -> torch.Tensor:
    """[docs, H, m, D] from a flattened [H, T, D]: a view for a lone document (run at its own
    length), else the documents right-padded with zeros to m and stacked."""
    if len(docs) == 1:
        s, n = docs[0]
        return t[None, :, s : s + n]
    zeros = t.new_zeros(t.shape[0], m, t.shape[2])
    return torch.stack([torch.cat([t[:, s : s + n], zeros[:, n:]], dim=1) for s, n in docs])


def _bucket_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout: float,
    scaling: float | None,
    causal: bool,
    window: int | None,
) -> torch.Tensor:
    """sdpa over [docs, H, m, D] documents: causal (optionally sliding-window) or bidirectional."""
    m = q.shape[-2]
    if window is not None and causal and m > window:
        i = torch.arange(m, device=q.device)
        band = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=band, dropout_p=dropout, scale=scaling)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling, is_causal=causal)


def dense_is_cheaper(plan: DocumentPlan, length: int) -> bool:
    """One masked call over the whole row costs less than a call per document (short rows, many documents)."""
    per_document = sum(n * n for _, n in plan.spans) + DOC_CALL_COST * len(plan.spans)
    return length * length <= per_document


def _block_causal_mask(plan: DocumentPlan, length: int, device: torch.device, causal: bool) -> torch.Tensor:
    """[L, L] boolean mask: each token sees its own document only (and, if causal, no later token)."""
    doc = torch.empty(length, dtype=torch.long, device=device)
    for index, (start, n) in enumerate(plan.spans):
        doc[start : start + n] = index
    mask = doc[:, None] == doc[None, :]
    return mask.tril() if causal else mask


def per_document_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """An `AttentionInterface` function: per-document sdpa when no mask was built, else plain sdpa.

    Returns [B, L, H, D] like transformers' sdpa. Softcapping and position biases are refused.
    """
    position_ids, cu_seq_lens = kwargs.get("position_ids"), kwargs.get("cu_seq_lens_q")
    q_len, kv_len = query.shape[2], key.shape[2]
    if attention_mask is not None or q_len != kv_len or (position_ids is None and cu_seq_lens is None):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    if kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None:
        raise InstructkitError(
            f"attention {DOCS!r} supports neither softcapping nor position biases; use eager"
        )
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    batch, heads, length, _ = query.shape
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    grouping = GROUPING or ("none" if query.device.type == "cpu" else "padded")
    grouping = "exact" if grouping == "padded" and not causal else grouping
    plan = _plan_for(position_ids, cu_seq_lens, batch, length, grouping)
    window = kwargs.get("sliding_window")
    if batch == 1 and window is None and dense_is_cheaper(plan, length):
        mask = _block_causal_mask(plan, length, query.device, causal)
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling
        )
        return out.transpose(1, 2).contiguous(), None
    flat = [t.transpose(0, 1).reshape(heads, batch * length, -1) for t in (query, key, value)]
    pieces: dict[int, torch.Tensor] = {}
    for m, docs in plan.buckets:
        q, k, v = (_gather(t, docs, m) for t in flat)
        out = _bucket_attention(q, k, v, dropout, scaling, causal, window)
        for i, (s, n) in enumerate(docs):
            pieces[s] = out[i, :, :n]
    out = torch.cat([pieces[s] for s, _ in plan.spans], dim=1)  # [H, B*L, D] in row order
    return out.reshape(heads, batch, length, -1).permute(1, 2, 0, 3).contiguous(), None


def per_document_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: Any = 0,
    kv_offset: int = 0,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor | None:
    """An `AttentionMaskInterface` function: no mask for a full, unpadded forward (documents come from
    position_ids inside the attention), so the dense L×L packed mask is never built; else sdpa's mask."""
    fresh = isinstance(q_offset, int) and q_offset == 0 and kv_offset == 0 and q_length == kv_length
    if attention_mask is None and fresh:
        return None
    return sdpa_mask(
        batch_size=batch_size,
        q_length=q_length,
        kv_length=kv_length,
        q_offset=q_offset,
        kv_offset=kv_offset,
        attention_mask=attention_mask,
        **kwargs,
    )


def varlen_function() -> Callable[..., torch.Tensor] | None:
    """torch's `varlen_attn` (torch ≥ 2.10), or None where this torch has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def varlen_unavailable() -> str | None:
    """Why `instructkit_varlen` cannot run here, in one line (None: it can)."""
    torch_version = torch.__version__.split("+")[0]
    if varlen_function() is None:
        return f"torch {torch_version} has no torch.nn.attention.varlen (it needs torch >= 2.10)"
    if not torch.cuda.is_available():
        return (
            f"needs CUDA: torch {torch_version}'s varlen_attn runs flash-attention kernels, which raise "
            f"NotImplementedError on CPU; use {DOCS} (per-document attention, the CPU default for packed rows)"
        )
    return None


@functools.lru_cache(maxsize=8)
def _parameters(fn: Callable) -> frozenset[str]:
    return frozenset(inspect.signature(fn).parameters)


def varlen_options(
    fn: Callable, causal: bool, window: int | None, scale: float | None, head_dim: int, grouped: bool
) -> dict[str, Any] | None:
    """Keyword arguments for this torch's `varlen_attn`, or None where it cannot express the call.

    torch 2.10 takes `is_causal`; later versions take `window_size=(left, right)` ((-1, 0): causal;
    (W-1, 0): a causal window of W tokens, the band transformers' sliding_window means) and `scale`;
    torch ≥ 2.12 also `enable_gqa` (fewer key/value heads than query heads).
    """
    params = _parameters(fn)
    kwargs: dict[str, Any] = {}
    if "window_size" in params:
        kwargs["window_size"] = ((window - 1 if window else -1), 0) if causal else (-1, -1)
    elif window is not None or "is_causal" not in params:
        return None
    else:
        kwargs["is_causal"] = causal
    if "scale" in params:
        kwargs["scale"] = scale
    elif scale is not None and abs(scale - head_dim**-0.5) > 1e-6 * head_dim**-0.5:
        return None
    if grouped:
        if "enable_gqa" not in params:
            return None
        kwargs["enable_gqa"] = True
    return kwargs


@functools.lru_cache(maxsize=4)
def _cu_seqlens(spans: tuple[tuple[int, int], ...], device: str) -> tuple[torch.Tensor, int]:
    """int32 cumulative document offsets on `device` and the longest document (cached per forward)."""
    offsets = [s for s, _ in spans] + [spans[-1][0] + spans[-1][1]]
    return torch.tensor(offsets, dtype=torch.int32, device=device), max(n for _, n in spans)


def varlen_serves(query: torch.Tensor) -> bool:
    """Whether torch's varlen kernels take these tensors: CUDA, half precision (flash-attention)."""
    return query.is_cuda and query.dtype in (torch.float16, torch.bfloat16)


def varlen_packed(
    fn: Callable[..., torch.Tensor],
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    plan: DocumentPlan,
    options: dict[str, Any],
) -> torch.Tensor:
    """[B, H, L, D] query/key/value → `fn` over the flattened [B·L, H, D] documents → [B, L, H, D]."""
    batch, heads, length, head_dim = query.shape
    cu, longest = _cu_seqlens(plan.spans, str(query.device))
    q, k, v = (t.transpose(1, 2).reshape(batch * length, t.shape[1], head_dim) for t in (query, key, value))
    out = fn(q, k, v, cu, cu, longest, longest, **options)
    return out.view(batch, length, heads, head_dim)


def varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """An `AttentionInterface` function: one `varlen_attn` call over every document of a packed batch.

    Calls it cannot serve exactly go to `per_document_attention_forward` (itself sdpa for masked or
    cached calls): fp32 or CPU tensors (flash kernels are half precision, CUDA only), dropout (varlen
    has none), or an option this torch's varlen lacks. Returns [B, L, H, D] like transformers' sdpa.
    """
    position_ids, cu_seq_lens = kwargs.get("position_ids"), kwargs.get("cu_seq_lens_q")
    fn = varlen_function()
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    heads, length = query.shape[1], query.shape[2]
    options = None
    if (
        fn is not None
        and attention_mask is None
        and length == key.shape[2]
        and (position_ids is not None or cu_seq_lens is not None)
        and varlen_serves(query)
        and not dropout
        and kwargs.get("softcap") is None
        and kwargs.get("position_bias") is None
    ):
        window, grouped = kwargs.get("sliding_window"), key.shape[1] != heads
        options = varlen_options(fn, causal, window, scaling, query.shape[-1], grouped)
        if options is None and grouped:  # an older varlen without enable_gqa: repeat the kv heads
            options = varlen_options(fn, causal, window, scaling, query.shape[-1], False)
            if options is not None:
                key, value = (repeat_kv(t, heads // key.shape[1]) for t in (key, value))
    if options is None:
        return per_document_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    plan = _plan_for(position_ids, cu_seq_lens, query.shape[0], length, "none")
    return varlen_packed(fn, query, key, value, plan, options), None


def register() -> str:
    """Register `instructkit_docs` and `instructkit_varlen` with transformers (idempotent); returns the first."""
    AttentionInterface.register(DOCS, per_document_attention_forward)
    AttentionMaskInterface.register(DOCS, per_document_mask)
    AttentionInterface.register(VARLEN, varlen_attention_forward)
    AttentionMaskInterface.register(VARLEN, per_document_mask)
    return DOCS


register()
# what transformers checks before building masks
assert {DOCS, VARLEN} <= set(ALL_MASK_ATTENTION_FUNCTIONS._global_mapping)


def flex_trains_here() -> bool:
    """FlexAttention has a backward only on accelerators (torch 2.13: 'does not support backward on CPU')."""
    return torch.cuda.is_available()


def check_trainable_attention(impl: str | None) -> None:
    """Refuse, before training starts, an attention implementation that cannot run a backward here."""
    if impl == VARLEN and (why := varlen_unavailable()):
        raise InstructkitError(f"attention {VARLEN} cannot train here: {why}")
    if impl == "flex_attention" and not flex_trains_here():
        raise InstructkitError(
            "--attn-implementation flex_attention cannot train on CPU (torch "
            f"{torch.__version__.split('+')[0]}: FlexAttention does not support backward on CPU); use "
            f"{DOCS} (per-document attention, the CPU default for packed rows) or sdpa. flex_attention "
            "stays usable for evaluation on CPU and for training on a GPU."
        )


def training_attention(requested: str | None, packed: bool) -> str | None:
    """The attention a training run uses: the requested one (checked), else flash-attention varlen on a
    GPU where installed, else for packed rows torch's varlen on CUDA (kept only if the pre-flight
    passes, see `collators.packed_attention_preflight`) or per-document attention; padded rows: sdpa."""
    check_trainable_attention(requested)
    if requested:
        return requested
    from ..models.loading import default_attn_implementation

    default = default_attn_implementation()
    if packed and default == "sdpa":
        return VARLEN if varlen_unavailable() is None else DOCS
    return default


def fixed_row_options(model: torch.nn.Module, meta: dict, micro_batch_size: int) -> dict[str, int]:
    """PackedCollator options: with flex_attention, fill each micro-batch to micro_batch_size ×
    max_length tokens, because training compiles flex with static shapes and every new row length
    would compile it again; otherwise none (padding-free rows)."""
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if impl != "flex_attention":
        return {}
    max_length = int(meta.get("max_length", 4096))
    return {"fixed_length": max_length * micro_batch_size, "max_document": max_length}
