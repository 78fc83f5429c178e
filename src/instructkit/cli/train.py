"""`instructkit train`: options derived from `TrainConfig` (each declared once there), plus `--config`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from ..settings_io import load_yaml, merge
from ..train.config import TrainConfig
from .options import options_from, validate_options

# Names users already type (short ones; TRL's and axolotl's, whose underscores the CLI reads as dashes);
# the first long name of each is the field's own.
ALIASES = {
    "model": ["--model-name-or-path", "--base-model"],
    "output_dir": ["-o"],
    "learning_rate": ["--lr"],
    "lr_scheduler": ["--lr-scheduler-type"],
    "epochs": ["--num-train-epochs", "--num-epochs"],
    "micro_batch_size": ["--per-device-train-batch-size"],
    "gradient_accumulation_steps": ["--grad-accum"],
}


def _config(fields: dict, config_file: Path | None) -> TrainConfig:
    """Merge a YAML config file (if given) with the flags that were set, and validate it."""
    base = load_yaml(config_file, "training config") if config_file else {}
    return validate_options(TrainConfig, merge(base, fields), config_file or "train options")


@options_from(TrainConfig, aliases=ALIASES, optional=["data", "output_dir"])
def train_command(
    fields: dict,
    config_file: Path = typer.Option(
        None, "--config", help="YAML with TrainConfig fields; flags override it."
    ),
) -> None:
    """Train a causal LM on prepared data (SFT or instruction pre-training; full, LoRA or QLoRA)."""
    from rich.console import Console
    from rich.markup import escape

    from ..progress import format_number

    config = _config(fields, config_file)  # a missing or bad option fails before torch is imported
    from ..train.run import TrainingInterrupted, train
    from ..train.setup import is_rank_zero

    try:
        result = train(config)
    except TrainingInterrupted as stop:
        if not is_rank_zero():  # every rank stops; one says so
            raise typer.Exit(130) from None
        Console(stderr=True).print(
            escape(f"{stop.where()}; resume with: {resume_command(sys.argv[1:], config.overwrite)}"),
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    Console().print(
        f"trained {result.global_step} steps, final loss {format_number(result.final_loss)}; "
        f"model in {result.output_dir}",
        soft_wrap=True,
    )


def resume_command(args: list[str], overwrite: bool) -> str:
    """The command line that continues this run: the same options, `--resume` instead of `--overwrite`."""
    kept = [a for a in args if a not in ("--overwrite", "--no-resume")]
    if "--resume" not in kept and "--force-resume" not in kept:
        kept.append("--resume")
    if overwrite and "--config" in args:  # the file may set it: a resume must not clear the checkpoints
        kept.append("--no-overwrite")
    return shlex.join(["instructkit", *kept])


def register(app: typer.Typer) -> None:
    """Add the `train` command to the root app."""
    app.command("train")(train_command)
