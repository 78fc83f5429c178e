"""lm-eval tasks in `instructkit eval run` (`--lm-eval-tasks`): resolve the names with lm-eval's
TaskManager, run them on the built backend through `InstructkitLM`, and turn each task's per-sample
metric values into instructkit's per-row records and task summary, so intervals, paired tests and
`eval compare` work on them as on instructkit's own tasks.

A record is one document (`id` = lm-eval's doc_id) holding every metric value lm-eval logged for it,
keyed `metric` (filter `none`) or `metric,filter`; a summary keeps lm-eval's own aggregates under
`lm_eval`. Metrics that are means of per-row values in [0, 1] are scaled × 100 (instructkit's 0–100 scale);
others (perplexities) keep lm-eval's value.
lm-eval's requests go through the same request cache (cache.sqlite) as instructkit's own, keyed by
the model and the LM's settings (lm_eval_cache.py): an interrupted run resumes, a re-run costs nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import InstructkitError
from ..fingerprint import sha256_hex
from ..hub import _is_connection_problem, hub_error
from ..settings_io import parse_yaml
from .backends.base import Backend
from .cache import RequestCache
from .config import EvalConfig
from .metrics import bootstrap_ci, mean, normalized_score

PREFIX = "lm_eval/"
LM_EVAL_OPTIONS = ("num_fewshot",)  # what a task spec (gsm8k:num_fewshot=8) or suite entry may set
NOT_METRICS = ("alias", "name", "sample_len", "samples")  # lm-eval's bookkeeping in a task's results


@dataclass
class LmEvalRun:
    """What `run_lm_eval` returns: each task's (name, per-row records, summary), and the request cache's
    hits and misses for lm-eval's requests."""

    tasks: list[tuple[str, list, dict]]
    cache_hits: int = 0
    cache_misses: int = 0


def run_lm_eval(
    backend: Backend, config: EvalConfig, work_dir: Path, cache: RequestCache | None = None
) -> LmEvalRun:
    """Every lm-eval task of `config`, run on `backend` (answers read from and stored in `cache` when
    given). With `config.data_dir`, the official task YAMLs over its local files are written to `work_dir`.
    """
    from .lm_eval_model import lm_from_backend, run_lm_eval_tasks

    specs = parse_lm_eval_specs(config.lm_eval_tasks)
    names = list(specs)
    manager = task_manager(names, config, work_dir)
    if any("ifeval" in n for n in names):
        from .punkt_tab import require_punkt_tab

        require_punkt_tab()
    lm = lm_from_backend(backend)
    lm.use_cache(cache)
    shots = {name: options["num_fewshot"] for name, options in specs.items() if "num_fewshot" in options}
    options = {"limit": config.limit, "random_seed": config.seed, "task_num_fewshot": shots}
    try:
        out = run_lm_eval_tasks(lm, names, task_manager=manager, **options, **chat_options(config, backend))
    except InstructkitError:
        raise
    except Exception as exc:
        if _is_connection_problem(exc):
            raise hub_error("lm-eval task data for", ",".join(names), exc) from exc
        raise
    tasks = []
    for task, samples in out["samples"].items():
        records = task_records(samples)
        tasks.append(
            (PREFIX + task, records, task_summary(task, records, out, config.bootstrap, config.seed))
        )
    return LmEvalRun(tasks, lm.cache_hits, lm.cache_misses)


def parse_lm_eval_specs(specs: list[str]) -> dict[str, dict[str, Any]]:
    """`['gsm8k:num_fewshot=8', 'piqa']` → {'gsm8k': {'num_fewshot': 8}, 'piqa': {}}, in order; an unknown
    option, a bad value or one task named twice with different options is refused in one line."""
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        name, _, opts = spec.partition(":")
        options: dict[str, Any] = {}
        for item in filter(None, (o.strip() for o in opts.split(","))):
            key, _, value = item.partition("=")
            options[key.strip()] = _yaml_value(value)
        check_lm_eval_options(options, f"lm-eval task {spec!r}")
        name = name.strip()
        if out.get(name, options) != options:
            raise InstructkitError(
                f"lm-eval task {name} is named twice with different options ({out[name]} and {options})"
            )
        out[name] = options
    return out


def check_lm_eval_options(options: dict[str, Any], where: str) -> None:
    """Only `num_fewshot` (a whole number ≥ 0): lm-eval's definition sets the rest of a task."""
    unknown = sorted(set(options) - set(LM_EVAL_OPTIONS))
    if unknown:
        raise InstructkitError(
            f"{where}: unknown option(s) {', '.join(unknown)}; an lm-eval task takes only "
            f"{', '.join(LM_EVAL_OPTIONS)} (its own definition sets prompts, filters and metrics)"
        )
    shots = options.get("num_fewshot")
    if "num_fewshot" in options and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 0):
        raise InstructkitError(f"{where}: num_fewshot={shots!r} must be a whole number >= 0")


def chat_options(config: EvalConfig, backend: Backend) -> dict[str, Any]:
    """lm-eval's chat flags for `--prompt-style`: chat is `lm_eval --apply_chat_template
    --fewshot_as_multiturn false` (exemplars and question in one user turn), chat_multiturn is
    `--apply_chat_template` (each exemplar its own exchange); base renders plain text."""
    if config.prompt_style == "base":
        return {"apply_chat_template": False, "fewshot_as_multiturn": False}
    if not getattr(getattr(backend, "tokenizer", None), "chat_template", None):
        raise InstructkitError(
            f"--prompt-style {config.prompt_style}: the model's tokenizer has no chat template for lm-eval's "
            "tasks; use --prompt-style base"
        )
    return {"apply_chat_template": True, "fewshot_as_multiturn": config.prompt_style == "chat_multiturn"}


