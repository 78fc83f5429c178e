"""Benchmarks by name and suites (YAML): which loader builds which tasks, and where local files live.

Before anything loads, the benchmarks a run names are announced with where each comes from (a
local folder under --data-dir, or the hub). A part of a *suite* that needs the unreachable hub is
left out and named (the suite runs on what the data directory holds); a benchmark asked for by
name (`-t tydiqa`) must load.

A suite file lists entries, each a benchmark with options, a catalog task, or an lm-eval task (its
own definition, run through lm-eval on the same backend; `include` adds a folder of task YAMLs,
relative to the suite file):

    name: my-suite
    tasks:
      - {benchmark: gsm8k, cot: true, num_fewshot: 8}
      - {benchmark: mmlu, num_fewshot: 5, subjects: [anatomy]}
      - {catalog: some_catalog_task, num_fewshot: 0}
      - {lm_eval: arc_easy}
      - {lm_eval: my_task, include: my_lm_eval_tasks/}
      - {lm_eval: gsm8k, num_fewshot: 8}
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import HubUnreachableError, InstructkitError
from ...progress import log_event
from ...settings_io import parse_yaml
from ..spec import EvalTask
from .bbh import load_bbh
from .math import load_aqua, load_gsm8k, load_mgsm
from .multiple_choice import load_arc, load_boolq, load_hellaswag, load_mmlu, load_piqa
from .open_ended import load_open_ended
from .open_qa import load_humaneval, load_tydiqa

Loader = Callable[..., list[EvalTask]]

# name → (loader, folder under --data-dir holding its local files, hub dataset read without them)
BENCHMARKS: dict[str, tuple[Loader, str, str | None]] = {
    "bbh": (load_bbh, "bbh", None),
    "gsm8k": (load_gsm8k, "gsm8k", "openai/gsm8k"),
    "mgsm": (load_mgsm, "mgsm", None),
    "aqua": (load_aqua, "aqua", None),
    "piqa": (load_piqa, "piqa", "baber/piqa"),
    "mmlu": (load_mmlu, "mmlu", "cais/mmlu"),
    "tydiqa": (load_tydiqa, "tydiqa", "google-research-datasets/tydiqa"),
    "arc": (load_arc, "arc", "allenai/ai2_arc"),
    "boolq": (load_boolq, "boolq", "google/boolq"),
    "hellaswag": (load_hellaswag, "hellaswag", "Rowan/hellaswag"),
    "humaneval": (load_humaneval, "humaneval", "openai/openai_humaneval"),
    "open_ended": (load_open_ended, "self_instruct", None),
}

SUITE_DIR = Path(__file__).parent
ENTRY_KINDS = {"benchmark", "catalog", "lm_eval"}
# EvalTask fields any entry may set after loading (e.g. a shorter token limit for a quick run).
TASK_OVERRIDES = {"max_new_tokens", "samples", "temperature", "extractor", "metric", "cluster", "stop"}


def builtin_suites() -> list[str]:
    """Names of the suites shipped with the toolkit (flan, tulu, …)."""
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml") if not p.stem.endswith("exemplars"))


def load_benchmark(name: str, data_dir: Path | None = None, **options: Any) -> list[EvalTask]:
    """Tasks of one benchmark, reading `<data_dir>/<folder>` when it exists and the hub otherwise."""
    if name not in BENCHMARKS:
        raise InstructkitError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name][0](local_folder(name, data_dir), **options)


def local_folder(name: str, data_dir: Path | None) -> Path | None:
    """`<data_dir>/<folder>` of a benchmark when that folder exists, else None (the hub, if it has one)."""
    folder = Path(data_dir) / BENCHMARKS[name][1] if data_dir is not None else None
    return folder if folder is not None and folder.is_dir() else None


def source_plan(entries: list[dict[str, Any]], data_dir: Path | None) -> list[str]:
    """One line per suite (and one for benchmarks named alone): which parts read local files, which
    need the hub, and which have neither; computed from folder names only, before anything loads."""
    plans: dict[str, dict[str, list[str]]] = {}
    for entry in entries:
        name = entry.get("benchmark")
        if name not in BENCHMARKS:
            continue
        plan = plans.setdefault(f"suite {entry['suite']}" if entry.get("suite") else "benchmarks", {})
        hub = BENCHMARKS[name][2]
        if local_folder(name, data_dir) is not None:
            kind = f"from {data_dir}"
        elif hub:
            kind, name = "from the hub", f"{name} ({hub})"
        else:
            kind = f"missing (no {BENCHMARKS[name][1]}/ folder under --data-dir, and not on the hub)"
        plan.setdefault(kind, [])
        if name not in plan[kind]:
            plan[kind].append(name)
    return [
        f"{who}: " + "; ".join(f"{kind}: {', '.join(names)}" for kind, names in plan.items())
        for who, plan in plans.items()
    ]


def read_suite(name_or_path: str) -> dict[str, Any]:
    """A suite definition from a built-in name or a YAML path, checked for a `tasks` list."""
    path = Path(name_or_path)
    if not path.is_file():
        path = SUITE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise InstructkitError(
            f"unknown suite {name_or_path!r}: not a file, and built-in suites are "
            f"{', '.join(builtin_suites())}"
        )
    spec = parse_yaml(path.read_text(encoding="utf-8")) or {}
    if not isinstance(spec.get("tasks"), list):
        raise InstructkitError(f"{path}: a suite needs a 'tasks' list")
    for i, entry in enumerate(spec["tasks"]):
        if not isinstance(entry, dict) or len(ENTRY_KINDS & entry.keys()) != 1:
            raise InstructkitError(
                f"{path}: tasks[{i}]: each entry needs one of 'benchmark', 'catalog', 'lm_eval'"
            )
        if "lm_eval" in entry:
            _check_lm_eval_entry(entry, path, i)
    spec.setdefault("name", path.stem)
    for entry in spec["tasks"]:
        entry.setdefault("suite", spec["name"])  # a suite's parts may be left out when the hub is unreachable
    return spec


def _check_lm_eval_entry(entry: dict[str, Any], path: Path, index: int) -> None:
    """An lm-eval entry takes its task name, an optional `include` folder (made absolute here) and the
    options of an `--lm-eval-tasks` spec (`num_fewshot`)."""
    from ..lm_eval_tasks import LM_EVAL_OPTIONS, check_lm_eval_options

    extra = sorted(entry.keys() - {"lm_eval", "include", *LM_EVAL_OPTIONS})
    if extra:
        allowed = ", ".join(repr(k) for k in ("lm_eval", "include", *LM_EVAL_OPTIONS))
        raise InstructkitError(
            f"{path}: tasks[{index}]: an lm_eval entry takes only {allowed} (got {', '.join(extra)}): "
            "lm-eval's own task definition sets its prompts, filters and metrics"
        )
    check_lm_eval_options({k: entry[k] for k in LM_EVAL_OPTIONS if k in entry}, f"{path}: tasks[{index}]")
    if "include" in entry:
        entry["include"] = str((path.parent / entry["include"]).resolve())


def lm_eval_entries(entries: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(lm-eval task specs such as `gsm8k:num_fewshot=5`, include folders) of a suite's lm_eval entries,
    in order, without repeats."""
    names = [_lm_eval_spec(e) for e in entries if "lm_eval" in e]
    include = [e["include"] for e in entries if "lm_eval" in e and "include" in e]
    return list(dict.fromkeys(names)), list(dict.fromkeys(include))


