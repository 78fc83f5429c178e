"""`train(config)`: a prepared data folder → checkpoints, the final model, metrics.jsonl and a model card.

The output folder is checked first (refuse to clobber, or resume from the last complete checkpoint
when it was made with the same settings, data and model);
`setup` builds the model, data and arguments; `InstructTrainer` runs the loop.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.prepared import read_prepared
from . import checkpoint as ckpt
from .setup import (
    build_model,
    check_objective_fits_data,
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


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: the step it stopped at and the last complete checkpoint a resume continues.

    A KeyboardInterrupt still (so whatever catches those stops as before); the commands catch it to
    print `where()` and the command that resumes.
    """

    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(step, checkpoint)
        self.step, self.checkpoint = step, checkpoint

    def where(self) -> str:
        """`stopped at step 7 (last checkpoint: checkpoint-6)`."""
        last = self.checkpoint.name if self.checkpoint else "none yet, a resume starts from step 0"
        return f"stopped at step {self.step} (last checkpoint: {last})"


@dataclass
class Resume:
    """The checkpoint a run continues (None: it starts fresh), what forcing it changed now, and the
    record of a forced resume in its history (this one's or an earlier one's), kept in every record."""

    checkpoint: Path | None
    forced_changes: list[str]
    forced: dict[str, Any] | None


def prepare_output_dir(config, identity: dict[str, Any], **record: Any) -> Resume:
    """Check the output folder: refuse to clobber, or to resume another run; clean it; record this run.

    A resume continues the last complete checkpoint only when it was made with the same settings,
    data and model (`checkpoint.resume_changes`); otherwise it is refused with each difference named,
    unless `force_resume`. Only rank 0 writes or deletes; every rank computes the same answer.
    """
    from ..errors import InstructkitError

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    existing = ckpt.checkpoints(out)
    resume = config.resume or config.force_resume
    if existing and not (resume or config.overwrite):
        raise InstructkitError(f"{out} already holds checkpoints: pass --resume to continue or --overwrite")
    last = ckpt.last_good_checkpoint(out) if resume else None
    changes = ckpt.resume_changes(last, identity) if last else []
    if changes and not config.force_resume:
        raise InstructkitError(
            f"{out}: will not resume from {last.name}: {'; '.join(changes)}. Resuming would continue "
            "another run as if it were this one: pass --force-resume to continue it anyway, or "
            "--overwrite to start over"
        )
    earlier = (ckpt.read_provenance(last) or {}).get("forced_resume") if last else None
    forced = {"from": last.name, "changes": changes, "earlier": earlier} if changes else earlier
    if is_rank_zero():
        if config.overwrite:
            for c in existing:
                shutil.rmtree(c, ignore_errors=True)
        ckpt.clean_incomplete(out)
        ckpt.truncate_jsonl(out / "metrics.jsonl", ckpt.checkpoint_step(last) if last else 0)
        ckpt.record_run(out, identity, forced_resume=forced, **record)
    return Resume(last, changes, forced)


def train(config, stage_key: dict[str, Any] | None = None) -> TrainResult:
    """Train on a prepared data directory; write checkpoints, final model, metrics and model card.

    `stage_key` (from `instructkit run`) is recorded in every checkpoint beside the run's identity.
    """
    from transformers.trainer_callback import PrinterCallback

    from ..models.adapters import check_adapter_base
    from ..progress import log_event
    from .callbacks import MetricsJsonlCallback, RichProgressCallback
    from .model_card import write_model_card

    data = read_prepared(config.data)
    check_objective_fits_data(config, data)
    # continuing an adapter: only on the base it was trained on (or explicitly allowed, with a warning
    # kept in train_config.json and the model card); refused before the output folder is touched
    base_warnings = check_adapter_base(config.model, config.allow_base_mismatch)
    resume = prepare_output_dir(config, ckpt.run_identity(config), stage=stage_key)
    resume_from = resume.checkpoint
    precision = resolve_precision(config.precision)
    model, tokenizer = build_model(config, data)
    args = training_arguments(config, precision, data.packed)
    dataset, collator = training_dataset(config, data, model, tokenizer)
    metrics_path = Path(config.output_dir) / "metrics.jsonl"
    trainer_class, extra = _trainer_class(config)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        packed=data.packed,
        callbacks=[MetricsJsonlCallback(metrics_path)],
        **extra,
    )
    if config.objective == "dpo":
        trainer.train_dataset = _with_reference(trainer, config, dataset, collator)
    trainer.remove_callback(PrinterCallback)
    if config.progress:
        trainer.add_callback(RichProgressCallback())
    batch_tokens = effective_batch_tokens(dataset, config, args.world_size)
    if trainer.is_world_process_zero():
        if resume.forced_changes:
            changed = "; ".join(resume.forced_changes)
            log_event("train", f"warning: resuming anyway (--force-resume): {changed}")
        for warning in base_warnings:
            log_event("train", f"warning: {warning}")
        log_event(
            "train",
            f"effective batch ≈ {batch_tokens:,.0f} tokens/step ({args.world_size} rank(s) × "
            f"{config.gradient_accumulation_steps} accumulation × {config.micro_batch_size} row(s)); "
            f"{'packed, padding-free' if data.packed else 'padded, length-grouped'}; "
            f"{describe_precision(precision, model)}"
            + (f"; resuming from {resume_from.name}" if resume_from else ""),
        )
        run_config = resolved_config(config, precision, batch_tokens, args)
        run_config["resolved"]["precision_ran"] = describe_precision(precision, model)
        if resume.forced:
            run_config["forced_resume"] = resume.forced
        if base_warnings:
            run_config["warnings"] = base_warnings
        ckpt.write_json_atomic(Path(config.output_dir) / "train_config.json", run_config)
    try:
        output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:  # checkpoints are published atomically: the last complete one is sound
        step = trainer.state.global_step
        raise TrainingInterrupted(step, ckpt.last_good_checkpoint(config.output_dir)) from None
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
        write_model_card(config, data, result, trainer.state.log_history, base_warnings)
    return result


def _trainer_class(config) -> tuple[type[InstructTrainer], dict[str, Any]]:
    """The Trainer for the objective: `PreferenceTrainer` (with its loss settings) for dpo, else `InstructTrainer`."""
    if config.objective != "dpo":
        return InstructTrainer, {}
    from .preference import PreferenceTrainer

    return PreferenceTrainer, {"settings": config}


def _with_reference(trainer: InstructTrainer, config, dataset, collator):
    """The dataset with its reference log-probabilities (cached by model and data content); reference-free
    losses need none."""
    from ..progress import log_event
    from .preference import REFERENCE_FREE, attach_reference, reference_key, reference_logps

    if config.dpo_loss in REFERENCE_FREE:
        return dataset
    values, cached = reference_logps(trainer, dataset, collator, reference_key(config, trainer.model))
    if trainer.is_world_process_zero():
        how = "read from the cache" if cached else "computed"
        log_event("train", f"reference log-probabilities of {len(values)} sequences {how}")
    return attach_reference(dataset, values)


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