def task_manager(names: list[str], config: EvalConfig, work_dir: Path) -> Any:
    """lm-eval's TaskManager with `--lm-eval-include` folders (and the local task YAMLs of
    `--data-dir`); an unknown task name is refused in one line."""
    from ..data.catalog.lm_eval import lm_eval_task_manager

    include = [str(Path(p)) for p in config.lm_eval_include]
    for path in include:
        if not Path(path).exists():
            raise InstructkitError(f"--lm-eval-include {path}: no such file or folder")
    if config.data_dir:
        from .lm_eval_local import local_task_dir

        local = work_dir / "lm_eval_tasks"
        local_task_dir(Path(config.data_dir), local)
        include.append(str(local))
    manager = lm_eval_task_manager(include)
    known = set(manager.all_tasks)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InstructkitError(
            f"unknown lm-eval task(s) {', '.join(unknown)}: not among lm-eval's {len(known)} tasks, groups "
            "and tags (add task YAML folders with --lm-eval-include; list names with `lm-eval ls tasks`)"
        )
    return manager


def task_records(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per document (lm-eval logs one sample per document and filter)."""
    by_doc: dict[int, dict[str, Any]] = {}
    for sample in samples:
        record = by_doc.setdefault(
            sample["doc_id"],
            {
                "id": str(sample["doc_id"]),
                "doc_hash": sample.get("doc_hash"),
                "n_resps": len(sample["resps"]),
            },
        )
        for metric in sample["metrics"]:
            value = sample[metric]  # numpy scalars (some metrics) as Python numbers for JSON
            record[_key(metric, sample["filter"])] = value.item() if hasattr(value, "item") else value
        record.setdefault("responses", {})[sample["filter"]] = _jsonable(sample["filtered_resps"])
    return list(by_doc.values())


def task_summary(
    task: str, records: list[dict[str, Any]], out: dict[str, Any], resamples: int, seed: int
) -> dict[str, Any]:
    """The summary `runner.task_summary` writes for own tasks, from lm-eval's output for `task`."""
    aggregates = {
        _short(k): v
        for k, v in out["results"][task].items()
        if "_stderr" not in k and k not in NOT_METRICS and _is_number(v)
    }
    if not aggregates:
        raise InstructkitError(f"lm-eval task {task}: no numeric metric in {sorted(out['results'][task])}")
    per_row = row_metrics(records, aggregates)
    metrics = {k: 100 * float(v) if k in per_row else float(v) for k, v in aggregates.items()}
    metric = per_row[0] if per_row else next(iter(aggregates))
    rows = [100 * float(r[metric]) for r in records if _is_number(r.get(metric))]
    low, high = bootstrap_ci(rows, resamples, seed) if per_row else (math.nan, math.nan)
    config = out.get("configs", {}).get(task, {})
    baseline = _random_baseline(config.get("output_type"), records) if per_row else 0.0
    score = metrics[metric]
    return {
        "metric": metric,
        "score": score,
        "ci95": [low, high],
        "metrics": metrics,
        "lm_eval": _jsonable(out["results"][task]),
        "n": len(records),
        "random_baseline": baseline,
        "normalized": normalized_score(score, baseline),
        "group": PREFIX + task,
        "cluster": None,
        "method": f"lm_eval:{config.get('output_type', '?')}",
        "num_fewshot": out.get("n-shot", {}).get(task),
        "data_sha256": sha256_hex(json.dumps([(r["id"], r["doc_hash"]) for r in records])),
    }


def row_metrics(records: list[dict[str, Any]], aggregates: dict[str, float]) -> list[str]:
    """The metrics (lm-eval's order) whose per-row values lie in [0, 1] and average to lm-eval's
    aggregate: scored 0–100 with intervals and paired tests; the first is the task's score."""
    found = []
    for name, value in aggregates.items():
        values = [r.get(name) for r in records]
        in_unit = bool(values) and all(_is_number(v) and 0 <= v <= 1 for v in values)
        if in_unit and math.isclose(mean([float(v) for v in values]), float(value), abs_tol=1e-9):
            found.append(name)
    return found


def _random_baseline(output_type: str | None, records: list[dict[str, Any]]) -> float:
    """Chance accuracy of a multiple-choice task (mean of 100 / choices); 0 for everything else."""
    if output_type == "multiple_choice" and records:
        return mean([100.0 / max(r["n_resps"], 1) for r in records])
    return 0.0


def _yaml_value(text: str) -> Any:
    try:
        return parse_yaml(text)
    except yaml.YAMLError:
        return text  # refused by check_lm_eval_options, with the text as typed


def _key(metric: str, filt: str) -> str:
    return metric if filt == "none" else f"{metric},{filt}"


def _short(key: str) -> str:
    """lm-eval's `acc,none` as `acc`; `exact_match,strict-match` unchanged."""
    return key[: -len(",none")] if key.endswith(",none") else key


def _is_number(value: Any) -> bool:
    """A finite number (a bool counts: IFEval's per-row values are True/False)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
