"""`InstructTrainer` (what `transformers.Trainer` lacks for packed instruction tuning) and `train(config)`.

The Trainer already gives us the loop, resume with optimizer, scheduler, RNG and data-order restore,
and DDP/FSDP/DeepSpeed through accelerate. We add:
- a loss that is the summed token cross-entropy over the trainable-token count of the whole
  optimizer step (all micro-batches, all ranks), for any model, so a step's loss and update do not
  depend on how it is split into micro-batches or packs;
- logits projected onto the vocabulary only at positions that carry a label (`logits_to_keep`);
- the packed-row guard: no attention mask, no KV cache, isolation checked on the real model;
- atomic checkpoints (see checkpoint.py), token throughput in the logs, metrics.jsonl, model card.
"""

from __future__ import annotations

import inspect
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from ..data.prepared import IGNORE_INDEX, PreparedData, read_prepared
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


@dataclass
class TrainResult:
    """What a finished run produced: where, how far, and how well."""

    output_dir: Path
    metrics_path: Path
    global_step: int
    final_loss: float | None  # the last logged training loss
    train_loss: float  # mean training loss over this session's steps
    resumed_from: Path | None
    effective_batch_tokens: float  # mean tokens per optimizer step across all ranks
    train_runtime: float  # seconds inside the training loop (this session)


def resolve_precision(precision: str) -> str:
    """auto → bf16 on a CUDA GPU that supports it, else fp32."""
    if precision != "auto":
        return precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def describe_precision(precision: str, model) -> str:
    """What a run computes in, from the weights actually trained: e.g. `bf16 autocast, fp32 master weights`."""
    dtypes = {p.dtype for p in model.parameters() if p.requires_grad}
    weights = "/".join(sorted(str(d).removeprefix("torch.").replace("float", "fp") for d in dtypes)) or "none"
    if precision in ("bf16", "fp16"):
        return f"{precision} autocast, {weights} master weights"
    return f"{precision} compute, {weights} weights"


def _is_rank_zero() -> bool:
    """Rank 0 of a torchrun/accelerate launch (or a single process); set before any process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def prepare_output_dir(config) -> Path | None:
    """Check the output folder: refuse to clobber, or clean it for resume; return the checkpoint to resume.

    Only rank 0 deletes anything; every rank computes the same answer from what is complete on disk.
    """
    from ..errors import InstructkitError

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    existing = ckpt.checkpoints(out)
    if existing and not (config.resume or config.overwrite):
        raise InstructkitError(f"{out} already holds checkpoints: pass --resume to continue or --overwrite")
    last = ckpt.last_good_checkpoint(out) if config.resume else None
    if _is_rank_zero():
        if config.overwrite:
            for c in existing:
                shutil.rmtree(c, ignore_errors=True)
        ckpt.clean_incomplete(out)
        ckpt.truncate_jsonl(out / "metrics.jsonl", ckpt.checkpoint_step(last) if last else 0)
    return last


def build_model(config, data: PreparedData):
    """Load the model and tokenizer, apply LoRA/QLoRA, and check packed isolation when packing."""
    from rich.console import Console

    from ..models.identity import check_data_matches_model, check_vocab_fits
    from ..models.loading import TRAIN_DTYPE, check_max_length, load_model_and_tokenizer
    from .attention import training_attention
    from .collators import assert_packed_isolation
    from .lora import apply_lora

    tokenizer_dir = str(data.tokenizer_dir) if data.tokenizer_dir else None
    max_length = int(data.meta.get("max_length", 4096))
    notes = check_data_matches_model(
        str(config.data), data.meta, tokenizer_dir, config.model, config.trust_remote_code
    )
    check_max_length(config.model, max_length, config.trust_remote_code)
    model, tokenizer = load_model_and_tokenizer(
        config.model,
        tokenizer_dir,
        trust_remote_code=config.trust_remote_code,
        attn_implementation=training_attention(config.attn_implementation, data.packed),
        quantize_4bit=config.method == "qlora",
        max_length=max_length,
        tiny_seed=config.tiny_seed,
        dtype=TRAIN_DTYPE,  # fp32 master weights whatever the checkpoint's dtype; bf16 runs autocast
    )
    check_vocab_fits(tokenizer, model, config.model)
    if _is_rank_zero():
        for note in notes:
            Console(stderr=True).print(f"[yellow]note:[/] {note}", highlight=False)
    model.config.use_cache = False  # a KV cache in the forward pass disables packed-sequence masks
    if config.method in ("lora", "qlora"):
        model = apply_lora(
            model,
            config.lora_r,
            config.lora_alpha,
            config.lora_dropout,
            config.lora_target_modules,
            qlora=config.method == "qlora",
        )
    if data.packed:
        assert_packed_isolation(model)
    return model, tokenizer


def _checkpointing_arguments(arguments_class, enabled: bool) -> dict[str, Any]:
    """Activation checkpointing under the name this transformers has (`activation_` since 5.2x, else `gradient_`)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(arguments_class)}
    prefix = "activation" if "activation_checkpointing" in names else "gradient"
    kwargs = {"use_reentrant": False} if enabled else None
    return {f"{prefix}_checkpointing": enabled, f"{prefix}_checkpointing_kwargs": kwargs}


