"""`instructkit eval`: run a suite or tasks, report runs, compare two runs, judge open-ended outputs."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from ..errors import InstructkitError
from ..executors import EXECUTOR_HELP, RAY_ADDRESS_HELP, check_executor

eval_app = typer.Typer(
    help="Evaluate models: held-out catalog tasks and benchmark suites (flan, tulu, YAML).",
    no_args_is_help=True,
)
console = Console()


def register(app: typer.Typer) -> None:
    """Add the `eval` command group to the root app."""
    app.add_typer(eval_app, name="eval")


@eval_app.command("run")
def run_cmd(
    model: str = typer.Option(
        ..., help="model directory or hub id (transformers), or a base URL with --backend openai"
    ),
    out: Path = typer.Option(..., help="run directory: results.json, samples/, cache.sqlite (resumes)"),
    suite: str = typer.Option(None, help="built-in suite (flan, tulu) or a suite YAML path"),
    tasks: list[str] = typer.Option(
        [], "--tasks", "-t", help="benchmark spec, e.g. gsm8k:cot=true,num_fewshot=8 or catalog/NAME"
    ),
    data_dir: Path = typer.Option(None, help="local benchmark files (e.g. ../shared/data); hub otherwise"),
    prompt_style: str = typer.Option("base", help="base | chat | chat_multiturn"),
    backend: str = typer.Option("hf", help="hf | vllm | openai"),
    served_model: str = typer.Option("", help="model name sent to an OpenAI-compatible endpoint"),
    batch_size: int = typer.Option(
        16, help="rows per forward pass (log-likelihoods move only by float rounding: docs/evaluation.md)"
    ),
    deterministic: bool = typer.Option(
        False, help="hf only: bit-identical results for any batch size (runs each request alone; slower)"
    ),
    limit: int = typer.Option(None, help="first N examples per task"),
    seed: int = typer.Option(0),
    allow_code_execution: bool = typer.Option(False, help="run generated code against tests (HumanEval)"),
    executor: str = typer.Option("local", help=EXECUTOR_HELP),
    ray_address: str = typer.Option(None, help=RAY_ADDRESS_HELP),
) -> None:
    """Evaluate MODEL on a suite and/or tasks; prints the summary table."""
    from .eval_report import markdown_table
    from .runner import EvalConfig, evaluate

    if not suite and not tasks:
        raise InstructkitError("give --suite or at least one --tasks")
    config = EvalConfig(
        suite=suite,
        tasks=list(tasks),
        data_dir=str(data_dir) if data_dir else None,
        prompt_style=prompt_style,
        limit=limit,
        batch_size=batch_size,
        deterministic=deterministic,
        seed=seed,  # type: ignore[arg-type]
        allow_code_execution=allow_code_execution,
    )
    if check_executor(executor, ray_address) == "ray":  # one model per actor, requests split across them
        engine = _ray_backend(backend, model, served_model, batch_size, deterministic, ray_address)
    else:
        engine = _backend(backend, model, served_model, batch_size, deterministic)
    results = evaluate(engine, config=config, out_dir=out)
    console.print(markdown_table([dict(results, _dir=str(out))]))
    console.print(f"results: {out / 'results.json'}")


def _backend(kind: str, model: str, served_model: str, batch_size: int, deterministic: bool = False):
    if deterministic and kind != "hf":
        raise InstructkitError(f"--deterministic is supported by --backend hf only, not {kind!r}")
    if kind == "hf":
        from .backends.hf import HFBackend

        return HFBackend.from_pretrained(model, batch_size=batch_size, deterministic=deterministic)
    if kind == "vllm":
        from .backends.vllm import VLLMBackend

        return VLLMBackend(model)
    if kind == "openai":
        from .backends.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(model, served_model or "default")
    raise InstructkitError(f"unknown backend {kind!r}; backends: hf, vllm, openai")


def _ray_backend(
    kind: str, model: str, served: str, batch_size: int, deterministic: bool, address: str | None
):
    """`_backend` built once in each actor of a Ray pool (instructkit.executors.ray_eval)."""
    import functools

    from ..executors.ray_eval import ray_backend

    if kind == "openai":
        raise InstructkitError(
            "--executor ray runs local models (hf, vllm); an OpenAI endpoint scales itself"
        )
    factory = functools.partial(_backend, kind, model, served, batch_size, deterministic)
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
    from .runner import RESULTS_FILE, build_tasks
    from .runner import EvalConfig as Config

    config = json.loads((run / RESULTS_FILE).read_text(encoding="utf-8"))["config"]
    built = build_tasks(Config(**{**config, "suite": None, "tasks": [task.split("/")[0]]}))
    queries = {d.id: d.query for t in built for d in t.docs}
    return [queries.get(i, "") for i in ids]
