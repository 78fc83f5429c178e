"""`instructkit eval`: run a suite or tasks, report runs, compare two runs, judge open-ended outputs."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from ..cli_options import options_from
from ..errors import InstructkitError
from ..executors import EXECUTOR_HELP, RAY_ADDRESS_HELP, check_executor
from .config import EvalConfig

eval_app = typer.Typer(
    help="Evaluate models: held-out catalog tasks and benchmark suites (flan, tulu, YAML).",
    no_args_is_help=True,
)
console = Console()


def register(app: typer.Typer) -> None:
    """Add the `eval` command group to the root app."""
    app.add_typer(eval_app, name="eval")


# Short names users already type; each long name is the EvalConfig field's own.
ALIASES = {"tasks": ["-t"]}


@eval_app.command("run")
@options_from(EvalConfig, aliases=ALIASES)
def run_cmd(
    fields: dict,
    model: str = typer.Option(
        ..., help="model directory or hub id (transformers), or a base URL with --backend openai"
    ),
    out: Path = typer.Option(..., help="run directory: results.json, samples/, cache.sqlite (resumes)"),
    backend: str = typer.Option("hf", help="hf | vllm | openai"),
    served_model: str = typer.Option("", help="model name sent to an OpenAI-compatible endpoint"),
    executor: str = typer.Option("local", help=EXECUTOR_HELP),
    ray_address: str = typer.Option(None, help=RAY_ADDRESS_HELP),
) -> None:
    """Evaluate MODEL on a suite and/or tasks; prints the summary table."""
    from .eval_report import markdown_table
    from .runner import eval_config, evaluate

    config = eval_config(**fields)
    if not config.suite and not config.tasks:
        raise InstructkitError("give --suite or at least one --tasks")
    if check_executor(executor, ray_address) == "ray":  # one model per actor, requests split across them
        engine = _ray_backend(backend, model, served_model, config, ray_address)
    else:
        engine = _backend(backend, model, served_model, config.batch_size, **_hf_only(config))
    results = evaluate(engine, config=config, out_dir=out)
    console.print(markdown_table([dict(results, _dir=str(out))]))
    console.print(f"results: {out / 'results.json'}")


def _hf_only(config: EvalConfig) -> dict:
    """The settings only the hf backend takes (each a performance or reproducibility switch)."""
    return {"deterministic": config.deterministic, "max_batch_tokens": config.max_batch_tokens}


def _backend(
    kind: str,
    model: str,
    served_model: str,
    batch_size: int,
    deterministic: bool = False,
    max_batch_tokens: int | None = None,
):
    """The scoring backend `--backend` names; hf-only settings given to another backend are refused."""
    if kind != "hf" and (deterministic or max_batch_tokens is not None):
        flag = "--deterministic" if deterministic else "--max-batch-tokens"
        raise InstructkitError(f"{flag} is supported by --backend hf only, not {kind!r}")
    if kind == "hf":
        from .backends.hf import HFBackend

        return HFBackend.from_pretrained(
            model, batch_size=batch_size, deterministic=deterministic, max_batch_tokens=max_batch_tokens
        )
    if kind == "vllm":
        from .backends.vllm import VLLMBackend

        return VLLMBackend(model)
    if kind == "openai":
        from .backends.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(model, served_model or "default")
    raise InstructkitError(f"unknown backend {kind!r}; backends: hf, vllm, openai")


def _ray_backend(kind: str, model: str, served: str, config: EvalConfig, address: str | None):
    """`_backend` built once in each actor of a Ray pool (instructkit.executors.ray_eval)."""
    import functools

    from ..executors.ray_eval import ray_backend

    if kind == "openai":
        raise InstructkitError(
            "--executor ray runs local models (hf, vllm); an OpenAI endpoint scales itself"
        )
    factory = functools.partial(_backend, kind, model, served, config.batch_size, **_hf_only(config))
    return ray_backend(factory, address, gpu=kind == "vllm")


@eval_app.command("report")
def report_cmd(
    runs: list[Path] = typer.Argument(..., help="run directories or results.json files"),
    out: Path = typer.Option(None, help="where report.md and PNG charts go (default: first run)"),
) -> None:
    """Print and write a Markdown table and PNG charts (per task, per group, normalized average)."""
    from .eval_report import load_run, markdown_table, write_report

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
    from .eval_report import compare, compare_groups, compare_markdown, write_compare

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
    from .judge import pairwise_win_rate

    rows_a, rows_b = _samples(a, task), _samples(b, task)
    ids = [i for i in rows_a if i in rows_b]
    prompts = _instructions(b, task, ids)
    result = pairwise_win_rate(
        _backend(backend, judge_model, served_model, 8),
        prompts,
        [rows_a[i]["output"] for i in ids],
        [rows_b[i]["output"] for i in ids],
        chat=chat,
    )
    console.print(
        f"win rate of {b.name} over {a.name}: {result['win_rate']:.1f} "
        f"[{result['ci95'][0]:.1f}, {result['ci95'][1]:.1f}] over {result['n']} prompts"
    )


def _samples(run: Path, task: str) -> dict[str, dict]:
    path = run / "samples" / f"{task.replace('/', '__')}.jsonl"
    if not path.is_file():
        raise InstructkitError(f"{path}: no samples for task {task!r}")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {str(r["id"]): r for r in rows}


def _instructions(run: Path, task: str, ids: list[str]) -> list[str]:
    from .runner import RESULTS_FILE, build_tasks, eval_config

    config = json.loads((run / RESULTS_FILE).read_text(encoding="utf-8"))["config"]
    built = build_tasks(eval_config(**{**config, "suite": None, "tasks": [task.split("/")[0]]}))
    queries = {d.id: d.query for t in built for d in t.docs}
    return [queries.get(i, "") for i in ids]
