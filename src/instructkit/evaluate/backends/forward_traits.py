"""What a causal LM's forward pass honours, checked once on the model itself: the fast paths rely on it.

Packed loglikelihood rows place each token with a 4D mask and `position_ids`; batched decoding pads
prompts on the left and leaves masked columns (rejected drafts) in the cache. Alibi models (MPT, Bloom)
place tokens by their column instead, recurrent models (Mamba) read every token whatever the mask, and
some models return no transformers `Cache`. Each probe lays a short random sequence out the fast path's
way and compares its logits with the plain forward pass; a model that fails a probe takes a slower
exact path instead of giving silently wrong numbers. Sliding or local windows are read from the config
(a short probe cannot reach a window).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

# A probe passes when its logits differ from the plain pass by less than this share of the largest
# logit, or 8 rounding units of the model's dtype if more: a change of shape moves float32 logits by
# ~1e-6 and bfloat16 ones by up to ~3e-2 (SmolLM2-135M), a misplaced token by 2e-1 or more.
TOLERANCE = 1e-3
NOISE_UNITS = 8
PROBE_TOKENS = 12
# Masked tokens per gap: a misplacing model (alibi by column) then shifts each distance by this many.
GAP_TOKENS = 16
PROBE_NAMES = {
    "kv_cache": "continuing its own KV cache",
    "left_padding": "left padding",
    "masked_gaps": "masked columns between tokens",
    "tree_masks": "4D masks over packed rows",
}


@dataclass(frozen=True)
class ForwardTraits:
    """Which layouts leave the model's logits unchanged (see the module docstring)."""

    kv_cache: bool  # a transformers `Cache` comes back and passes fed a 2D mask and positions continue it
    left_padding: bool  # the same with masked columns on the left of the prompt
    masked_gaps: bool  # masked columns between a row's tokens (2D mask), positions from `position_ids`
    tree_masks: bool  # a custom 4D mask over unrelated tokens in one row, positions from `position_ids`
    notes: tuple[str, ...] = field(default=(), compare=False)  # each failed probe and by how much

    def slower_paths(self) -> str | None:
        """One line naming the probes the model failed (the paths it gives up), or None."""
        return "; ".join(self.notes) or None


@torch.inference_mode()
def probe_forward_traits(model: Any, cache_kw: str) -> ForwardTraits:
    """Run the probes on `model` (seven forward passes of at most 44 tokens)."""
    device = next(model.parameters()).device
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    vocab = getattr(embeddings, "num_embeddings", None) or model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    seq = torch.randint(0, vocab, (PROBE_TOKENS + 2 * GAP_TOKENS,), generator=gen)
    seq, junk = seq[:PROBE_TOKENS].to(device), seq[PROBE_TOKENS:].to(device)
    plain = _run(lambda: model(input_ids=seq[None], use_cache=False).logits[0])
    if plain is None:
        return ForwardTraits(False, False, False, False, ("the plain forward pass failed",))
    tolerance = max(TOLERANCE, NOISE_UNITS * torch.finfo(next(model.parameters()).dtype).eps)
    moved = {
        "kv_cache": _moved(plain, _continued(model, cache_kw, seq, junk[:0])),
        "left_padding": _moved(plain, _continued(model, cache_kw, seq, junk[:GAP_TOKENS])),
        "masked_gaps": _moved(plain, _gapped(model, seq, junk)),
        "tree_masks": _moved(plain, _tree(model, seq, junk)),
    }
    passed = {name: share is not None and share < tolerance for name, share in moved.items()}
    passed["left_padding"] &= passed["kv_cache"]
    notes = tuple(
        f"{PROBE_NAMES[name]}: " + ("refused" if share is None else f"logits moved {share:.1%}")
        for name, share in moved.items()
        if not passed[name]
    )
    return ForwardTraits(**passed, notes=notes)


def _run(forward: Callable[[], torch.Tensor]) -> torch.Tensor | None:
    """The logits, or None when the model refuses the layout (e.g. alibi code that expects a 2D mask)."""
    try:
        return forward().float()
    except (TypeError, ValueError, RuntimeError, IndexError, AttributeError):
        return None