def _lm_eval_spec(entry: dict[str, Any]) -> str:
    shots = entry.get("num_fewshot")
    return str(entry["lm_eval"]) + (f":num_fewshot={shots}" if shots is not None else "")


def tasks_from_entries(entries: list[dict[str, Any]], data_dir: Path | None = None) -> list[EvalTask]:
    """Build every task a suite (or a --tasks list) names, saying first where each benchmark comes from."""
    for line in source_plan(entries, data_dir):
        log_event("eval", line)
    tasks: list[EvalTask] = []
    for entry in (e for e in entries if "lm_eval" not in e):  # lm-eval runs those (runner.run_tasks)
        built = _entry_tasks(entry, data_dir)
        for task in built:
            for key in TASK_OVERRIDES & entry.keys():
                setattr(task, key, tuple(entry[key]) if key == "stop" else entry[key])
        tasks += built
    return tasks


def _entry_tasks(entry: dict[str, Any], data_dir: Path | None) -> list[EvalTask]:
    """The tasks of one entry; a suite's benchmark that needs the unreachable hub gives none, said aloud."""
    options = {k: v for k, v in entry.items() if k not in ("benchmark", "catalog", "suite", *TASK_OVERRIDES)}
    if "catalog" in entry:
        from ..catalog_tasks import load_catalog_task

        return load_catalog_task(entry["catalog"], data_dir=data_dir, **options)
    try:
        return load_benchmark(entry["benchmark"], data_dir, **options)
    except HubUnreachableError:
        if not entry.get("suite"):
            raise
        _, folder, hub = BENCHMARKS[entry["benchmark"]]
        where = f"{data_dir} has no {folder}/ folder" if data_dir else "no --data-dir was given"
        log_event(
            "eval",
            f"suite {entry['suite']}: {entry['benchmark']} left out: {where} and the hub ({hub}) "
            "cannot be reached",
        )
        return []


def parse_task_spec(spec: str) -> dict[str, Any]:
    """'gsm8k:cot=true,num_fewshot=8' → {'benchmark': 'gsm8k', 'cot': True, 'num_fewshot': 8}; a|b is a list."""
    name, _, opts = spec.partition(":")
    entry: dict[str, Any] = (
        {"catalog": name[len("catalog/") :]} if name.startswith("catalog/") else {"benchmark": name}
    )
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        entry[key.strip()] = parse_yaml(value) if "|" not in value else value.split("|")
    list_keys = ("templates",) if "catalog" in entry else ()
    if entry.get("benchmark") in ("bbh", "mgsm", "tydiqa", "mmlu"):
        list_keys = ("tasks", "languages", "subjects")
    for key in list_keys:  # one name still means a list
        if isinstance(entry.get(key), str):
            entry[key] = [entry[key]]
    return entry
