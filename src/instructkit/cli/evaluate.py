"""`instructkit eval`: run a suite or tasks, report runs, compare two runs, judge open-ended outputs."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from ..errors import InstructkitError
from ..evaluate.config import EvalConfig
from ..executors import ExecutorSettings
from .options import options_from

eval_app = typer.Typer(
    help="Evaluate models: held-out catalog tasks and benchmark suites (flan, tulu, YAML).",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)  # Markdown tables piped to a file stay one line per row


def register(app: typer.Typer) -> None:
    """Add the `eval` command group to the root app."""
    app.add_typer(eval_app, name="eval")


# Short names users already type; each long name is the EvalConfig field's own.
ALIASES = {"tasks": ["-t"]}


def split_task_list(specs: list[str]) -> list[str]:
    """lm-eval's `--tasks a,b` as two specs; a `key=value` after a comma stays an option of its spec.

    `gsm8k:cot=true,num_fewshot=8,mmlu` → `gsm8k:cot=true,num_fewshot=8` and `mmlu`.
    """
    out: list[str] = []
    for spec in specs:
        first = True
        for piece in filter(None, (p.strip() for p in spec.split(","))):
            is_option = "=" in piece and ":" not in piece.split("=", 1)[0]
            if is_option and not first:
                out[-1] += ("," if ":" in out[-1] else ":") + piece
            else:
                out.append(piece)
            first = False
    return out


@eval_app.command("run")
@options_from(EvalConfig, ExecutorSettings, aliases=ALIASES)
def run_cmd(
    fields: dict,
    where: ExecutorSettings,
    model: str = typer.Option(
        ..., help="model directory or hub id (transformers), or a base URL with --backend openai"
    ),
    out: Path = typer.Option(
        ..., "--out", "--output-path", help="run directory: results.json, samples/, cache.sqlite (resumes)"
    ),
    backend: str = typer.Option("hf", help="hf | vllm | openai"),
    served_model: str = typer.Option("", help="model name sent to an OpenAI-compatible endpoint"),
) -> None:
    """Evaluate MODEL on a suite and/or tasks; prints the summary table."""
    from ..evaluate.backends.load import load_backend
    from ..evaluate.eval_report import markdown_table
    from ..evaluate.runner import eval_config, evaluate

    if fields.get("tasks"):
        fields["tasks"] = split_task_list(fields["tasks"])
    config = eval_config(**fields)
    if not config.suite and not config.tasks and not config.lm_eval_tasks:
        raise InstructkitError("give --suite, --tasks or --lm-eval-tasks")
    if where.checked() == "ray":  # one model per actor, requests split across them
        engine = _ray_backend(backend, model, served_model, config, where.ray_address)
    else:
        engine = load_backend(
            backend, model, batch_size=config.batch_size, served_model=served_model, **_hf_only(config)
        )
    results = evaluate(engine, config=config, out_dir=out)
    console.print(markdown_table([dict(results, _dir=str(out))]))
    console.print(f"results: {out / 'results.json'}")


def _hf_only(config: EvalConfig) -> dict:
    """The settings only the hf backend takes (performance, reproducibility, an adapter's base)."""
    return {
        "deterministic": config.deterministic,
        "max_batch_tokens": config.max_batch_tokens,
        "allow_base_mismatch": config.allow_base_mismatch,
    }


def _ray_backend(kind: str, model: str, served: str, config: EvalConfig, address: str | None):
    """The backend built once in each actor of a Ray pool (instructkit.executors.ray_eval)."""
    import functools

    from ..evaluate.backends.load import load_backend
    from ..executors.ray_eval import ray_backend

    if kind == "openai":
        raise InstructkitError(
            "--executor ray runs local models (hf, vllm); an OpenAI endpoint scales itself"
        )
    options = {"batch_size": config.batch_size, "served_model": served, **_hf_only(config)}
    factory = functools.partial(load_backend, kind, model, **options)
    return ray_backend(factory, address, gpu=kind == "vllm")


@eval_app.command("report")
def report_cmd(
    runs: list[Path] = typer.Argument(..., help="run directories or results.json files"),
    out: Path = typer.Option(None, help="where report.md and PNG charts go (default: first run)"),
) -> None:
    """Print and write a Markdown table and PNG charts (per task, per group, normalized average)."""
    from ..evaluate.eval_report import load_run, markdown_table, write_report

    loaded = [load_run(r) for r in runs]
    console.print(markdown_table(loaded))
    path = write_report(loaded, out or (runs[0] if runs[0].is_dir() else runs[0].parent))
    console.print(f"report: {path}")


@eval_app.command("compare")
def compare_cmd(
    a: Path = typer.Argument(..., help="baseline run"),
    b: Path = typer.Argument(..., help="new run"),
    out: Path = typer.Option(None, help="also write the comparison as Markdown here, and as HTML beside it"),
) -> None:
    """Per-task and per-group deltas B − A with 95% intervals and a paired test on shared rows."""
    from ..evaluate.eval_report import compare, compare_groups, compare_markdown, write_compare

    console.print(compare_markdown(compare(a, b), a.name, b.name, groups=compare_groups(a, b)))
    if out:
        console.print(f"report: {', '.join(str(p) for p in write_compare(a, b, out))}")


@eval_app.command("judge")
def judge_cmd(
    a: Path = typer.Argument(..., help="run with open_ended samples (baseline)"),
    b: Path = typer.Argument(..., help="run with open_ended samples (candidate)"),
    judge_model: str = typer.Option(..., help="judge model path, or base URL with --backend openai"),
    backend: str = typer.Option("hf", help="hf | vllm | openai"),
    served_model: str = typer.Option(""),
    chat: bool = typer.Option(False, help="render the judge prompt with the judge's chat template"),
    task: str = typer.Option("open_ended", help="task whose samples are compared"),
) -> None:
    """Pairwise win rate of B over A on open-ended outputs, each pair judged in both orders."""
    from ..evaluate.backends.load import load_backend
    from ..evaluate.judge import pairwise_win_rate, read_samples

    rows_a, rows_b = read_samples(a, task), read_samples(b, task)
    ids = [i for i in rows_a if i in rows_b]
    prompts = _instructions(b, task, ids)
    result = pairwise_win_rate(
        load_backend(backend, judge_model, batch_size=8, served_model=served_model),
        prompts,
        [rows_a[i]["output"] for i in ids],
        [rows_b[i]["output"] for i in ids],
        chat=chat,
    )
    console.print(
        f"win rate of {b.name} over {a.name}: {result['win_rate']:.1f} "
        f"[{result['ci95'][0]:.1f}, {result['ci95'][1]:.1f}] over {result['n']} prompts"
    )


def _instructions(run: Path, task: str, ids: list[str]) -> list[str]:
    from ..evaluate.runner import RESULTS_FILE, build_tasks, eval_config

    config = json.loads((run / RESULTS_FILE).read_text(encoding="utf-8"))["config"]
    built = build_tasks(eval_config(**{**config, "suite": None, "tasks": [task.split("/")[0]]}))
    queries = {d.id: d.query for t in built for d in t.docs}
    return [queries.get(i, "") for i in ids]
