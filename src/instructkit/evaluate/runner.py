"""Run an evaluation: build tasks, score them through a (cached) backend, aggregate, and write
results.json (model, data hashes, versions, config) plus samples/<task>.jsonl per-example records."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..errors import InstructkitError
from ..fingerprint import sha256_hex
from ..progress import Progress
from ..settings_io import validate
from .backends.base import Backend
from .cache import CachedBackend, RequestCache
from .config import EvalConfig
from .metrics import bootstrap_ci, macro_average, mean, normalized_score
from .scoring import score_task
from .spec import EvalTask
from .suites.registry import lm_eval_entries, parse_task_spec, read_suite, tasks_from_entries

RESULTS_FILE = "results.json"


def evaluate(
    model: Any,
    tokenizer: Any = None,
    tasks: list[EvalTask] | None = None,
    *,
    config: EvalConfig | None = None,
    out_dir: str | Path | None = None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """Evaluate a model (path, HF model object with `tokenizer`, or Backend) on tasks and a suite.

    Settings come one way, as `config` (default: `EvalConfig()`): its suite and benchmark specs
    (`config.tasks`) are built here; `tasks` adds EvalTask objects built elsewhere (e.g. a recipe's
    catalog tasks). Returns the results dict; with `out_dir`, also writes results.json, samples/
    and cache.sqlite. `warnings` (e.g. from loading `model` here) are recorded with the backend's own.
    """
    config = with_suite_lm_eval(config or EvalConfig())
    specs = [t for t in tasks or [] if not isinstance(t, EvalTask)]
    if specs:
        raise InstructkitError(
            f"evaluate(tasks=...) takes EvalTask objects; benchmark specs {specs} go in EvalConfig(tasks=...)"
        )
    task_objs = list(tasks or []) + build_tasks(config)
    backend = make_backend(model, tokenizer, config)
    return run_tasks(backend, task_objs, config, Path(out_dir) if out_dir else None, warnings)


def eval_config(**fields: Any) -> EvalConfig:
    """An EvalConfig from keyword settings; a wrong name or value is an error naming the field."""
    return validate(EvalConfig, fields, "evaluation settings")


def with_suite_lm_eval(config: EvalConfig) -> EvalConfig:
    """`config` with its suite's lm-eval entries added to `lm_eval_tasks` and `lm_eval_include`; their
    specs (`gsm8k:num_fewshot=8`) are checked here, before any task runs."""
    names, include = lm_eval_entries(read_suite(config.suite)["tasks"]) if config.suite else ([], [])
    if names:
        update = {
            "lm_eval_tasks": list(dict.fromkeys([*config.lm_eval_tasks, *names])),
            "lm_eval_include": list(dict.fromkeys([*config.lm_eval_include, *include])),
        }
        config = config.model_copy(update=update)
    if config.lm_eval_tasks:
        from .lm_eval_tasks import parse_lm_eval_specs

        parse_lm_eval_specs(config.lm_eval_tasks)
    return config


def build_tasks(config: EvalConfig) -> list[EvalTask]:
    """Tasks named by the config's suite and task specs, truncated to `limit` docs each.

    Only these are truncated: EvalTasks built elsewhere (a recipe's catalog sets) keep their own limit.
    """
    data_dir = Path(config.data_dir) if config.data_dir else None
    entries = list(read_suite(config.suite)["tasks"]) if config.suite else []
    entries += [parse_task_spec(t) for t in config.tasks]
    tasks = tasks_from_entries(entries, data_dir)
    if config.limit is not None:
        for task in tasks:
            task.docs = task.docs[: config.limit]
    return tasks


def make_backend(model: Any, tokenizer: Any, config: EvalConfig) -> Backend:
    """A Backend from a Backend, or an hf one (the backend factory) for a transformers model +
    tokenizer or a path / hub id."""
    from .backends.load import load_backend

    if isinstance(model, Backend):
        if config.deterministic and not getattr(model, "deterministic", False):
            raise InstructkitError(
                f"deterministic evaluation needs a backend built with deterministic=True; "
                f"{type(model).__name__} was not (only the hf backend supports it)"
            )
        return model
    return load_backend(
        "hf",
        model,
        tokenizer=tokenizer,
        batch_size=config.batch_size,
        max_batch_tokens=config.max_batch_tokens,
        deterministic=config.deterministic,
        allow_base_mismatch=config.allow_base_mismatch,
    )


def run_tasks(
    backend: Backend,
    tasks: list[EvalTask],
    config: EvalConfig,
    out_dir: Path | None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """Score each task (resuming from the cache in out_dir), aggregate, write and return results.

    `warnings` (the backend's, then the caller's) are recorded, so the reports show them.
    """
    cache = RequestCache(out_dir / "cache.sqlite") if out_dir and config.use_cache else None
    scorer = CachedBackend(backend, cache) if cache is not None else backend
    results: dict[str, Any] = {
        "model": backend.fingerprint(),
        "config": config.model_dump(mode="json"),
        "warnings": [*backend.warnings, *(warnings or [])],
        "tasks": {},
        "versions": _versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    bar = Progress("eval", total=sum(len(t.docs) for t in tasks), unit="doc")
    lm_eval_counts = (0, 0)  # cache (hits, misses) of lm-eval's requests
    try:
        for task in tasks:
            records, metrics = score_task(
                scorer, task, config.prompt_style, config.seed, config.allow_code_execution
            )
            summary = task_summary(task, records, metrics, config.bootstrap, config.seed)
            results["tasks"][task.name] = summary
            bar.update(advance=len(task.docs), task=task.name, score=round(summary["score"], 1))
            if out_dir:
                _write_samples(out_dir, task.name, records)
        if config.lm_eval_tasks:
            lm_eval_counts = _run_lm_eval(backend, config, out_dir, results, cache)
    finally:
        bar.close()
        if cache is not None:
            cache.close()
    results["groups"] = group_summary(results["tasks"])
    results["clusters"] = group_summary(results["tasks"], key="cluster")
    results["normalized_average"] = macro_average([g["normalized"] for g in results["groups"].values()])
    if isinstance(scorer, CachedBackend):
        hits, misses = scorer.hits + lm_eval_counts[0], scorer.misses + lm_eval_counts[1]
        results["cache"] = {"hits": hits, "misses": misses}
    if out_dir:
        write_atomic(out_dir / RESULTS_FILE, json.dumps(results, indent=2, ensure_ascii=False))
    return results


def task_summary(
    task: EvalTask, records: list[dict], metrics: dict[str, float], resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Preferred metric, 95% bootstrap interval, random baseline and normalized score for one task."""
    score = metrics.get(task.metric, next(iter(metrics.values()), float("nan")))
    per_example = [100 * float(r[task.metric]) for r in records if task.metric in r]
    low, high = bootstrap_ci(per_example, resamples, seed) if per_example else (float("nan"), float("nan"))
    return {
        "metric": task.metric,
        "score": score,
        "ci95": [low, high],
        "metrics": metrics,
        "n": len(records),
        "random_baseline": task.random_baseline,
        "normalized": normalized_score(score, task.random_baseline),
        "group": task.group or task.name,
        "cluster": task.cluster,
        "method": task.method,
        "num_fewshot": task.num_fewshot,
        "data_sha256": data_hash(task),
    }


def _run_lm_eval(
    backend: Backend, config: EvalConfig, out_dir: Path | None, results: dict, cache: RequestCache | None
) -> tuple[int, int]:
    """lm-eval's tasks on the same backend and request cache, as per-row task results; returns the
    cache's (hits, misses) for their requests."""
    import tempfile

    from .lm_eval_tasks import run_lm_eval

    with tempfile.TemporaryDirectory() as scratch:
        run = run_lm_eval(backend, config, out_dir or Path(scratch), cache)
        for name, records, summary in run.tasks:
            results["tasks"][name] = summary
            if out_dir:
                _write_samples(out_dir, name, records)
    return run.cache_hits, run.cache_misses


def group_summary(tasks: dict[str, dict[str, Any]], key: str = "group") -> dict[str, dict[str, float]]:
    """Macro averages of score and normalized score per group (e.g. the 27 BBH tasks) or per cluster."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for summary in tasks.values():
        if summary.get(key):
            groups.setdefault(summary[key], []).append(summary)
    return {
        name: {
            "score": mean([m["score"] for m in members]),
            "normalized": macro_average([m["normalized"] for m in members]),
            "tasks": len(members),
        }
        for name, members in groups.items()
    }


def data_hash(task: EvalTask) -> str:
    """sha256 of the task's docs and exemplars as evaluated (changes when data or prompts change)."""
    payload = json.dumps(
        [
            [asdict(d) for d in task.docs],
            [asdict(d) for d in task.fewshot()],
            task.fewshot_text,
            task.description,
        ],
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return sha256_hex(payload)


def _write_samples(out_dir: Path, name: str, records: list[dict]) -> None:
    path = out_dir / "samples" / (name.replace("/", "__") + ".jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from .. import __version__

    return {
        "instructkit": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
