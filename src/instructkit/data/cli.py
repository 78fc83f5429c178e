"""`instructkit data …`: prepare (tokenize, mask, pack) and show; build/splits register from tasks_cli."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .prepare import PrepareConfig, prepare

data_app = typer.Typer(help="Build, prepare and inspect instruction data.", no_args_is_help=True)
console = Console()


@data_app.command("prepare")
def prepare_command(
    sources: list[str] = typer.Argument(
        ...,
        help="JSONL/JSON/Parquet/CSV files (also .gz/.bz2/.xz/.zst) or directories (hidden entries skipped), "
        "saved datasets, or hub ids OWNER/NAME[:CONFIG][@SPLIT].",
    ),
    tokenizer: str = typer.Option(
        ..., "--tokenizer", help="Tokenizer path or hub id; `tiny[:preset]` trains a small BPE on the data."
    ),
    out: Path = typer.Option(..., "--out", help="Output directory (a datasets directory plus stats.json)."),
    max_length: int = typer.Option(
        2048, "--max-length", help="Token limit of one example (and of one pack)."
    ),
    pack: bool = typer.Option(
        False, "--pack/--no-pack", help="Pack examples with global best-fit decreasing."
    ),
    chat_template: str | None = typer.Option(
        None,
        "--chat-template",
        help="tulu | chatml | llama3 | plain | a Jinja string; default: the tokenizer's own.",
    ),
    loss_on: str = typer.Option(
        "assistant", "--loss-on", help="assistant (every reply) | last_assistant | all (pretraining)."
    ),
    overlong: str = typer.Option(
        "truncate", "--overlong", help="truncate | drop | split (split: pretraining only)."
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="Force the input format instead of detecting it from the columns."
    ),
    on_error: str = typer.Option(
        "raise",
        "--on-error",
        help="raise: stop at the first bad row; skip: write it to rejects.jsonl and go on.",
    ),
    skip_unknown_files: bool = typer.Option(
        False,
        "--skip-unknown-files",
        help="In a directory, skip files of unknown kind (listed in stats.json) instead of stopping.",
    ),
    num_proc: int = typer.Option(1, "--num-proc", help="Processes for tokenization."),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="Allow tokenizer code from the hub (off by default)."
    ),
) -> None:
    """Tokenize conversations with exact assistant-only masks and (optionally) pack them."""
    _check_choice("--loss-on", loss_on, ("assistant", "last_assistant", "all"))
    _check_choice("--overlong", overlong, ("truncate", "drop", "split"))
    _check_choice("--on-error", on_error, ("raise", "skip"))
    cfg = PrepareConfig(
        sources=sources,
        tokenizer=tokenizer,
        out=str(out),
        max_length=max_length,
        pack=pack,
        chat_template=chat_template,
        loss_on=loss_on,
        overlong=overlong,
        format=fmt,
        on_error=on_error,
        skip_unknown_files=skip_unknown_files,
        num_proc=num_proc,
        trust_remote_code=trust_remote_code,
    )
    stats = prepare(cfg)
    print_stats(stats, f"prepared → {out}")


def _check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}", param_hint=flag)


def print_stats(stats: dict, title: str) -> None:
    """Print a stats dict as a two-column table (nested dicts flattened with dots)."""
    table = Table(title=title, show_header=False)
    for key, value in _flatten(stats):
        if isinstance(value, list):  # per-file lists stay in stats.json; the table shows how many
            value = f"{len(value)} (listed in stats.json)"
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
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
    from .show import show_rows

    show_rows(directory, n=n, task=task, console=console)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
