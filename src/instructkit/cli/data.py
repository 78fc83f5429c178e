"""`instructkit data …`: prepare (tokenize, mask, pack) and show; build/splits register from tasks_cli."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..data.prepare_config import PrepareConfig
from ..executors import ExecutorSettings
from .options import config_from, options_from

data_app = typer.Typer(help="Build, prepare and inspect instruction data.", no_args_is_help=True)
console = Console()


# Names users already type (TRL's and axolotl's; the CLI reads underscores as dashes).
ALIASES = {
    "input_format": ["--format"],
    "max_length": ["--max-seq-length", "--sequence-len"],
    "pack": ["--packing", "--sample-packing"],
}


@data_app.command("prepare")
@options_from(PrepareConfig, ExecutorSettings, arguments=["sources"], aliases=ALIASES)
def prepare_command(fields: dict, where: ExecutorSettings) -> None:
    """Tokenize conversations with exact assistant-only masks and (optionally) pack them."""
    from ..data.prepare import prepare

    cfg = config_from(PrepareConfig, fields)
    if where.checked() == "ray":
        from ..executors.ray_prepare import prepare_ray

        stats = prepare_ray(cfg, where.ray_address)
    else:
        stats = prepare(cfg)
    print_stats(stats, f"prepared → {cfg.out}")
    from ..data.prepare import length_warning

    if warning := length_warning(stats, cfg):
        console.print(f"[yellow]{escape(warning)}[/]", highlight=False, soft_wrap=True)


def print_stats(stats: dict, title: str) -> None:
    """Print a stats dict as a two-column table (nested dicts flattened with dots), each count named in
    the words the run report uses (`prepare.STAT_LABELS`) followed by its stats.json key."""
    from ..data.prepare import STAT_LABELS

    table = Table(title=title, show_header=False)
    for key, value in _flatten(stats):
        if isinstance(value, list):  # per-file lists stay in stats.json; the table shows how many
            value = f"{len(value)} (listed in stats.json)"
        label = STAT_LABELS.get(key, key)
        label = label if label == key else f"{label} ({key})"  # the stats.json key stays greppable
        table.add_row(label, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
    for skipped in stats.get("skipped_files") or []:
        console.print(f"skipped {skipped['path']}: {skipped['reason']}", highlight=False)


def _flatten(d: dict, prefix: str = ""):
    for key, value in d.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@data_app.command("show")
def show_command(
    directory: Path = typer.Argument(..., help="A directory written by `data prepare` or `data build`."),
    n: int = typer.Option(3, "-n", help="How many rows to show."),
    task: str | None = typer.Option(None, "--task", help="Only rows of this task (conversation datasets)."),
) -> None:
    """Show rows: conversations as turns, tokenized rows with trainable tokens highlighted."""
    from ..data.show import show_rows

    show_rows(directory, n=n, task=task, console=console)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
