"""Benchmarks by name and suites (YAML): which loader builds which tasks, and where local files live.

A suite file lists entries, each either a benchmark with options or a catalog task:

    name: my-suite
    tasks:
      - {benchmark: gsm8k, cot: true, num_fewshot: 8}
      - {benchmark: mmlu, num_fewshot: 5, subjects: [anatomy]}
      - {catalog: some_catalog_task, num_fewshot: 0}
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ...errors import InstructkitError
from ..spec import EvalTask
from .bbh import load_bbh
from .math import load_aqua, load_gsm8k, load_mgsm
from .multiple_choice import load_arc, load_boolq, load_hellaswag, load_mmlu, load_piqa
from .open_ended import load_open_ended
from .open_qa import load_humaneval, load_tydiqa

Loader = Callable[..., list[EvalTask]]

# name → (loader, folder under --data-dir holding its local files)
BENCHMARKS: dict[str, tuple[Loader, str]] = {
    "bbh": (load_bbh, "bbh"),
    "gsm8k": (load_gsm8k, "gsm8k"),
    "mgsm": (load_mgsm, "mgsm"),
    "aqua": (load_aqua, "aqua"),
    "piqa": (load_piqa, "piqa"),
    "mmlu": (load_mmlu, "mmlu"),
    "tydiqa": (load_tydiqa, "tydiqa"),
    "arc": (load_arc, "arc"),
    "boolq": (load_boolq, "boolq"),
    "hellaswag": (load_hellaswag, "hellaswag"),
    "humaneval": (load_humaneval, "humaneval"),
    "open_ended": (load_open_ended, "self_instruct"),
}

SUITE_DIR = Path(__file__).parent
# EvalTask fields any entry may set after loading (e.g. a shorter token limit for a quick run).
TASK_OVERRIDES = {"max_new_tokens", "samples", "temperature", "extractor", "metric", "cluster", "stop"}


def builtin_suites() -> list[str]:
    """Names of the suites shipped with the toolkit (flan, tulu, …)."""
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml") if not p.stem.endswith("exemplars"))


def load_benchmark(name: str, data_dir: Path | None = None, **options: Any) -> list[EvalTask]:
    """Tasks of one benchmark, reading `<data_dir>/<folder>` when it exists and the hub otherwise."""
    if name not in BENCHMARKS:
        raise InstructkitError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    loader, folder = BENCHMARKS[name]
    local = Path(data_dir) / folder if data_dir is not None and (Path(data_dir) / folder).is_dir() else None
    return loader(local, **options)


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
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(spec.get("tasks"), list):
        raise InstructkitError(f"{path}: a suite needs a 'tasks' list")
    for i, entry in enumerate(spec["tasks"]):
        if not isinstance(entry, dict) or not ({"benchmark", "catalog"} & entry.keys()):
            raise InstructkitError(f"{path}: tasks[{i}]: each entry needs 'benchmark' or 'catalog'")
    spec.setdefault("name", path.stem)
    return spec


def tasks_from_entries(entries: list[dict[str, Any]], data_dir: Path | None = None) -> list[EvalTask]:
    """Build every task a suite (or a --tasks list) names."""
    tasks: list[EvalTask] = []
    for entry in entries:
        options = {k: v for k, v in entry.items() if k not in ("benchmark", "catalog", *TASK_OVERRIDES)}
        if "catalog" in entry:
            from ..catalog_tasks import load_catalog_task

            built = load_catalog_task(entry["catalog"], data_dir=data_dir, **options)
        else:
            built = load_benchmark(entry["benchmark"], data_dir, **options)
        for task in built:
            for key in TASK_OVERRIDES & entry.keys():
                setattr(task, key, tuple(entry[key]) if key == "stop" else entry[key])
        tasks += built
    return tasks


def parse_task_spec(spec: str) -> dict[str, Any]:
    """'gsm8k:cot=true,num_fewshot=8' → {'benchmark': 'gsm8k', 'cot': True, 'num_fewshot': 8}; a|b is a list."""
    name, _, opts = spec.partition(":")
    entry: dict[str, Any] = (
        {"catalog": name[len("catalog/") :]} if name.startswith("catalog/") else {"benchmark": name}
    )
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        entry[key.strip()] = yaml.safe_load(value) if "|" not in value else value.split("|")
    if entry.get("benchmark") in ("bbh", "mgsm", "tydiqa", "mmlu"):  # one name still means a list
        for key in ("tasks", "languages", "subjects"):
            if isinstance(entry.get(key), str):
                entry[key] = [entry[key]]
    return entry
