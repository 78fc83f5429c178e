"""Preference tuning (`objective: dpo`): per-sequence log-probabilities from packed pair rows, the losses,
the reference pass with its on-disk cache, and `PreferenceTrainer`.

Rows come from `data prepare` on chosen/rejected pairs (data/preference_rows.py): whole pairs, each
side its own sequence (`seq_lens`, `pair_ids`, `sides`), attention per sequence as for packed SFT.
A sequence's log-probability is the sum of its labelled tokens' log-probabilities (the reply and its
end-of-turn token), computed from logits at labelled positions only. Losses follow TRL exactly:
`sigmoid`, `ipo` and `dpo_norm` (TRL's `sigmoid_norm`) as `DPOTrainer`, `simpo` as `CPOTrainer`
(`loss_type="simpo"`, `cpo_alpha=0`), `orpo` as `ORPOTrainer` (its `beta` is `orpo_lambda` here).
The reference log-probabilities are computed once per dataset, before training, by the model as
loaded (a fresh LoRA adapter starts at zero, so that is the base; no second copy), and cached under the content of the
model and of the prepared data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import atomic_file
from ..data.prepared import IGNORE_INDEX
from ..errors import InstructkitError
from .trainer import InstructTrainer, next_token_targets

REFERENCE_FREE = ("simpo", "orpo")
PAIR_KEYS = ("seq_lens", "pair_ids", "sides", "ref_logps")  # batch entries the model never sees
REFERENCE_CACHE_VERSION = 1


@dataclass
class SequenceLogps:
    """Per sequence of a batch: summed label log-probabilities and labelled-token counts."""

    logps: torch.Tensor
    tokens: torch.Tensor


def segment_ids(seq_lens: torch.Tensor, length: int) -> torch.Tensor:
    """Sequence index of every token of a [1, length] row (-1 for filler past the sequences)."""
    seg = torch.full((length,), -1, dtype=torch.long, device=seq_lens.device)
    real = int(seq_lens.sum())
    seg[:real] = torch.repeat_interleave(torch.arange(len(seq_lens), device=seq_lens.device), seq_lens)
    return seg


def sequence_logps(model, inputs: dict[str, Any], slice_logits: bool = True) -> SequenceLogps:
    """Summed log-probabilities of each sequence's labelled tokens in one packed row (no KV cache, no mask).

    Position i predicts labels[i + 1] of the same sequence (a sequence's first label is always -100),
    so a labelled position's sequence is the token's own.
    """
    labels, seq_lens = inputs["labels"], inputs["seq_lens"]
    model_inputs = {k: v for k, v in inputs.items() if k not in PAIR_KEYS and k != "labels"}
    targets = next_token_targets(labels)
    keep = targets.ne(IGNORE_INDEX)
    if slice_logits:
        logits = model(**model_inputs, use_cache=False, logits_to_keep=keep).logits
    else:
        logits = model(**model_inputs, use_cache=False).logits[keep]
    logits = logits.reshape(-1, logits.shape[-1]).float()
    token_logps = -F.cross_entropy(logits, targets[keep].to(logits.device), reduction="none")
    seg = segment_ids(seq_lens.to(logits.device), labels.shape[-1])[keep.reshape(-1).to(logits.device)]
    count = len(seq_lens)
    sums = torch.zeros(count, dtype=token_logps.dtype, device=logits.device).index_add(0, seg, token_logps)
    tokens = torch.bincount(seg, minlength=count).to(token_logps.dtype)
    return SequenceLogps(sums, tokens)


def check_pair_layout(pair_ids: torch.Tensor, sides: torch.Tensor) -> None:
    """Sequences must come as (chosen, rejected) of one pair, pair after pair, as `data prepare` writes them."""
    ok = (
        len(sides) % 2 == 0
        and bool((sides[0::2] == 0).all())
        and bool((sides[1::2] == 1).all())
        and bool((pair_ids[0::2] == pair_ids[1::2]).all())
    )
    if not ok:
        raise InstructkitError(
            "a preference batch must hold whole pairs, chosen then rejected; this data was not written by "
            "`instructkit data prepare` from chosen/rejected pairs"
        )


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2 (as TRL's ORPO)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def pair_losses(
    settings,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    ref_chosen: torch.Tensor | None = None,
    ref_rejected: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, chosen reward, rejected reward) per pair, from summed sequence log-probabilities.

    `settings` carries dpo_loss, beta, simpo_gamma, orpo_lambda and label_smoothing (a TrainConfig).
    ORPO's loss here is its odds-ratio term only; the caller adds the chosen replies' NLL.
    """
    kind, beta, smooth = settings.dpo_loss, settings.beta, settings.label_smoothing
    if kind in REFERENCE_FREE:
        avg_c, avg_r = chosen / chosen_tokens.clamp_min(1), rejected / rejected_tokens.clamp_min(1)
        if kind == "simpo":
            logits = (avg_c - avg_r) - settings.simpo_gamma / beta
            losses = -F.logsigmoid(beta * logits) * (1 - smooth) - F.logsigmoid(-beta * logits) * smooth
            return losses, beta * avg_c.detach(), beta * avg_r.detach()
        lam = settings.orpo_lambda
        log_odds = (avg_c - avg_r) - (log1mexp(avg_c) - log1mexp(avg_r))
        return -lam * F.logsigmoid(log_odds), lam * avg_c.detach(), lam * avg_r.detach()
    if ref_chosen is None or ref_rejected is None:
        raise InstructkitError(f"dpo_loss {kind} needs the reference log-probabilities")
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    if kind == "sigmoid":
        delta = beta * (chosen_ratio - rejected_ratio)
        losses = -F.logsigmoid(delta) * (1 - smooth) - F.logsigmoid(-delta) * smooth
    elif kind in ("ipo", "dpo_norm"):
        delta = chosen_ratio / chosen_tokens.clamp_min(1) - rejected_ratio / rejected_tokens.clamp_min(1)
        losses = (delta - 1 / (2 * beta)) ** 2 if kind == "ipo" else -F.logsigmoid(beta * delta)
    else:
        raise InstructkitError(f"unknown dpo_loss {kind!r}")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


class PreferenceTrainer(InstructTrainer):
    """`InstructTrainer` with a preference loss: the mean pair loss over the optimizer step's pairs.

    Logs rewards/chosen, rewards/rejected, rewards/margins and rewards/accuracies (means over the
    pairs since the last log) beside the loss, as TRL names them.
    """

    def __init__(self, *args: Any, settings: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.settings = settings
        self._rewards = torch.zeros(5, dtype=torch.float64)  # pairs, chosen, rejected, margin, accuracy sums
        self._step_chosen_tokens = torch.tensor(1.0)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The step's micro-batches and its number of pairs (the loss's denominator), summed over ranks."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        pairs = torch.tensor(sum(len(b["sides"]) // 2 for b in batches), device=device)
        chosen = torch.tensor(sum(_chosen_tokens(b) for b in batches), device=device, dtype=torch.float64)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            pairs, chosen = self.accelerator.gather(pairs).sum(), self.accelerator.gather(chosen).sum()
        self._step_chosen_tokens = chosen.clamp_min(1)
        return batches, pairs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Sum of the micro-batch's pair losses over the step's pair count (ORPO adds the chosen NLL)."""
        if "attention_mask" in inputs:
            raise RuntimeError("packed rows must not carry an attention_mask: it disables example isolation")
        check_pair_layout(inputs["pair_ids"], inputs["sides"])
        out = sequence_logps(model, inputs, self._slice_logits)
        ref = inputs.get("ref_logps")
        ref = ref.to(out.logps.device, out.logps.dtype) if ref is not None else None
        losses, chosen_rewards, rejected_rewards = pair_losses(
            self.settings,
            out.logps[0::2],
            out.logps[1::2],
            out.tokens[0::2],
            out.tokens[1::2],
            ref[0::2] if ref is not None else None,
            ref[1::2] if ref is not None else None,
        )
        pairs = num_items_in_batch if num_items_in_batch is not None else len(losses)
        loss = losses.sum() / pairs
        if self.settings.dpo_loss == "orpo":
            denominator = (
                self._step_chosen_tokens if num_items_in_batch is not None else out.tokens[0::2].sum()
            )
            loss = loss - out.logps[0::2].sum() / denominator.to(loss.device).clamp_min(1)
        self._record(chosen_rewards, rejected_rewards)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks; undo that
        return (loss, None) if return_outputs else loss

    def _record(self, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        margin = chosen - rejected
        sums = [len(chosen), chosen.sum(), rejected.sum(), margin.sum(), (margin > 0).sum()]
        self._rewards += torch.tensor([float(s) for s in sums], dtype=torch.float64)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the reward means since the last log (summed over ranks) to each training log."""
        if "loss" in logs:
            sums = self.accelerator.reduce(self._rewards.to(self.args.device), reduction="sum").cpu()
            if sums[0] > 0:
                for key, value in zip(("chosen", "rejected", "margins", "accuracies"), sums[1:] / sums[0]):
                    logs[f"rewards/{key}"] = float(value)
            self._rewards.zero_()
        super().log(logs, start_time)


def _chosen_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Labelled tokens of the chosen sequences of a collated batch (ORPO's NLL denominator)."""
    targets = next_token_targets(batch["labels"])[0]
    seg = segment_ids(batch["seq_lens"], targets.shape[-1])
    chosen = (seg >= 0) & (batch["sides"][seg.clamp_min(0)] == 0)
    return int((targets.ne(IGNORE_INDEX) & chosen).sum())


# -- the reference pass ----------------------------------------------------------------------------


def reference_key(config, model) -> str | None:
    """The cache key of a run's reference log-probabilities: the model and the prepared data by content,
    plus what changes the numbers (tiny seed, precision, attention); None when the model has no content
    digest (a hub id not in the local cache), so nothing is cached under a name that can change."""
    from ..fingerprint import text_digest
    from . import checkpoint as ckpt
    from .setup import resolve_precision

    model_id = ckpt.model_identity(config.model)
    if model_id.endswith("@unpinned"):
        return None
    parts = {
        "version": REFERENCE_CACHE_VERSION,
        "model": model_id,
        "tiny_seed": config.tiny_seed,
        "data": ckpt.data_identity(config.data),
        "precision": resolve_precision(config.precision),
        "attention": getattr(model.config, "_attn_implementation", None),
    }
    return text_digest(json.dumps(parts, sort_keys=True))


def reference_cache_path(key: str) -> Path:
    """Where a reference pass is kept: `<instructkit cache>/reference_logps/<key>.npy`."""
    from ..fingerprint import cache_dir

    return cache_dir() / "reference_logps" / f"{key}.npy"


@torch.no_grad()
def compute_reference_logps(trainer: InstructTrainer, dataset, collator) -> np.ndarray:
    """Summed label log-probabilities of every sequence of `dataset`, in row order, by the policy as it
    is now, before training. With a fresh LoRA adapter that is exactly the base (lora_B starts at zero),
    with no second copy in memory; with a continued adapter it is the adapter it starts from, which is
    the reference TRL's separate `ref_model` copy would give (disabling it would compare to the bare base)."""
    model = trainer.model
    was_training = model.training
    model.eval()
    values = []
    try:
        with trainer.accelerator.autocast():
            for row in dataset:
                batch = {k: v.to(trainer.args.device) for k, v in collator([row]).items()}
                values.append(sequence_logps(model, batch, trainer._slice_logits).logps.double().cpu())
    finally:
        model.train(was_training)
    return torch.cat(values).numpy() if values else np.zeros(0)


def reference_logps(trainer: InstructTrainer, dataset, collator, key: str | None) -> tuple[np.ndarray, bool]:
    """The reference log-probabilities of `dataset`'s sequences: from the cache when `key` is there
    (and fits the data), else computed and cached. Returns (values, whether they came from the cache)."""
    expected = sum(len(s) for s in dataset["seq_lens"])
    path = reference_cache_path(key) if key else None
    if path is not None and path.is_file():
        cached = np.load(path)
        if cached.shape == (expected,):
            return cached, True
    values = compute_reference_logps(trainer, dataset, collator)
    if path is not None and trainer.is_world_process_zero():
        with atomic_file(path, "wb") as handle:
            np.save(handle, values)
    return values, False


def attach_reference(dataset, values: np.ndarray):
    """`dataset` with a `ref_logps` column: each row's sequences' reference log-probabilities."""
    counts = [len(s) for s in dataset["seq_lens"]]
    bounds = np.cumsum([0, *counts])
    rows = [values[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])]
    return dataset.add_column("ref_logps", rows)
