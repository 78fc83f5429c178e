"""Batch collators for packed (padding-free) and padded rows, and the packed-isolation guard.

Packed rows go to the model as ONE row per micro-batch with `position_ids` restarting at 0 per
example and NO `attention_mask`. From that, `instructkit_docs` (train/attention.py, the CPU default)
runs attention per example, flash-attention runs varlen, and sdpa/eager/flex build a block-diagonal
causal mask; an attention mask, or a KV cache (`use_cache=True`), silently switches the mask off
and packed examples attend to each other. `assert_packed_isolation` checks the real model once
before training, whatever attention it runs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..data.prepared import IGNORE_INDEX
from ..errors import InstructkitError
from .attention import DOCS

# Attention implementations that honour position_ids-derived packing (transformers 5.24).
PACKED_ATTENTION = (DOCS, "sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")


def pretrain_labels(input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Labels for `pretrain`: every token, except each example's first (never predicted across examples)."""
    labels = input_ids.clone()
    labels[position_ids == 0] = IGNORE_INDEX
    return labels


class PackedCollator:
    """Concatenates packed rows into one padding-free row: input_ids, labels, position_ids; no mask.

    With `fixed_length` (for compiled attention such as flex_attention, which recompiles for every
    new row length) the row is filled up to that length with filler documents of at most
    `max_document` tokens: their own position_ids, so isolated, and no labels, so no loss.
    """

    def __init__(self, objective: str = "sft", fixed_length: int | None = None, max_document: int = 4096):
        self.objective = objective
        self.fixed_length = fixed_length
        self.max_document = max_document

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Flatten `features` into a [1, T] batch (several packed rows simply become more examples)."""
        ids = torch.tensor([t for f in features for t in f["input_ids"]], dtype=torch.long)[None]
        pos = torch.tensor([t for f in features for t in f["position_ids"]], dtype=torch.long)[None]
        if self.objective == "pretrain":
            labels = pretrain_labels(ids, pos)
        else:
            labels = torch.tensor([t for f in features for t in f["labels"]], dtype=torch.long)[None]
            # The first token of an example is never predicted from the previous example.
            labels[pos == 0] = IGNORE_INDEX
        if self.fixed_length:
            ids, labels, pos = self._fill(ids, labels, pos)
        return {"input_ids": ids, "labels": labels, "position_ids": pos}

    def _fill(self, ids: torch.Tensor, labels: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Append filler documents (token 0, no labels) up to a multiple of `fixed_length`."""
        fill = -ids.shape[1] % self.fixed_length
        filler_pos = (torch.arange(fill) % self.max_document)[None]
        return (
            torch.cat([ids, torch.zeros_like(filler_pos)], dim=1),
            torch.cat([labels, torch.full_like(filler_pos, IGNORE_INDEX)], dim=1),
            torch.cat([pos, filler_pos], dim=1),
        )


class PaddedCollator:
    """Right-pads unpacked rows to the longest in the batch, with an attention mask."""

    def __init__(self, pad_token_id: int, objective: str = "sft", pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.objective = objective
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad input_ids with the pad token and labels with -100; mask marks the real tokens."""
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = torch.full((len(features), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), longest), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.as_tensor(f["input_ids"])
            labels[i, :n] = torch.as_tensor(f["input_ids"] if self.objective == "pretrain" else f["labels"])
            mask[i, :n] = 1
        labels[:, 0] = IGNORE_INDEX  # never predicted (the model shifts); keeps token counts exact
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def check_packed_attention(model: torch.nn.Module) -> None:
    """Refuse packed training with an attention implementation that would let examples see each other."""
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl not in PACKED_ATTENTION:
        raise InstructkitError(
            f"attention implementation {impl!r} does not isolate packed examples; use one of "
            f"{', '.join(PACKED_ATTENTION)} or prepare the data without --pack (padded mode)"
        )


@torch.no_grad()
def packed_cross_talk(model: torch.nn.Module, length: int = 8) -> float:
    """Largest change in the second example's logits when only the first example of a pack changes.

    Runs the exact batch layout the PackedCollator emits (no attention mask, use_cache=False). With
    isolated examples the change is 0 (up to kernel noise); with cross-talk it is of order 1.
    """
    vocab = model.get_input_embeddings().num_embeddings
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    first_a = torch.randint(5, vocab, (length,), generator=gen)
    first_b = torch.randint(5, vocab, (length,), generator=gen)
    second = torch.randint(5, vocab, (length,), generator=gen)
    pos = torch.cat([torch.arange(length), torch.arange(length)])[None].to(device)
    logits = []
    for first in (first_a, first_b):
        ids = torch.cat([first, second])[None].to(device)
        out = model(input_ids=ids, position_ids=pos, use_cache=False)
        logits.append(out.logits[0, length:].float())
    scale = logits[0].abs().max().clamp_min(1e-6)
    return float((logits[0] - logits[1]).abs().max() / scale)


def compile_note(seconds: float) -> str:
    """What the one-time flex_attention compile cost, and where torch caches it for later runs."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return (
        f"flex_attention compiled in {seconds:.1f} s for the isolation check; the first training step "
        "compiles its training variant once more (rows are filled to one fixed length so that it "
        f"compiles only once); kernels are cached in {cache_dir()} (TORCHINDUCTOR_CACHE_DIR) for later runs"
    )


def assert_packed_isolation(model: torch.nn.Module, tolerance: float = 1e-3) -> float:
    """Check, on the real model, that packed examples cannot attend to each other; raise if they do.

    Returns the check's wall time; with flex_attention that is mostly its one-time compile, which
    is printed so that it is not mistaken for slow training.
    """
    check_packed_attention(model)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        leak = packed_cross_talk(model)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    if getattr(model.config, "_attn_implementation", None) == "flex_attention":
        print(f"note: {compile_note(seconds)}", file=sys.stderr)
    if leak > tolerance:
        raise InstructkitError(
            f"packed examples attend to each other in this model (relative logit change {leak:.3g}); "
            "it cannot be trained on packed rows: prepare the data without --pack"
        )
    return seconds