def _moved(plain: torch.Tensor, other: torch.Tensor | None) -> float | None:
    """The largest change of a logit as a share of the largest plain logit; None if the layout failed."""
    if other is None or other.shape != plain.shape:
        return None
    return float((plain - other).abs().max() / plain.abs().max().clamp_min(1e-6))


def _continued(model: Any, cache_kw: str, seq: torch.Tensor, pad: torch.Tensor) -> torch.Tensor | None:
    """Prefill [pad | first half] with `pad` masked, then feed the second half on the returned cache:
    the 2D mask and `position_ids` the decoding loop passes. None when no transformers `Cache` comes back."""
    from transformers import Cache

    half = len(seq) // 2
    ids = torch.cat([pad, seq[:half]])[None]
    mask = torch.cat([torch.zeros_like(pad), torch.ones_like(seq[:half])])[None]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)

    def forward() -> torch.Tensor:
        first = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache = cache_of(first)
        if not isinstance(cache, Cache):
            raise TypeError(f"{type(cache).__name__} is not a transformers Cache")
        rest = seq[half:][None]
        second = model(
            input_ids=rest,
            attention_mask=torch.cat([mask, torch.ones_like(rest)], dim=1),
            position_ids=torch.arange(half, len(seq), device=seq.device)[None],
            **{cache_kw: cache},
            use_cache=True,
        )
        return torch.cat([first.logits[0, len(pad) :], second.logits[0]])

    return _run(forward)


def _gapped(model: Any, seq: torch.Tensor, junk: torch.Tensor) -> torch.Tensor | None:
    """[first half | junk | second half] with the junk masked out of a 2D mask."""
    half, gap = len(seq) // 2, junk[:GAP_TOKENS]
    ids = torch.cat([seq[:half], gap, seq[half:]])[None]
    keep = torch.cat([torch.ones_like(seq[:half]), torch.zeros_like(gap), torch.ones_like(seq[half:])])
    positions = torch.cat(
        [torch.arange(half), torch.full((len(gap),), half - 1), torch.arange(half, len(seq))]
    ).to(seq.device)
    return _run(
        lambda: model(
            input_ids=ids, attention_mask=keep[None], position_ids=positions[None], use_cache=False
        ).logits[0, keep.bool()]
    )


def _tree(model: Any, seq: torch.Tensor, junk: torch.Tensor) -> torch.Tensor | None:
    """[other | first half | other | second half] in one row; a 4D mask lets `seq` see only itself."""
    half, a, b = len(seq) // 2, junk[:GAP_TOKENS], junk[GAP_TOKENS:]
    ids = torch.cat([a, seq[:half], b, seq[half:]])
    owner = torch.cat(
        [torch.full((len(a),), 1), torch.zeros(half), torch.full((len(b),), 2), torch.zeros(len(seq) - half)]
    ).to(seq.device)
    order = torch.cat(
        [torch.arange(len(a)), torch.arange(half), torch.arange(len(b)), torch.arange(half, len(seq))]
    ).to(seq.device)
    index = torch.arange(len(ids), device=seq.device)
    allowed = (owner[:, None] == owner[None, :]) & (index[:, None] >= index[None, :])
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(allowed.shape, dtype=dtype, device=seq.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return _run(
        lambda: model(
            input_ids=ids[None], attention_mask=mask[None, None], position_ids=order[None], use_cache=False
        ).logits[0, owner == 0]
    )


def attends_whole_sequence(config: Any) -> bool:
    """Whether every attention layer sees the whole sequence (no sliding or local window)."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return all(t == "full_attention" for t in layer_types)
    attention_layers = getattr(config, "attention_layers", None)  # GPT-Neo: "global" / "local"
    if attention_layers is not None and any(t == "local" for t in attention_layers):
        return False
    if getattr(config, "attention_window_size", None):  # RecurrentGemma's local attention
        return False
    return not getattr(config, "sliding_window", None) or getattr(config, "use_sliding_window", True) is False


def cache_of(output: Any) -> Any:
    """The KV cache an output carries, under either name (`cache` now, `past_key_values` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)
