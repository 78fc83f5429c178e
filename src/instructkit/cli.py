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
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

# Options every command accepts, anywhere on the command line (hoisted before the subcommand).
GLOBAL_FLAGS = {"--quiet", "-q", "--debug"}
GLOBAL_VALUED = {"--log-format", "--log-interval"}


@app.callback()
def _global_options(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output, only results and errors."),
    log_format: str = typer.Option("text", "--log-format", help="text, or json: one JSON object per line."),
    log_interval: float = typer.Option(
        30.0, "--log-interval", help="Seconds between progress lines when not on a terminal."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show the Python traceback of unexpected errors."),
) -> None:
    """Instruction tuning end to end: data → mixture → masks → packing → training → evaluation."""
    from .progress import configure

    if log_format not in ("text", "json"):
        raise typer.BadParameter("--log-format must be text or json")
    configure(quiet=quiet, log_format=log_format, interval=log_interval)  # type: ignore[arg-type]


def hoist_global_options(argv: list[str]) -> list[str]:
    """Move global options given after the subcommand to the front, where Typer reads them."""
    hoisted, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if arg in GLOBAL_FLAGS:
            hoisted.append(arg)
        elif name in GLOBAL_VALUED:
            hoisted.extend([arg] if "=" in arg else argv[i : i + 2])
            i += 0 if "=" in arg else 1
        else:
            rest.append(arg)
        i += 1
    return hoisted + rest


# Modules that each expose `register(app: typer.Typer) -> None`.
COMMAND_MODULES = [
    "instructkit.data.cli",
    "instructkit.data.tasks_cli",
    "instructkit.train.cli",
    "instructkit.evaluate.cli",
    "instructkit.synth.cli",
    "instructkit.pipeline_cli",
    "instructkit.doctor_cli",
    "instructkit.models_cli",
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
    """Console-script entry: errors print one clear line; a traceback only with --debug."""
    argv = hoist_global_options(sys.argv[1:])
    debug = "--debug" in argv
    try:
        app(args=argv)
    except InstructkitError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]: rerun the same command to resume where it stopped")
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        where = _innermost_frame(exc)
        err_console.print(
            f"[bold red]error:[/] {type(exc).__name__}: {exc} (at {where}); rerun with --debug for the traceback",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


def _innermost_frame(exc: BaseException) -> str:
    """`file:line` where an unexpected error was raised, for the one-line message."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "unknown location"
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
