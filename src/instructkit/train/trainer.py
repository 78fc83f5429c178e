"""`InstructTrainer`: what `transformers.Trainer` lacks for packed instruction tuning, and its loss.

The Trainer already gives us the loop, resume with optimizer, scheduler, RNG and data-order restore,
and DDP/FSDP/DeepSpeed through accelerate. We add:
- a loss that is the summed token cross-entropy over the trainable-token count of the whole
  optimizer step (all micro-batches, all ranks), for any model, so a step's loss and update do not
  depend on how it is split into micro-batches or packs;
- logits projected onto the vocabulary only at positions that carry a label (`logits_to_keep`), and
  on long rows chunk by chunk, so the [tokens, vocabulary] logits never exist at once;
- the packed-row guard: no attention mask, no KV cache, isolation checked on the real model;
- encoder-decoder models (T5): the same loss over targets as they are, every target token predicted
  (decoder inputs are the labels shifted right from the decoder start token), packed rows isolated
  by the masks `collators.Seq2SeqPackedCollator` builds;
- atomic checkpoints (see checkpoint.py) and token throughput in the logs.

`run.train(config)` is the script around it; `setup` maps a TrainConfig onto model, data and arguments.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from ..data.prepared import IGNORE_INDEX
from . import checkpoint as ckpt


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """targets[..., i] = labels[..., i + 1]: what position i predicts (-100 past the end)."""
    return F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]


def token_loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of `logits` [..., V] against `targets` [...] (-100 ignored), in fp32."""
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1).to(logits.device),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def _chunk_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, bias) -> torch.Tensor:
    return token_loss_sum(F.linear(hidden, weight, bias), targets)


def chunked_token_loss_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 4096,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """`token_loss_sum(hidden @ weight.T + bias, targets)` without ever holding more than `chunk_size`
    rows of logits: each chunk is projected, scored in fp32 and freed, and recomputed in the backward
    pass (activation checkpointing). hidden [N, H], weight [V, H], targets [N] (-100 ignored).

    Costs one extra LM-head matmul per chunk in the backward; saves the [N, V] logits, their fp32 copy
    and their gradient, which on long rows with a large vocabulary are most of the step's memory.
    """
    from torch.utils.checkpoint import checkpoint

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        part = slice(start, start + chunk_size)
        chunk = (hidden[part], weight, targets[part].to(hidden.device), bias)
        total = total + checkpoint(_chunk_loss_sum, *chunk, use_reentrant=False)
    return total


def causal_lm_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """Token-mean loss from full logits: summed next-token CE over `num_items_in_batch` (default: this batch)."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    targets = next_token_targets(labels)
    if num_items_in_batch is None:
        num_items_in_batch = targets.ne(IGNORE_INDEX).sum().clamp_min(1)
    return token_loss_sum(logits, targets) / num_items_in_batch


# Rows (micro-batches) of more tokens than this score the LM head chunk by chunk, LOSS_CHUNK labelled
# positions at a time (`chunked_token_loss_sum`); shorter ones project their labelled positions at once.
LOSS_CHUNK_TOKENS = 8192
LOSS_CHUNK = 4096
# Model types whose logits are exactly `lm_head(decoder(...))` (no softcapping, scaling or bias tricks).
PLAIN_HEAD_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def lm_head_split(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
    """(decoder, LM head) of a causal LM whose logits are the head applied to the decoder's last hidden
    state, with a plain Linear head (a LoRA-adapted head is not); else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if getattr(config, "model_type", None) not in PLAIN_HEAD_MODEL_TYPES or not hasattr(base, "get_decoder"):
        return None
    head = base.get_output_embeddings()
    return (base.get_decoder(), head) if type(head) is torch.nn.Linear else None


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the (base) model's forward can project only selected positions onto the vocabulary."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


