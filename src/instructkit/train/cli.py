"""`instructkit train`: a thin Typer front end over `TrainConfig` and `train`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InstructkitError


def _config(fields: dict, config_file: Path | None):
    """Merge a YAML config file (if given) with the flags that were set, and validate it."""
    import yaml
    from pydantic import ValidationError

    from .config import TrainConfig

    base = yaml.safe_load(config_file.read_text()) if config_file else {}
    merged = {**(base or {}), **{k: v for k, v in fields.items() if v is not None}}
    try:
        return TrainConfig(**merged)
    except ValidationError as exc:
        raise InstructkitError(f"invalid training config: {exc}") from exc


def _targets(value: str | None):
    if value is None or value == "all-linear":
        return value
    return [m.strip() for m in value.split(",") if m.strip()]


def train_command(
    data: Path = typer.Option(None, "--data", help="Directory written by `instructkit data prepare`."),
    output_dir: Path = typer.Option(None, "--output-dir", "-o", help="Where checkpoints and the model go."),
    model: str = typer.Option(
        None, "--model", help="tiny:<nano|micro|small|base>, a local path or a hub id."
    ),
    config_file: Path = typer.Option(
        None, "--config", help="YAML with TrainConfig fields; flags override it."
    ),
    objective: str = typer.Option(None, help="sft (labelled tokens) or pretrain (every token)."),
    method: str = typer.Option(None, help="full, lora or qlora."),
    lora_r: int = typer.Option(None, help="LoRA rank."),
    lora_alpha: int = typer.Option(None, help="LoRA alpha."),
    lora_target_modules: str = typer.Option(None, help="all-linear or comma-separated module names."),
    merge_lora: bool = typer.Option(None, "--merge-lora/--no-merge-lora", help="Save merged weights."),
    preset: str = typer.Option(None, help="Optimizer preset: tulu (AdamW, linear) or flan (Adafactor)."),
    optimizer: str = typer.Option(None, help="Override: adamw or adafactor."),
    learning_rate: float = typer.Option(None, "--lr", "--learning-rate", help="Override the peak LR."),
    lr_scheduler: str = typer.Option(None, help="Override: linear, cosine, constant, constant_with_warmup."),
    warmup_ratio: float = typer.Option(None, help="Warm-up fraction of steps."),
    epochs: float = typer.Option(None, help="Passes over the data."),
    max_steps: int = typer.Option(None, help="Optimizer steps (overrides epochs)."),
    micro_batch_size: int = typer.Option(None, help="Rows per micro-batch (packed rows are concatenated)."),
    gradient_accumulation_steps: int = typer.Option(None, "--grad-accum", help="Micro-batches per step."),
    gradient_checkpointing: bool = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing"),
    precision: str = typer.Option(None, help="auto, bf16, fp16 or fp32."),
    seed: int = typer.Option(None, help="Data order / dropout seed."),
    save_steps: int = typer.Option(None, help="Checkpoint every N steps."),
    save_total_limit: int = typer.Option(None, help="Keep the last K checkpoints."),
    logging_steps: int = typer.Option(None, help="Log every N steps."),
    resume: bool = typer.Option(None, "--resume/--no-resume", help="Continue from the last good checkpoint."),
    overwrite: bool = typer.Option(None, "--overwrite/--no-overwrite", help="Discard existing checkpoints."),
    report_to: list[str] = typer.Option(None, "--report-to", help="tensorboard, wandb (repeatable)."),
    trust_remote_code: bool = typer.Option(None, "--trust-remote-code/--no-trust-remote-code"),
    attn_implementation: str = typer.Option(None, help="sdpa, eager, flash_attention_2, ..."),
    progress: bool = typer.Option(None, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """Train a causal LM on prepared data (SFT or instruction pre-training; full, LoRA or QLoRA)."""
    fields = dict(locals())  # first statement: exactly the parameters
    from rich.console import Console

    from .trainer import train

    fields.pop("config_file")
    fields["lora_target_modules"] = _targets(lora_target_modules)
    fields["report_to"] = report_to or None
    config = _config(fields, config_file)
    result = train(config)
    Console().print(
        f"trained {result.global_step} steps, final loss {result.final_loss}; model in {result.output_dir}"
    )


def register(app: typer.Typer) -> None:
    """Add the `train` command to the root app."""
    app.command("train")(train_command)
