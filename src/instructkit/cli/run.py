"""`instructkit run [RECIPE]`: the whole pipeline in one command (default recipe: quickstart)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .options import parse_override

# A log file is not a terminal: rich would wrap tables at 80 columns; 140 keeps each row on one line.
console = Console() if sys.stdout.isatty() else Console(width=140)


def run_command(
    recipe: str | None = typer.Argument(None, help="Recipe YAML path or shipped name (default: quickstart)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate and print the plan (stages, sizes, cache) only."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a recipe field: --set train.max_steps=50"
    ),
    run_name: str | None = typer.Option(
        None,
        "--run-name",
        help="Run in runs/<recipe>/<NAME>/ instead of runs/<recipe>/, beside the recipe's own run "
        "(a variant of its own; without it a changed stage keeps its old result as <stage>.<hash>/).",
    ),
) -> None:
    """Run the stages a recipe names; finished stages with unchanged settings are skipped."""
    from ..pipeline.recipe import load_recipe
    from ..pipeline.runner import build_pipeline

    parsed = dict(parse_override(o) for o in overrides)
    loaded, path = load_recipe(recipe, parsed)
    if run_name is not None:
        loaded = named_run(loaded, run_name)
    if loaded.sweep is not None:
        from ..pipeline.sweep import run_sweep

        console.print(f"sweep [bold]{loaded.name}[/] from {path}: {len(loaded.sweep.variants)} variants")
        summary = run_sweep(
            loaded, path, log=lambda msg: console.print(escape(msg), highlight=False), dry_run=dry_run
        )
        if summary is not None:
            console.print(f"\nsweep report: {summary}")
        return
    pipeline = build_pipeline(loaded)
    console.print(f"recipe [bold]{loaded.name}[/] from {path} → {pipeline.root}")
    print_plan(pipeline)
    if dry_run:
        return
    try:
        pipeline.run(log=lambda msg: console.print(escape(msg), highlight=False))
    except KeyboardInterrupt as stop:
        from ..train.run import TrainingInterrupted

        where = f"{stop.where()}; " if isinstance(stop, TrainingInterrupted) else ""
        again = _rerun_command(recipe, overrides, run_name)
        console.print(escape(f"interrupted: {where}resume with: {again}"), highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    report = pipeline.root / "report.md"
    if report.is_file():
        console.print(f"\nreport: {report}")
        _print_report_tables(report)


def named_run(recipe, run_name: str):
    """The recipe run in `runs/<recipe>/<run_name>/`: one plain folder name, not a stage's."""
    from ..errors import InstructkitError
    from ..pipeline.recipe import check_run_name
    from ..pipeline.runner import build_pipeline

    try:
        check_run_name(run_name, "--run-name")
    except ValueError as exc:
        raise InstructkitError(str(exc)) from None
    taken = {stage.name for stage in build_pipeline(recipe).stages}
    if "/" in run_name or "." in run_name or run_name in taken:
        raise InstructkitError(
            f"--run-name {run_name!r}: give one folder name without '/' or '.' and other than a "
            f"stage's ({', '.join(sorted(taken))}): it sits beside the recipe's stage folders"
        )
    return recipe.model_copy(update={"name": f"{recipe.name}/{run_name}"})


def _rerun_command(recipe: str | None, overrides: list[str], run_name: str | None) -> str:
    """The same `instructkit run` again: finished stages are cached, training resumes its last checkpoint."""
    args = ["instructkit", "run", *([recipe] if recipe else [])]
    args += [a for o in overrides for a in ("--set", o)]
    args += ["--run-name", run_name] if run_name else []
    return shlex.join(args)


def print_plan(pipeline) -> None:
    """The plan table: per stage its hash, whether it runs, why (which input changed) and which folders
    it writes, keeps aside or reuses, and its size."""
    table = Table(title="plan")
    for col in ("stage", "hash", "status", "why", "size"):
        table.add_column(col, overflow="fold")
    for row in pipeline.plan():
        table.add_row(row.stage, row.digest, row.status, escape(row.why), row.estimate)
    console.print(table)


def _print_report_tables(report: Path) -> None:
    """Print the report's summary, its 'by set' table (eval sets and benchmarks) and verdicts in the terminal."""
    from rich.markdown import Markdown

    text = report.read_text()
    parts = [
        _section(text, "## Summary", "## Artifacts"),
        _section(text, "## Evaluation by set", "## Evaluation by task"),
        _section(text, "## What improved", None),
    ]
    lines = "\n".join(parts).splitlines()
    console.print(Markdown("\n".join(line for line in lines if not line.startswith("!["))))


def _section(text: str, start: str, end: str | None) -> str:
    """The report text from heading `start` up to heading `end` (or the end); empty when absent."""
    begin = text.find(start)
    if begin < 0:
        return ""
    stop = text.find(end, begin) if end else -1
    return text[begin : stop if stop >= 0 else len(text)]


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