class InstructTrainer(Trainer):
    """A Trainer with token-sum loss normalisation, the packed guard, atomic checkpoints and token throughput."""

    def __init__(self, *args: Any, packed: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.packed = packed
        self.loss_is_scaled_for_ga = True  # compute_loss divides by the whole step's trainable tokens
        self._slice_logits = accepts_logits_to_keep(self.model)
        self._head_split = lm_head_split(self.model)
        self._window = torch.zeros(2, dtype=torch.float64)  # tokens, trainable tokens since the last log
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        # encoder-decoder (T5 & co): labels are the targets themselves, every one predicted (`_seq2seq_loss`)
        self.seq2seq = bool(getattr(getattr(base, "config", None), "is_encoder_decoder", False))
        self._window_start = time.perf_counter()
        self._staging = False

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The step's micro-batches and their trainable-token count (labels[..., 1:]), summed over ranks."""
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        count = sum((self._trained(b["labels"]) for b in batches), torch.tensor(0)).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return batches, count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Summed CE over the step's trainable-token count; logits only where a label is (when supported).

        Runs with the KV cache off and refuses packed rows that carry an attention mask (either would
        let packed examples attend to each other).
        """
        if self.seq2seq:
            return self._seq2seq_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.packed and "attention_mask" in inputs:
            raise RuntimeError("packed rows must not carry an attention_mask: it disables example isolation")
        inputs = dict(inputs)
        targets = next_token_targets(inputs.pop("labels"))
        keep = targets.ne(IGNORE_INDEX)
        if self._chunk_loss(keep, return_outputs):  # long rows: logits of LOSS_CHUNK positions at a time
            decoder, head = self._head_split
            outputs = None
            with self.accelerator.autocast():  # what accelerate wraps the model's own forward in (bf16/fp16)
                hidden = decoder(**inputs, use_cache=False).last_hidden_state[keep]
                loss_sum = chunked_token_loss_sum(hidden, head.weight, targets[keep], LOSS_CHUNK, head.bias)
        elif self._slice_logits:  # project onto the vocabulary only where there is a loss
            outputs = model(**inputs, use_cache=False, logits_to_keep=keep)
            loss_sum = token_loss_sum(outputs.logits, targets[keep])
        else:
            outputs = model(**inputs, use_cache=False)
            loss_sum = token_loss_sum(outputs.logits[keep], targets[keep])
        denominator = num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp_min(1)
        loss = loss_sum / denominator
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks; undo that
        return (loss, outputs) if return_outputs else loss

    def _trained(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels with a loss: a causal LM never predicts a row's first token; a seq2seq decoder
        predicts every target token (the first from the decoder start token)."""
        return (labels if self.seq2seq else labels[..., 1:]).ne(IGNORE_INDEX).sum()

    def _seq2seq_loss(self, model, inputs, return_outputs: bool, num_items_in_batch=None):
        """Encoder-decoder loss: summed CE of the logits against the labels as they are (decoder inputs
        are the labels shifted right, `collators.seq2seq_forward`), over the step's trainable tokens.

        A packed row must carry its cross-attention mask: without it examples would see each other.
        """
        from .collators import seq2seq_forward

        if self.packed and "cross_attention_mask" not in inputs:
            raise RuntimeError(
                "packed seq2seq rows must carry their cross-attention mask (example isolation)"
            )
        labels = inputs["labels"]
        keep = labels.ne(IGNORE_INDEX)
        outputs = seq2seq_forward(model, inputs)
        loss_sum = token_loss_sum(outputs.logits[keep], labels[keep])
        loss = loss_sum / (num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp_min(1))
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks; undo that
        return (loss, outputs) if return_outputs else loss

    def _chunk_loss(self, keep: torch.Tensor, return_outputs: bool) -> bool:
        """Chunk the LM head + loss: a long row, a plain head, one process holding whole weights
        (DDP/FSDP/DeepSpeed must see the model's own forward), and no logits asked for."""
        single = self.args.world_size == 1 and not self.is_fsdp_enabled and not self.is_deepspeed_enabled
        return (
            self._head_split is not None
            and keep.numel() > LOSS_CHUNK_TOKENS
            and not return_outputs
            and single
        )

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Count the real and the trainable tokens of each micro-batch for throughput logs."""
        mask = inputs.get("attention_mask")
        if self.seq2seq:  # encoder tokens (a 2-D mask marks the real ones) plus target tokens
            real = int(mask.sum()) if mask is not None and mask.dim() == 2 else inputs["input_ids"].numel()
            tokens = real + int(inputs["labels"].ne(IGNORE_INDEX).sum())
        else:
            tokens = int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
        trainable = int(self._trained(inputs["labels"]))
        self._window += torch.tensor([tokens, trainable], dtype=torch.float64)
        return super().training_step(model, inputs, num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add tokens, trainable tokens and their rates (summed over ranks) to each training log."""
        if "loss" in logs:
            counts = self.accelerator.reduce(self._window.to(self.args.device), reduction="sum").cpu()
            elapsed = max(time.perf_counter() - self._window_start, 1e-9)
            logs["tokens"], logs["trainable_tokens"] = int(counts[0]), int(counts[1])
            logs["tokens_per_second"] = float(counts[0]) / elapsed
            logs["trained_tokens_per_second"] = float(counts[1]) / elapsed
            self._window.zero_()
            self._window_start = time.perf_counter()
        super().log(logs, start_time)

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        """Transformers' resume warning, without tied weights: a tied `lm_head.weight` is not stored in the
        checkpoint but is the same Parameter as the embeddings it loads (`checkpoint.without_tied_keys`)."""
        super()._issue_warnings_after_load(ckpt.without_tied_keys(self.model, load_result))

    def _get_output_dir(self, trial):
        """While a checkpoint is being written, the Trainer writes into the staging folder."""
        root = super()._get_output_dir(trial)
        return str(Path(root) / ckpt.STAGING) if self._staging else root

    def _save_checkpoint(self, model, trial) -> None:
        """Write the checkpoint in staging, then rename it into place once every rank has finished."""
        from transformers.trainer_utils import rotate_checkpoints

        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = False
        root = Path(self._get_output_dir(trial))
        name = f"checkpoint-{self.state.global_step}"
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            ckpt.publish(root / ckpt.STAGING / name, root / name)
            rotate_checkpoints(str(root), save_total_limit=self.args.save_total_limit, use_mtime=False)
        self.accelerator.wait_for_everyone()
