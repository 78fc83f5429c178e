"""A TrainConfig mapped onto what the Trainer needs: the model (LoRA applied, packing checked), the
dataset and its collator, `TrainingArguments`, the precision, and the config as it ran."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..data.prepared import PreparedData
from ..errors import InstructkitError


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
    """Load the model and tokenizer, apply LoRA/QLoRA, and check packed isolation when packing.

    An adapter as `config.model` has had its base checked by the caller (`run.train`, which records
    the warnings in train_config.json and the model card).
    """
    from ..models.identity import check_data_matches_model, check_vocab_fits
    from ..models.loading import TRAIN_DTYPE, check_max_length, load_model_and_tokenizer
    from ..progress import log_event
    from .attention import training_attention
    from .collators import assert_seq2seq_isolation, packed_attention_preflight
    from .lora import adapt_model, adapter_notes, record_base

    tokenizer_dir = str(data.tokenizer_dir) if data.tokenizer_dir else None
    max_length = int(data.meta.get("max_length", 4096))
    notes = check_data_matches_model(
        str(config.data), data.meta, tokenizer_dir, config.model, config.trust_remote_code
    )
    check_max_length(config.model, max_length, config.trust_remote_code)
    seq2seq = data.meta.get("model_kind") == "seq2seq"  # encoder-decoder pairs (data/seq2seq.py)
    adapter, base = _adapter_and_base(config.model)  # an adapter loads as its base, then `adapt_model`
    notes += adapter_notes(config, adapter, base)
    attn = (
        seq2seq_attention(config.attn_implementation)
        if seq2seq
        else training_attention(config.attn_implementation, data.packed)
    )
    try:
        model, tokenizer = load_model_and_tokenizer(
            base,
            tokenizer_dir or (str(config.model) if adapter else None),  # the adapter folder's tokenizer
            trust_remote_code=config.trust_remote_code,
            attn_implementation=attn,
            quantize_4bit=config.method == "qlora",
            max_length=max_length,
            tiny_seed=config.tiny_seed,
            dtype=TRAIN_DTYPE,  # fp32 master weights whatever the checkpoint's dtype; bf16 runs autocast
        )
    except InstructkitError as exc:
        if data.packed and attn and repr(attn) in str(exc):  # e.g. GPT-Neo: a fixed table of attentions
            raise InstructkitError(
                f"{exc}: this model cannot take the attention {attn!r} that keeps packed examples apart; "
                "prepare the data without --pack"
            ) from exc
        raise
    check_vocab_fits(tokenizer, model, config.model)
    check_model_kind(config, data, model)
    if is_rank_zero():
        for note in notes:
            log_event("train", f"note: {note}")
        log_event("train", describe_model_kind(model))
        record_base(config, model, adapter)  # before LoRA wraps it: the base, as the adapter will need it
    model.config.use_cache = False  # a KV cache in the forward pass disables packed-sequence masks
    model = adapt_model(model, config, adapter)  # a new LoRA, the adapter continued or merged (full)
    if data.packed and seq2seq and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InstructkitError(
            "packed encoder-decoder rows train in one process only for now (the encoder runs outside "
            "the distributed wrapper); prepare the data without --pack or train on one device"
        )
    if data.packed and seq2seq:
        assert_seq2seq_isolation(model)  # the three 4-D masks, checked on the real model
    elif data.packed:
        packed_attention_preflight(model, config.attn_implementation)  # varlen kept only if isolated
    return model, tokenizer


def seq2seq_attention(requested: str | None) -> str:
    """The attention an encoder-decoder run uses: the one asked for, else sdpa (T5's packed rows need
    4-D masks, which sdpa and eager take; `collators.assert_seq2seq_isolation` refuses any other)."""
    return requested or "sdpa"


# T5-family model types: pretrained in bf16, their activations overflow fp16 (inf/NaN losses).
FP16_OVERFLOW_TYPES = ("t5", "mt5", "umt5", "longt5", "switch_transformers")


def check_model_kind(config, data: PreparedData, model) -> None:
    """Refuse data prepared for one kind of model (causal / seq2seq) trained on the other, and fp16 for
    T5, whose activations overflow in fp16 (use bf16 where the hardware has it, else fp32)."""
    from ..models.loading import model_kind

    data_kind = data.meta.get("model_kind", "causal")
    kind = model_kind(model.config)
    if kind != data_kind:
        raise InstructkitError(
            f"{config.data}: prepared for a {data_kind} model, but {config.model!r} is {kind}; prepare the "
            f"data with this model's tokenizer (`data prepare --tokenizer {config.model}`)"
        )
    if kind == "seq2seq" and config.objective != "sft":
        raise InstructkitError(
            f"--objective {config.objective} is not supported for encoder-decoder models; use sft"
        )
    model_type = getattr(model.config, "model_type", "")
    if resolve_precision(config.precision) == "fp16" and model_type in FP16_OVERFLOW_TYPES:
        raise InstructkitError(
            f"--precision fp16 refused for {config.model!r} ({model_type}): T5 models were pretrained in "
            "bf16 and their activations overflow fp16's range (inf/NaN losses); use --precision bf16 "
            "on hardware that has it, else fp32"
        )


def describe_model_kind(model) -> str:
    """The log line that says which kind of model runs and how its labels are read."""
    from ..models.loading import model_kind

    name = type(model).__name__
    if model_kind(model.config) == "seq2seq":
        return (
            f"model: encoder-decoder ({name}); loss on the decoder's targets, decoder inputs = targets "
            "shifted right from the decoder start token"
        )
    return f"model: decoder-only ({name}); loss on the labelled next tokens"


def _adapter_and_base(model: str) -> tuple[Path | None, str]:
    """(the adapter-only folder `model` names, its base) or (None, `model`) for any other model."""
    from ..models.adapters import adapter_folder
    from ..models.loading import adapter_base

    base = adapter_base(model)
    return (None, model) if base is None else (adapter_folder(model), base)


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
    from .collators import (
        PackedCollator,
        PaddedCollator,
        PreferenceCollator,
        Seq2SeqPackedCollator,
        Seq2SeqPaddedCollator,
    )

    dataset = data.dataset
    if data.kind == "preference":  # rows of whole pairs, each side a sequence (data/preference_rows.py)
        options = fixed_row_options(model, data.meta, config.micro_batch_size)
        return dataset, PreferenceCollator("sft", **options)
    if data.meta.get("model_kind") == "seq2seq":  # (input, target) rows, data/seq2seq.py
        start = model.config.decoder_start_token_id
        collator = Seq2SeqPackedCollator(start, tokenizer.pad_token_id) if data.packed else None
        return dataset, collator or Seq2SeqPaddedCollator(tokenizer.pad_token_id)
    if not data.packed and "length" not in dataset.column_names:
        dataset = dataset.map(lambda r: {"length": len(r["input_ids"])}, desc="row lengths")
    collator = (
        PackedCollator(config.objective, **fixed_row_options(model, data.meta, config.micro_batch_size))
        if data.packed
        else PaddedCollator(tokenizer.pad_token_id, config.objective)
    )
    return dataset, collator


def check_objective_fits_data(config, data: PreparedData) -> None:
    """`objective: dpo` trains on preference pairs, and preference pairs only with it."""
    if config.objective == "dpo" and data.kind != "preference":
        raise InstructkitError(
            f"{config.data}: --objective dpo needs preference data: prepare rows with chosen and rejected "
            "replies (`instructkit data prepare` detects them)"
        )
    if config.objective != "dpo" and data.kind == "preference":
        raise InstructkitError(
            f"{config.data}: holds chosen/rejected preference pairs: train them with --objective dpo"
        )


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
