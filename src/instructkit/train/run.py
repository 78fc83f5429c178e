"""`train(config)`: a prepared data folder → checkpoints, the final model, metrics.jsonl and a model card.

The output folder is checked first (refuse to clobber, or resume from the last complete checkpoint);
`setup` builds the model, data and arguments; `InstructTrainer` runs the loop.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..data.prepared import read_prepared
from . import checkpoint as ckpt
from .setup import (
    build_model,
    describe_precision,
    effective_batch_tokens,
    is_rank_zero,
    resolve_precision,
    resolved_config,
    training_arguments,
    training_dataset,
)
from .trainer import InstructTrainer


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
    if is_rank_zero():
        if config.overwrite:
            for c in existing:
                shutil.rmtree(c, ignore_errors=True)
        ckpt.clean_incomplete(out)
        ckpt.truncate_jsonl(out / "metrics.jsonl", ckpt.checkpoint_step(last) if last else 0)
    return last


def train(config) -> TrainResult:
    """Train on a prepared data directory; write checkpoints, final model, metrics and model card."""
    from rich.console import Console
    from transformers.trainer_callback import PrinterCallback

    from .callbacks import MetricsJsonlCallback, RichProgressCallback
    from .model_card import write_model_card

    data = read_prepared(config.data)
    resume_from = prepare_output_dir(config)
    precision = resolve_precision(config.precision)
    model, tokenizer = build_model(config, data)
    args = training_arguments(config, precision, data.packed)
    dataset, collator = training_dataset(config, data, model, tokenizer)
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
