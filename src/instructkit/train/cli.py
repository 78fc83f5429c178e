"""`instructkit train`: options derived from `TrainConfig` (each declared once there), plus `--config`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cli_options import options_from
from ..errors import InstructkitError
from .config import TrainConfig

# Short names users already type; the long name of each is the field's own.
ALIASES = {
    "output_dir": ["-o"],
    "learning_rate": ["--lr"],
    "gradient_accumulation_steps": ["--grad-accum"],
}


def _config(fields: dict, config_file: Path | None) -> TrainConfig:
    """Merge a YAML config file (if given) with the flags that were set, and validate it."""
    import yaml
    from pydantic import ValidationError

    base = yaml.safe_load(config_file.read_text()) if config_file else {}
    merged = {**(base or {}), **fields}
    try:
        return TrainConfig(**merged)
    except ValidationError as exc:
        raise InstructkitError(f"invalid training config: {exc}") from exc


@options_from(TrainConfig, aliases=ALIASES, optional=["data", "output_dir"])
def train_command(
    fields: dict,
    config_file: Path = typer.Option(
        None, "--config", help="YAML with TrainConfig fields; flags override it."
    ),
) -> None:
    """Train a causal LM on prepared data (SFT or instruction pre-training; full, LoRA or QLoRA)."""
    from rich.console import Console

    from .run import train

    result = train(_config(fields, config_file))
    Console().print(
        f"trained {result.global_step} steps, final loss {result.final_loss}; model in {result.output_dir}"
    )


def register(app: typer.Typer) -> None:
    """Add the `train` command to the root app."""
    app.command("train")(train_command)
