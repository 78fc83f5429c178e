"""The task catalog: YAML files of tasks (built-in and user directories), loaded and selected."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from ...errors import InstructkitError
from ...settings_io import describe, parse_yaml
from ..catalog import BUILTIN_DIR
from ..catalog.lm_eval import lm_eval_task_entry
from ..templates import TemplateError
from .schema import Task


def _format_validation(file: Path, index: int, name: str, exc: ValidationError) -> str:
    return f"{file}: task #{index} ({name}): {describe(Task, exc)}"


def load_task_file(path: Path) -> list[Task]:
    """Tasks of one YAML file (`tasks:` list, optional `defaults:` merged under each task)."""
    try:
        data = parse_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InstructkitError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise InstructkitError(f"{path}: expected a mapping with a `tasks:` list")
    defaults = data.get("defaults") or {}
    tasks = []
    for i, entry in enumerate(data["tasks"]):
        name = entry.get("name", entry.get("lm_eval", "?")) if isinstance(entry, dict) else "?"
        if isinstance(entry, dict) and "lm_eval" in entry:  # an lm-eval task, its documents as rows
            try:
                entry = lm_eval_task_entry({**defaults, **entry}, path.parent)
            except InstructkitError as exc:
                raise InstructkitError(f"{path}: task #{i} ({name}): {exc}") from exc
        try:
            task = Task.model_validate({**defaults, **entry})
        except ValidationError as exc:
            raise InstructkitError(_format_validation(path, i, name, exc)) from exc
        except TemplateError as exc:
            raise InstructkitError(f"{path}: task #{i} ({name}): {exc}") from exc
        task._base_dir, task._file = path.parent, str(path)
        tasks.append(task)
    return tasks


def load_catalog(dirs: list[str | Path] | None = None, include_builtin: bool = True) -> dict[str, Task]:
    """All tasks of the built-in catalog plus `dirs` (later directories may not redefine a name)."""
    roots = ([BUILTIN_DIR] if include_builtin else []) + [Path(d) for d in dirs or []]
    catalog: dict[str, Task] = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*.yaml"))
        if not root.exists():
            raise InstructkitError(f"catalog directory {root} does not exist")
        for file in files:
            for task in load_task_file(file):
                if task.name in catalog:
                    raise InstructkitError(
                        f"{file}: task {task.name!r} already defined in {catalog[task.name].file}"
                    )
                catalog[task.name] = task
    return catalog


def select_tasks(catalog: dict[str, Task], *, names=(), clusters=(), collections=()) -> list[Task]:
    """Tasks matching any of the names, clusters or collections, in catalog order."""
    unknown = [n for n in names if n not in catalog]
    if unknown:
        raise InstructkitError(f"unknown task(s) {unknown}; `instructkit tasks list` shows the catalog")
    return [
        t for t in catalog.values() if t.name in names or t.cluster in clusters or t.collection in collections
    ]
