"""A TrainConfig mapped onto what the Trainer needs: the model (LoRA applied, packing checked), the
dataset and its collator, `TrainingArguments`, the precision, and the config as it ran."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..data.prepared import PreparedData


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


def is_rank_zero() -> bool:
    """Rank 0 of a torchrun/accelerate launch (or a single process); set before any process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


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
    if is_rank_zero():
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


def training_dataset(config, data: PreparedData, model, tokenizer):
    """The dataset the Trainer iterates (padded rows get a `length` column for grouping) and its collator."""
    from .attention import fixed_row_options
    from .collators import PackedCollator, PaddedCollator

    dataset = data.dataset
    if not data.packed and "length" not in dataset.column_names:
        dataset = dataset.map(lambda r: {"length": len(r["input_ids"])}, desc="row lengths")
    collator = (
        PackedCollator(config.objective, **fixed_row_options(model, data.meta, config.micro_batch_size))
        if data.packed
        else PaddedCollator(tokenizer.pad_token_id, config.objective)
    )
    return dataset, collator


def effective_batch_tokens(dataset, config, world_size: int) -> float:
    """Mean tokens per optimizer step: ranks × accumulation × rows per micro-batch × mean row length."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(dataset.data.column("input_ids"))
    mean_row = pc.mean(lengths).as_py() or 0.0
    return world_size * config.gradient_accumulation_steps * config.micro_batch_size * mean_row


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