def training_arguments(config, precision: str, packed: bool):
    """TrainingArguments from a TrainConfig (optimizer preset resolved)."""
    from transformers import TrainingArguments

    from .config import HF_OPTIM

    opt = config.optimizer_settings()
    return TrainingArguments(
        output_dir=str(config.output_dir),
        per_device_train_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=opt.learning_rate,
        lr_scheduler_type=opt.lr_scheduler,
        warmup_steps=opt.warmup_ratio,
        weight_decay=opt.weight_decay,
        optim=HF_OPTIM[opt.optimizer],
        max_grad_norm=config.max_grad_norm,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        **_checkpointing_arguments(TrainingArguments, config.gradient_checkpointing),
        seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=config.report_to or "none",
        disable_tqdm=True,
        remove_unused_columns=False,  # collators pick their columns; packed rows keep seq_lens/example_ids
        train_sampling_strategy="random" if packed else "group_by_length",
        length_column_name="length",
        average_tokens_across_devices=True,
        dataloader_num_workers=config.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),  # without it, CPU ranks under torchrun do not form a DDP group
        use_cache=False,
    )


def effective_batch_tokens(dataset, config, world_size: int) -> float:
    """Mean tokens per optimizer step: ranks × accumulation × rows per micro-batch × mean row length."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(dataset.data.column("input_ids"))
    mean_row = pc.mean(lengths).as_py() or 0.0
    return world_size * config.gradient_accumulation_steps * config.micro_batch_size * mean_row


def train(config) -> TrainResult:
    """Train on a prepared data directory; write checkpoints, final model, metrics and model card."""
    from rich.console import Console
    from transformers.trainer_callback import PrinterCallback

    from .attention import fixed_row_options
    from .callbacks import MetricsJsonlCallback, RichProgressCallback
    from .collators import PackedCollator, PaddedCollator
    from .model_card import write_model_card

    data = read_prepared(config.data)
    resume_from = prepare_output_dir(config)
    precision = resolve_precision(config.precision)
    model, tokenizer = build_model(config, data)
    args = training_arguments(config, precision, data.packed)
    dataset = data.dataset
    if not data.packed and "length" not in dataset.column_names:
        dataset = dataset.map(lambda r: {"length": len(r["input_ids"])}, desc="row lengths")
    collator = (
        PackedCollator(config.objective, **fixed_row_options(model, data.meta, config.micro_batch_size))
        if data.packed
        else PaddedCollator(tokenizer.pad_token_id, config.objective)
    )
    metrics_path = Path(config.output_dir) / "metrics.jsonl"
    trainer = InstructTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        packed=data.packed,
        callbacks=[MetricsJsonlCallback(metrics_path)],
    )
    trainer.remove_callback(PrinterCallback)
    if config.progress:
        trainer.add_callback(RichProgressCallback())
    batch_tokens = effective_batch_tokens(dataset, config, args.world_size)
    if trainer.is_world_process_zero():
        Console(stderr=True).print(
            f"effective batch ≈ {batch_tokens:,.0f} tokens/step ({args.world_size} rank(s) × "
            f"{config.gradient_accumulation_steps} accumulation × {config.micro_batch_size} row(s)); "
            f"{'packed, padding-free' if data.packed else 'padded, length-grouped'}; "
            f"{describe_precision(precision, model)}"
            + (f"; resuming from {resume_from.name}" if resume_from else "")
        )
        run_config = resolved_config(config, precision, batch_tokens, args)
        run_config["resolved"]["precision_ran"] = describe_precision(precision, model)
        ckpt.write_json_atomic(Path(config.output_dir) / "train_config.json", run_config)
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    save_final(trainer, config, tokenizer)
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    result = TrainResult(
        output_dir=Path(config.output_dir),
        metrics_path=metrics_path,
        global_step=trainer.state.global_step,
        final_loss=losses[-1] if losses else None,
        train_loss=float(output.training_loss),
        resumed_from=resume_from,
        effective_batch_tokens=batch_tokens,
        train_runtime=float(output.metrics.get("train_runtime", 0.0)),
    )
    if trainer.is_world_process_zero():
        write_model_card(config, data, result, trainer.state.log_history)
    return result


def resolved_config(config, precision: str, batch_tokens: float, args) -> dict:
    """The config as run: every field, the resolved optimizer, precision, world size and batch in tokens."""
    import transformers

    return {
        **config.model_dump(mode="json"),
        "resolved": {
            **config.optimizer_settings().model_dump(),
            "precision": precision,
            "world_size": args.world_size,
            "effective_batch_tokens": batch_tokens,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
    }


def save_final(trainer: InstructTrainer, config, tokenizer) -> None:
    """Save the final model (safetensors; adapters only unless merged) and the tokenizer with its template."""
    out = str(config.output_dir)
    if config.merge_lora:
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        if trainer.args.should_save:
            merged.save_pretrained(out, safe_serialization=True)
    else:
        trainer.save_model(out)
    if trainer.args.should_save:
        tokenizer.save_pretrained(out)
