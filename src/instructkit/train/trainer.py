"""`InstructTrainer`: what `transformers.Trainer` lacks for packed instruction tuning, and its loss.

The Trainer already gives us the loop, resume with optimizer, scheduler, RNG and data-order restore,
and DDP/FSDP/DeepSpeed through accelerate. We add:
- a loss that is the summed token cross-entropy over the trainable-token count of the whole
  optimizer step (all micro-batches, all ranks), for any model, so a step's loss and update do not
  depend on how it is split into micro-batches or packs;
- logits projected onto the vocabulary only at positions that carry a label (`logits_to_keep`);
- the packed-row guard: no attention mask, no KV cache, isolation checked on the real model;
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


def causal_lm_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """Token-mean loss from full logits: summed next-token CE over `num_items_in_batch` (default: this batch)."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    targets = next_token_targets(labels)
    if num_items_in_batch is None:
        num_items_in_batch = targets.ne(IGNORE_INDEX).sum().clamp_min(1)
    return token_loss_sum(logits, targets) / num_items_in_batch


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
        self._window = torch.zeros(2, dtype=torch.float64)  # tokens, trainable tokens since the last log
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
        count = sum((b["labels"][..., 1:].ne(IGNORE_INDEX).sum() for b in batches), torch.tensor(0)).to(
            device
        )
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return batches, count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Summed CE over the step's trainable-token count; logits only where a label is (when supported).

        Runs with the KV cache off and refuses packed rows that carry an attention mask (either would
        let packed examples attend to each other).
        """
        if self.packed and "attention_mask" in inputs:
            raise RuntimeError("packed rows must not carry an attention_mask: it disables example isolation")
        inputs = dict(inputs)
        targets = next_token_targets(inputs.pop("labels"))
        keep = targets.ne(IGNORE_INDEX)
        if self._slice_logits:  # project onto the vocabulary only where there is a loss
            outputs = model(**inputs, use_cache=False, logits_to_keep=keep)
            logits = outputs.logits
        else:
            outputs = model(**inputs, use_cache=False)
            logits = outputs.logits[keep]
        denominator = num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp_min(1)
        loss = token_loss_sum(logits, targets[keep]) / denominator
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks; undo that
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Count the real and the trainable tokens of each micro-batch for throughput logs."""
        mask = inputs.get("attention_mask")
        tokens = int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
        trainable = int(inputs["labels"][..., 1:].ne(IGNORE_INDEX).sum())
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
