"""The `instructkit` command: one Typer app; each subcommand is a thin call into a module.

Each area registers its own commands from its own `*cli.py` module (`register(app)`), so the
areas stay independent: data (prepare/show/build/splits), tasks, train, eval, synth, run.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from .errors import InstructkitError

app = typer.Typer(
    name="instructkit",
    help="Instruction tuning end to end: data → mixture → masks → packing → training → evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

# Modules that each expose `register(app: typer.Typer) -> None`.
COMMAND_MODULES = [
    "instructkit.data.cli",
    "instructkit.data.tasks_cli",
    "instructkit.train.cli",
    "instructkit.evaluate.cli",
    "instructkit.synth.cli",
    "instructkit.pipeline_cli",
]


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # area not built yet in this checkout
                continue
            raise
        module.register(app)


_register_all()


def main() -> None:
    """Console-script entry: known errors print one clear line, no traceback."""
    try:
        app()
    except InstructkitError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
