"""Batch collators for packed (padding-free) and padded rows, and the packed-isolation guard.

Packed rows go to the model as ONE row per micro-batch with `position_ids` restarting at 0 per
example and NO `attention_mask`. From that, `instructkit_docs` (train/attention.py, the CPU default)
runs attention per example, flash-attention runs varlen, and sdpa/eager/flex build a block-diagonal
causal mask; an attention mask, or a KV cache (`use_cache=True`), silently switches the mask off
and packed examples attend to each other. `assert_packed_isolation` checks the real model once
before training, whatever attention it runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch

from ..data.prepared import IGNORE_INDEX
from ..errors import InstructkitError
from ..progress import log_event
from .attention import DOCS, VARLEN

# Attention implementations that honour position_ids-derived packing (transformers 5.24).
PACKED_ATTENTION = (DOCS, VARLEN, "sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")


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


class PreferenceCollator(PackedCollator):
    """`PackedCollator` for rows of whole preference pairs, plus each sequence's `seq_lens`, `pair_ids` and
    `sides` (0 chosen, 1 rejected), and `ref_logps` when the dataset carries the reference pass."""

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        batch["seq_lens"] = torch.tensor([n for f in features for n in f["seq_lens"]], dtype=torch.long)
        batch["pair_ids"] = torch.tensor([p for f in features for p in f["pair_ids"]], dtype=torch.long)
        batch["sides"] = torch.tensor([s for f in features for s in f["sides"]], dtype=torch.long)
        if all("ref_logps" in f for f in features):
            batch["ref_logps"] = torch.tensor(
                [x for f in features for x in f["ref_logps"]], dtype=torch.float64
            )
        return batch


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
    except (AttributeError, IndexError, KeyError, RuntimeError, TypeError, ValueError) as exc:
        # e.g. MPT and alibi Falcon build alibi from a mask packed rows do not have; GPT-Neo has no
        # class for a registered attention: the model cannot run packed rows at all
        impl = getattr(model.config, "_attn_implementation", None)
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}" if str(exc) else type(exc).__name__
        raise InstructkitError(
            f"{type(model).__name__} cannot run packed rows with attention {impl!r} ({reason}); "
            "prepare the data without --pack"
        ) from exc
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    if getattr(model.config, "_attn_implementation", None) == "flex_attention":
        log_event("train", f"note: {compile_note(seconds)}")
    if leak > tolerance:
        raise InstructkitError(
            f"packed examples attend to each other in this model (relative logit change {leak:.3g}); "
            "it cannot be trained on packed rows: prepare the data without --pack"
        )
    return seconds


def packed_attention_preflight(model: torch.nn.Module, requested: str | None) -> str:
    """The isolation pre-flight that settles packed attention: an automatic `instructkit_varlen` is kept
    only if its packed examples stay isolated in bf16 on this model, else the model switches to
    `instructkit_docs`; then the usual check (raises if examples still see each other). Returns the choice."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) == VARLEN and not requested:
        was_training = base.training
        base.eval()
        half = torch.autocast("cuda", dtype=torch.bfloat16) if torch.cuda.is_available() else nullcontext()
        try:
            with half:  # varlen serves half precision only
                leak, why = packed_cross_talk(model), None
        except Exception as exc:  # a kernel missing on this GPU is a reason to fall back, not to stop
            leak, why = float("inf"), f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        finally:
            base.train(was_training)
        if leak > 1e-3:
            log_event(
                "train",
                f"note: {VARLEN} failed the packed isolation check ({why or f'cross-talk {leak:.3g}'}); "
                f"training with {DOCS}",
            )
            base.set_attn_implementation(DOCS)
    assert_packed_isolation(model)
    return base.config._attn_implementation


# --- encoder-decoder (seq2seq) rows ---------------------------------------------------------------
#
# T5 takes no position_ids: its relative position bias is computed from query/key indices within the
# row (`memory_position - context_position`), so inside one example of a packed row the differences
# are those of the example alone. Isolation therefore rests on three 4-D additive masks, built here:
# encoder self-attention block-diagonal, decoder self-attention block-diagonal causal, cross-attention
# decoder segment i → encoder segment i only. T5's forward feeds one `attention_mask` to both the
# encoder and the cross-attention, so `seq2seq_forward` runs the encoder itself with the encoder mask
# and hands the model the cross-attention mask with the encoder output.

SEQ2SEQ_PACKED_ATTENTION = ("sdpa", "eager")  # honour a 4-D float mask added to T5's position bias


def segment_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """Example index of each token of a packed row: a new example starts where the position is 0."""
    return (position_ids == 0).long().cumsum(-1)


