"""`instructkit doctor`: print what this machine can run; exit non-zero when a need is missing."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def doctor_command(
    need: list[str] = typer.Option(
        [],
        "--need",
        help="Something the next job needs: cuda, bf16, hub, vllm, flash-attn, ray, ... (repeatable).",
    ),
    recipe: Path = typer.Option(
        None,
        "--recipe",
        help="Also require what this recipe's settings need (a file or a shipped recipe's name).",
    ),
    attention: bool = typer.Option(
        True, "--attention/--no-attention", help="Run the packed-attention checks."
    ),
    all_attention: bool = typer.Option(
        False, "--all-attention", help="Also check flex_attention (compiles first: about 30 s on a CPU)."
    ),
    hub: bool = typer.Option(True, "--hub/--no-hub", help="Check whether the hub is reachable."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Versions, devices, packed-row attention, hub access and caches; exit 1 if a need is missing."""
    from rich.console import Console
    from rich.table import Table

    from ..settings_io import load_yaml
    from .doctor_checks import recipe_needs, run_doctor

    needs = list(need)
    if recipe is not None:
        from ..pipeline.recipe import (
            _recipe_path,  # a file, or a shipped recipe's name, as `instructkit run` takes
        )

        needs += recipe_needs(load_yaml(_recipe_path(recipe), what="recipe"))
    report, all_met = run_doctor(
        dict.fromkeys(needs), attention=attention, hub=hub, slow_attention=all_attention
    )
    if as_json:
        print(json.dumps({"checks": report.as_dict(), "needs_met": all_met}, indent=2))
    else:
        table = Table("section", "check", "", "detail", show_lines=False)
        for c in report.checks:
            table.add_row(c.section, c.name, "[green]ok[/]" if c.ok else "[yellow]no[/]", c.detail)
        console = Console()
        console.print(table)
        if needs:
            console.print(
                "every need is met" if all_met else "[bold red]a need is not met[/] (see 'needs' above)"
            )
    raise typer.Exit(0 if all_met else 1)


def register(app: typer.Typer) -> None:
    """Add the `doctor` command to the root app."""
    app.command("doctor")(doctor_command)
