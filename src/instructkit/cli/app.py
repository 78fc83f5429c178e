"""The `instructkit` command: one Typer app; each subcommand is a thin call into a module.

Each command group registers itself from its own module in this package (`register(app)`), so the
groups stay independent: data (prepare/show/build/splits), tasks, train, eval, synth, run.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer
from rich.console import Console
from typer import rich_utils
from typer.core import TyperOption

from ..errors import InstructkitError
from ..progress import DEFAULT_LOG_INTERVAL

app = typer.Typer(
    name="instructkit",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

# Help written to a file or a pipe: wide enough that no option name is cut (`--gradient-accu…`).
HELP_WIDTH_OFF_TERMINAL = 200

# Spellings of other tools with no one-to-one option here: what to type instead (underscores as dashes).
FOREIGN_OPTIONS = {
    "--resume-from-checkpoint": "instructkit resumes from the last complete checkpoint in --output-dir: "
    "pass --resume (and --force-resume to accept changed settings)",
    "--num-fewshot": "shots are set per task: --tasks gsm8k:num_fewshot=8 (lm-eval's spec options)",
    "--model-args": "pass the model itself: --model PATH_OR_HUB_ID, with --backend hf|vllm|openai",
    "--bf16": "pass --precision bf16",
    "--fp16": "pass --precision fp16",
}

# Options every command accepts, anywhere on the command line (hoisted before the subcommand).
GLOBAL_FLAGS = {"--quiet", "-q", "--debug"}
GLOBAL_VALUED = {"--log-format", "--log-interval"}


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"instructkit {version('instructkit')}")
        raise typer.Exit()


@app.callback()
def _global_options(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output, only results and errors."),
    log_format: str = typer.Option("text", "--log-format", help="text, or json: one JSON object per line."),
    log_interval: float | None = typer.Option(
        None,
        "--log-interval",
        help=f"Seconds between progress lines when not on a terminal (default: {DEFAULT_LOG_INTERVAL:g}).",
        show_default=False,
    ),
    debug: bool = typer.Option(False, "--debug", help="Show the Python traceback of unexpected errors."),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
    ),
) -> None:
    """Instruction tuning end to end: data → mixture → masks → packing → training → evaluation."""
    from ..progress import configure, json_stderr, plain_output, silence_third_party

    if log_format not in ("text", "json"):
        raise typer.BadParameter("--log-format must be text or json")
    configure(quiet=quiet, log_format=log_format, interval=log_interval)  # type: ignore[arg-type]
    if log_format == "json":  # every line of standard error a JSON object, whoever writes it
        json_stderr()
    if plain_output():  # a file or a tool reads this: only instructkit's own lines, no library bars
        silence_third_party()


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


def normalize_option_names(argv: list[str]) -> list[str]:
    """`--output_dir` → `--output-dir`: the underscore spelling of every option (TRL's, axolotl's) works.

    Only option names change (before any `=`), never values, and nothing after a bare `--`. A spelling
    of another tool with no one-to-one option here is refused with what to type instead.
    """
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        if arg.startswith("--"):
            name, sep, value = arg.partition("=")
            arg = name.replace("_", "-") + sep + value
            if name.replace("_", "-") in FOREIGN_OPTIONS:
                raise InstructkitError(f"{name}: {FOREIGN_OPTIONS[name.replace('_', '-')]}")
        out.append(arg)
    return out


def _help_off_terminal() -> None:
    """Help read from a file or a pipe gets wide lines, so rich does not cut option names at 80 columns."""
    explicit = os.environ.get("COLUMNS") or os.environ.get("TERMINAL_WIDTH")
    if not sys.stdout.isatty() and not explicit:
        rich_utils.MAX_WIDTH = HELP_WIDTH_OFF_TERMINAL


def _no_type_on_flags() -> None:
    """Typer's rich help shows `<bool>` after on/off flags, which take no value (its plain help does not)."""
    shown = TyperOption.display_type_rich
    if getattr(shown, "_flags_untyped", False):
        return

    def display_type_rich(self: TyperOption, ctx: typer.Context) -> str | None:
        return "" if self.is_flag else shown(self, ctx)

    display_type_rich._flags_untyped = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_no_type_on_flags()


# Modules that each expose `register(app: typer.Typer) -> None`.
COMMAND_MODULES = [
    "instructkit.cli.data",
    "instructkit.cli.tasks",
    "instructkit.cli.train",
    "instructkit.cli.evaluate",
    "instructkit.cli.synth",
    "instructkit.cli.run",
    "instructkit.cli.doctor",
    "instructkit.cli.models",
]


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)  # a command module that fails to import fails loudly


_register_all()


def main() -> None:
    """Console-script entry: errors print one clear line; a traceback only with --debug."""
    _help_off_terminal()
    argv = sys.argv[1:]
    debug = "--debug" in argv
    try:
        app(args=hoist_global_options(normalize_option_names(argv)), prog_name="instructkit")
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