def block_mask(
    query_segments: torch.Tensor, key_segments: torch.Tensor, causal: bool, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """[1, 1, Q, K] additive mask: 0 where query and key share an example (and key ≤ query when
    `causal`), the dtype's minimum elsewhere (a float mask, so eager attention adds it as sdpa does)."""
    allowed = query_segments[:, None] == key_segments[None, :]
    if causal:
        allowed &= torch.ones_like(allowed).tril()
    mask = torch.zeros(allowed.shape, dtype=dtype)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


def shift_right_per_segment(
    labels: torch.Tensor, positions: torch.Tensor, start_id: int, pad_id: int
) -> torch.Tensor:
    """Decoder inputs of a packed decoder row: each example's labels shifted right within the example,
    its first input the decoder start token (never the previous example's last label); -100 → pad."""
    inputs = torch.roll(labels, 1, dims=-1)
    inputs[positions == 0] = start_id
    return inputs.masked_fill(inputs == IGNORE_INDEX, pad_id)


class Seq2SeqPackedCollator:
    """Concatenates packed seq2seq rows into one encoder row and one decoder row with the three masks.

    Returns input_ids [1, S], labels [1, T], decoder_input_ids [1, T], attention_mask (encoder,
    [1, 1, S, S]), decoder_attention_mask ([1, 1, T, T]) and cross_attention_mask ([1, 1, T, S]).
    """

    def __init__(self, decoder_start_token_id: int, pad_token_id: int):
        self.start, self.pad = decoder_start_token_id, pad_token_id

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        def cat(key: str) -> torch.Tensor:
            return torch.tensor([t for f in features for t in f[key]], dtype=torch.long)

        ids, labels = cat("input_ids"), cat("labels")
        enc_seg, dec_seg = segment_ids(cat("position_ids")), segment_ids(cat("decoder_position_ids"))
        return {
            "input_ids": ids[None],
            "labels": labels[None],
            "decoder_input_ids": shift_right_per_segment(
                labels, cat("decoder_position_ids"), self.start, self.pad
            )[None],
            "attention_mask": block_mask(enc_seg, enc_seg, causal=False),
            "decoder_attention_mask": block_mask(dec_seg, dec_seg, causal=True),
            "cross_attention_mask": block_mask(dec_seg, enc_seg, causal=False),
        }


class Seq2SeqPaddedCollator:
    """Right-pads (input, target) rows: input_ids with pad and an attention mask, labels with -100;
    the model makes decoder inputs from the labels (shifted right from the decoder start token)."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        source = max(len(f["input_ids"]) for f in features)
        target = max(len(f["labels"]) for f in features)
        ids = torch.full((len(features), source), self.pad, dtype=torch.long)
        mask = torch.zeros((len(features), source), dtype=torch.long)
        labels = torch.full((len(features), target), IGNORE_INDEX, dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.as_tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = 1
            labels[i, : len(f["labels"])] = torch.as_tensor(f["labels"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def seq2seq_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
    """The model's output for a seq2seq batch (logits [B, T, V]); labels are not passed (no inner loss).

    A packed batch (with `cross_attention_mask`) runs the encoder under the encoder mask, then the
    model on that output under the cross-attention and decoder masks; a padded one is the model's own
    forward, which shifts the labels right into decoder inputs.
    """
    batch = dict(batch)
    labels = batch.pop("labels")
    cross = batch.pop("cross_attention_mask", None)
    if cross is None:
        decoder_inputs = model.prepare_decoder_input_ids_from_labels(labels=labels)
        return model(**batch, decoder_input_ids=decoder_inputs, use_cache=False)
    dtype = next(model.parameters()).dtype
    encoder = model.get_encoder()(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"].to(dtype)
    )
    return model(
        encoder_outputs=encoder,
        attention_mask=cross.to(dtype),
        decoder_input_ids=batch["decoder_input_ids"],
        decoder_attention_mask=batch["decoder_attention_mask"].to(dtype),
        use_cache=False,
    )


@torch.no_grad()
def seq2seq_cross_talk(model: torch.nn.Module, length: int = 6) -> float:
    """Largest relative change in the second example's logits of a packed seq2seq row, between the
    row with two different first examples and that example run alone (0 when isolated)."""
    config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    vocab = model.get_input_embeddings().num_embeddings
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)

    def draw(n: int) -> list[int]:
        return torch.randint(3, vocab, (n,), generator=gen).tolist()

    second = {"input_ids": draw(length), "labels": draw(length - 2)}
    collate = Seq2SeqPackedCollator(config.decoder_start_token_id, config.pad_token_id)
    logits = []
    for first in (
        {"input_ids": draw(length + 1), "labels": draw(length)},
        {"input_ids": draw(3), "labels": draw(2)},
        None,
    ):
        examples = [first, second] if first else [second]
        row = {key: [t for e in examples for t in e[key]] for key in ("input_ids", "labels")} | {
            "position_ids": [p for e in examples for p in range(len(e["input_ids"]))],
            "decoder_position_ids": [p for e in examples for p in range(len(e["labels"]))],
        }
        batch = {k: v.to(device) for k, v in collate([row]).items()}
        logits.append(seq2seq_forward(model, batch).logits[0, -len(second["labels"]) :].float())
    scale = logits[2].abs().max().clamp_min(1e-6)
    return float(max((logits[i] - logits[2]).abs().max() for i in (0, 1)) / scale)


def assert_seq2seq_isolation(model: torch.nn.Module, tolerance: float = 1e-4) -> None:
    """Refuse, before training, packed seq2seq rows on an attention path that lets examples see each other."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    impl = getattr(base.config, "_attn_implementation", None) or "eager"
    if impl not in SEQ2SEQ_PACKED_ATTENTION:
        raise InstructkitError(
            f"attention implementation {impl!r} cannot take the 4-D masks that isolate packed encoder-decoder "
            f"examples; use one of {', '.join(SEQ2SEQ_PACKED_ATTENTION)} or prepare the data without --pack"
        )
    was_training = model.training
    model.eval()
    try:
        leak = seq2seq_cross_talk(model)
    finally:
        model.train(was_training)
    if leak > tolerance:
        raise InstructkitError(
            f"packed encoder-decoder examples attend to each other in this model (relative logit change "
            f"{leak:.3g}); it cannot be trained on packed rows: prepare the data without --pack"
        )
