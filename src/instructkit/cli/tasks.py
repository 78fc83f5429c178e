"""CLI: `instructkit data build|splits` and `instructkit tasks list|show|import-lm-eval` (thin calls
into mixture/splits/tasks)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from ..data.mixture_config import MixtureConfig, load_mixture_config
from ..executors import ExecutorSettings
from .options import options_from

if TYPE_CHECKING:
    from ..data.tasks import Task

console = Console()
tasks_app = typer.Typer(help="Describe the task catalog.", no_args_is_help=True)


# MixtureConfig fields `data build` and `data splits` can override on the command line (name, help,
# default from the model); `--data-dir` names the data root as it does for `eval run`.
BUILD_OVERRIDES = ("seed", "data_root")
_NOT_OVERRIDDEN = [n for n in MixtureConfig.model_fields if n not in BUILD_OVERRIDES]
_DATA_DIR = {"data_root": ["--data-dir"]}


@options_from(MixtureConfig, ExecutorSettings, exclude=_NOT_OVERRIDDEN, aliases=_DATA_DIR)
def build_command(
    fields: dict,
    where: ExecutorSettings,
    mixture: Path = typer.Argument(..., help="mixture YAML"),
    out: Path = typer.Option(..., "--out", help="output directory (a datasets directory + stats.json)"),
    num_proc: int = typer.Option(
        1, "--num-proc", help="worker processes for rendering (output does not change)"
    ),
) -> None:
    """Render a mixture of tasks into a conversation dataset; options given override the YAML."""
    from ..data.mixture import build_mixture

    on_ray = where.checked() == "ray"
    config = load_mixture_config(mixture, **fields)
    if on_ray:
        from ..executors.ray_build import build_mixture_ray

        stats = build_mixture_ray(config, out, where.ray_address)
    else:
        stats = build_mixture(config, out, num_proc=num_proc)
    print_mixture_stats(stats)
    console.print(f"wrote {stats['rows']} rows to {out}")


@options_from(MixtureConfig, exclude=_NOT_OVERRIDDEN, aliases=_DATA_DIR)
def splits_command(
    fields: dict,
    mixture: Path = typer.Argument(..., help="mixture YAML"),
    out: Path = typer.Option(
        ..., "--out", help="output directory: <cluster>/train, <cluster>/eval, splits.json"
    ),
    leave_one_cluster_out_flag: bool = typer.Option(
        False, "--leave-one-cluster-out", help="write one split per cluster: train without it, eval on it"
    ),
    cluster: list[str] = typer.Option([], "--cluster", help="only these held-out clusters (repeatable)"),
    num_proc: int = typer.Option(1, "--num-proc"),
    eval_limit: int | None = typer.Option(None, "--eval-limit", help="at most this many eval rows per task"),
) -> None:
    """Write FLAN-style held-out-cluster splits of a mixture."""
    if not leave_one_cluster_out_flag and not cluster:
        raise typer.BadParameter("pass --leave-one-cluster-out (every cluster) or --cluster NAME")
    from ..data.splits import leave_one_cluster_out

    config = load_mixture_config(mixture, **fields)
    summary = leave_one_cluster_out(
        config, out, clusters=cluster or None, num_proc=num_proc, eval_limit=eval_limit
    )
    table = Table(
        "held-out cluster",
        "train rows",
        "train tasks",
        "eval rows",
        "eval tasks",
        title=f"splits of {config.name}",
    )
    for name, s in summary["splits"].items():
        table.add_row(
            name,
            str(s["train_rows"]),
            str(len(s["train_tasks"])),
            str(s["eval_rows"]),
            str(len(s["eval_tasks"])),
        )
    console.print(table)


def print_mixture_stats(stats: dict) -> None:
    """Rows per task and cluster, rates, formats, and what was removed or rejected."""
    table = Table(title=f"mixture {stats['name']}")
    table.add_column("task", no_wrap=True, min_width=max((len(n) for n in stats["tasks"]), default=4))
    for header in ("cluster", "available", "rows", "rate", "epochs", "decontam."):
        table.add_column(header)
    for name, t in stats["tasks"].items():
        table.add_row(
            name,
            t["cluster"],
            str(t["available"]),
            str(t["rows"]),
            f"{t['effective_rate']:.3f}",
            f"{t['epochs']:.2f}",
            str(t["removed_by_decontamination"]),
        )
    console.print(table)
    console.print("clusters: " + ", ".join(f"{c}={n}" for c, n in stats["clusters"].items()))
    console.print("formats: " + ", ".join(f"{f}={n}" for f, n in stats["formats"].items()))
    console.print(
        f"templates used: {len(stats['templates'])}; removed by decontamination: "
        f"{stats['removed_by_decontamination']}; rejected rows: {stats['rejected']}"
    )


def list_command(
    cluster: str | None = typer.Option(None, "--cluster", help="only this cluster"),
    catalog: list[Path] = typer.Option([], "--catalog", help="extra task directories"),
) -> None:
    """List catalog tasks (name, cluster, collection, templates, flags)."""
    table = Table("task", "cluster", "collection", "templates", "flags")
    from ..data.tasks import load_catalog

    for task in load_catalog(catalog).values():
        if cluster is None or task.cluster == cluster:
            flags = ", ".join(
                f
                for f, on in (
                    ("eval-only", task.eval_only),
                    ("chat", task.kind == "chat"),
                    ("cot", task.rationale_field is not None),
                )
                if on
            )
            table.add_row(task.name, task.cluster, task.collection, str(len(task.templates)), flags)
    console.print(table)


def show_command(
    name: str = typer.Argument(..., help="task name"),
    catalog: list[Path] = typer.Option([], "--catalog", help="extra task directories"),
) -> None:
    """Describe one task: source, fields, options, metric and every template."""
    from ..data.tasks import load_catalog

    tasks = load_catalog(catalog)
    if name not in tasks:
        raise typer.BadParameter(f"unknown task {name!r}; `instructkit tasks list` shows the catalog")
    describe(tasks[name])


def describe(task: Task) -> None:
    """Print a task definition readably."""
    console.print(
        f"{task.name} ({task.collection}, cluster {task.cluster}) — {task.description}",
        highlight=False,
        markup=False,
    )
    console.print(f"file: {task.file}")
    source = (
        task.source.model_dump(exclude_defaults=True)
        if task.source
        else {k: v.model_dump(exclude_defaults=True) for k, v in (task.splits or {}).items()}
    )
    console.print(f"source: {source}", highlight=False, markup=False)
    console.print(
        f"metric: {task.metric}; answer field: {task.answer_field}; eval split: {task.eval_split}; "
        f"exemplar split: {task.exemplar_split}; eval-only: {task.eval_only}",
        highlight=False,
    )
    if task.options or task.options_field:
        console.print(
            f"options: {task.options or 'per row: ' + str(task.options_field)}", highlight=False, markup=False
        )
    for t in task.templates:
        tags = [
            x for x, on in (("inverted", t.inverted), ("held out", t.id in task.held_out_templates)) if on
        ]
        console.print(
            f"\n{t.id} {' '.join(f'({x})' for x in tags)}\n  input:  {t.input!r}\n  target: {t.target!r}",
            highlight=False,
            markup=False,
        )


def import_lm_eval_command(
    names: list[str] = typer.Argument(..., help="lm-eval task names"),
    include: list[Path] = typer.Option(
        [], "--include", help="extra lm-eval task YAML folders (e.g. ones reading local files)"
    ),
    out: Path = typer.Option(
        ..., "--out", help="catalog YAML to write, or a folder (writes lm_eval_tasks.yaml there)"
    ),
) -> None:
    """Turn lm-eval tasks into catalog tasks: lm-eval's prompts and targets as rows, its splits as ours."""
    from ..data.catalog.lm_eval import write_lm_eval_catalog

    catalog = write_lm_eval_catalog(list(names), out, tuple(str(p.resolve()) for p in include))
    console.print(
        f"wrote {len(names)} task(s) to {catalog}; use it with --catalog {catalog}",
        soft_wrap=True,
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add `data build`, `data splits` and the `tasks` group."""
    from .data import data_app

    data_app.command("build")(build_command)
    data_app.command("splits")(splits_command)
    tasks_app.command("list")(list_command)
    tasks_app.command("show")(show_command)
    tasks_app.command("import-lm-eval")(import_lm_eval_command)
    app.add_typer(tasks_app, name="tasks")
