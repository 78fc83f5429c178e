"""lm-evaluation-harness tasks as catalog tasks: each document rendered by lm-eval's own task object.

lm-eval's prompts are Jinja or Python (`!function utils.x`); rather than translate them, each
document's `doc_to_text` / `doc_to_target` / `doc_to_choice` output is materialised into a row
(`prompt`, `target`, `choices`, `gold`), and the catalog task's one template passes it through
(`{{prompt}}` → `{{target}}`), so a rendered prompt is exactly lm-eval's text (stripped, as every
rendered template is). A task's document sets are named by their role, not by the dataset's split
names: `train` (lm-eval's training split), `validation`, `test`, `fewshot` (where lm-eval draws
exemplars) and `eval` (what lm-eval evaluates: test, else validation). lm-eval is imported lazily.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ...errors import InstructkitError
from .readers import Record

ROLES = ("train", "validation", "test", "fewshot", "eval")
TEMPLATE = {"id": "lm_eval", "input": "{{prompt}}", "target": "{{target}}"}
_HAS = {"train": "has_training_docs", "validation": "has_validation_docs", "test": "has_test_docs"}
_DOCS = {"train": "training_docs", "validation": "validation_docs", "test": "test_docs"}


@functools.lru_cache(maxsize=4)
def _task_manager(include: tuple[str, ...], defaults: bool) -> Any:
    return lm_eval_task_manager(include, defaults)


def lm_eval_task_manager(include: Sequence[str | Path] = (), defaults: bool = True) -> Any:
    """lm-eval's TaskManager over the `include` folders (and lm-eval's own tasks when `defaults`).

    The index of lm-eval's own ~15,000 task YAMLs takes ~6 s to build and changes only with lm-eval, so it is
    built once per process and the include folders' entries are merged over it (they win, as in the
    TaskManager's own merge). Where lm-eval's internals differ from 0.4.13's, the plain constructor runs.
    """
    task_manager = _task_manager_class()
    paths = [str(p) for p in include] or None
    if not defaults:
        return task_manager(include_path=paths, include_defaults=False)
    manager = task_manager(include_path=paths, include_defaults=False)
    try:
        _set_index(manager, {**_default_index(), **manager._index})
    except (AttributeError, ImportError):  # another lm-eval layout: index everything again
        return task_manager(include_path=paths)
    return manager


def _task_manager_class() -> Any:
    try:
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise InstructkitError(
            "lm-eval tasks need lm-evaluation-harness: pip install 'instructkit[test]'"
        ) from exc
    return TaskManager


@functools.cache
def _default_index() -> dict[str, Any]:
    """lm-eval's own tasks, indexed once per process (TaskIndex.build over its tasks folder)."""
    import lm_eval.tasks
    from lm_eval.tasks._index import TaskIndex

    return TaskIndex.build([Path(lm_eval.tasks.__file__).parent])


def _set_index(manager: Any, index: dict[str, Any]) -> None:
    """Give `manager` the merged index and the name lists TaskManager derives from it."""
    from lm_eval.tasks._index import Kind

    kinds: dict[Any, list[str]] = {}
    for name, entry in index.items():
        kinds.setdefault(entry.kind, []).append(name)
    manager._index = index
    manager._all_tasks = sorted(index)
    manager._all_subtasks = sorted(kinds.get(Kind.TASK, []) + kinds.get(Kind.PY_TASK, []))
    manager._all_groups = sorted(kinds.get(Kind.GROUP, []))
    manager._all_tags = sorted(kinds.get(Kind.TAG, []))


def _manager_for(name: str, include: tuple[str, ...]) -> Any:
    """A task manager that knows `name`: the `include` folders indexed alone first (about a second),
    lm-eval's own ~200 task folders too only when the name is not found there (much slower)."""
    for folder in include:
        if not Path(folder).is_dir():
            raise InstructkitError(f"lm-eval task {name!r}: include folder {folder} does not exist")
    manager = _task_manager(include, defaults=False) if include else None
    if manager is None or name not in manager.all_tasks:
        manager = _task_manager(include, defaults=True)
    if name not in manager.all_tasks:
        raise InstructkitError(
            f"unknown lm-eval task {name!r} (include folders: {', '.join(include) or 'none'}); "
            "`lm-eval ls tasks` lists lm-eval's tasks"
        )
    return manager


def task_config(name: str, include: tuple[str, ...] = ()) -> dict[str, Any]:
    """The task's YAML with its `include`s merged (no data read, no functions imported)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = _manager_for(name, include).task_index[name]
    if entry.yaml_path is None:
        return dict(entry.cfg or {})
    return load_yaml(entry.yaml_path, resolve_func=False, recursive=True)


@functools.lru_cache(maxsize=32)
def load_lm_eval_task(name: str, include: tuple[str, ...] = ()) -> Any:
    """lm-eval's task object for `name` (cached per process), its data read as lm-eval reads it.

    A hub dataset that cannot be reached gives instructkit's offline error; groups and tags (several
    tasks) are refused.
    """
    manager = _manager_for(name, include)
    try:
        loaded = manager.load([name])
    except Exception as exc:
        raise _load_error(name, include, exc) from exc
    tasks = loaded["tasks"]
    if len(tasks) != 1:
        raise InstructkitError(
            f"lm-eval {name!r} is a group or tag of {len(tasks)} tasks; import its tasks one by one: "
            + ", ".join(sorted(tasks))
        )
    return next(iter(tasks.values()))


def exemplar_role(config: dict[str, Any]) -> str:
    """Where lm-eval draws exemplars, as a role: `train` or `eval` when that is the same split (so
    an example is never its own exemplar), else `fewshot` (lm-eval's fewshot_docs fallback order)."""
    train, validation, test = (config.get(k) for k in ("training_split", "validation_split", "test_split"))
    samples = (config.get("fewshot_config") or {}).get("samples")
    source = config.get("fewshot_split") or (None if samples else train or validation or test)
    if source is not None and source == train:
        return "train"
    return "eval" if source is not None and source == (test or validation) else "fewshot"


def _load_error(name: str, include: tuple[str, ...], exc: Exception) -> InstructkitError:
    """The hub's offline error (naming the dataset) when the data had to come from the hub, else the cause."""
    from ...hub import hub_error

    dataset = task_config(name, include).get("dataset_path")
    error = hub_error("dataset", str(dataset or name), exc)
    hint = (
        "; to read local files, give lm-eval a task YAML that includes the official one and sets "
        "dataset_path: json and dataset_kwargs.data_files, in a folder passed as include"
    )
    return type(error)(
        f"lm-eval task {name!r}: {error}" + (hint if "hub cannot be reached" in str(error) else "")
    )


def _documents(task: Any, name: str, role: str) -> Any:
    """The documents of one role, as lm-eval itself selects them."""
    if role not in ROLES:
        raise InstructkitError(f"lm-eval task {name!r}: unknown split {role!r} (one of {', '.join(ROLES)})")
    if role == "fewshot":
        return task.fewshot_docs()
    if role == "eval":
        return task.eval_docs
    if not getattr(task, _HAS[role])():
        raise InstructkitError(f"lm-eval task {name!r} has no {role} split (lm-eval's {role}_split is unset)")
    return getattr(task, _DOCS[role])()


def _choice_text(choices: list[str] | None, value: Any, name: str, where: str) -> tuple[str, int | None]:
    """(target text, gold index) as lm-eval reads a target: with choices an int is an index and a
    text must be one of them (lm-eval's own rule); without, the target is the text."""
    if choices is None:
        return str(value), None
    if isinstance(value, str) and value in choices:
        return value, choices.index(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        return choices[value], value
    raise InstructkitError(
        f"lm-eval task {name!r} {where}: target {value!r} is neither an index into nor one of {choices}"
    )


def document_row(task: Any, doc: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    """One document as a catalog row: lm-eval's prompt, target text (a multiple-choice target is the
    gold option's text; of several targets the first), choices and gold index."""
    prompt = task.doc_to_text(doc)
    if not isinstance(prompt, str):
        raise InstructkitError(
            f"lm-eval task {name!r} {where}: doc_to_text gave {type(prompt).__name__}, not text "
            "(tasks with several contexts per document, e.g. winogrande, cannot be imported)"
        )
    multiple_choice = task.config.output_type == "multiple_choice"
    choices = [str(c) for c in task.doc_to_choice(doc)] if multiple_choice else None
    target = task.doc_to_target(doc)
    golds = target if isinstance(target, list) else [target]
    if not golds:
        raise InstructkitError(f"lm-eval task {name!r} {where}: doc_to_target gave no target")
    text, gold = _choice_text(choices, golds[0], name, where)
    return {
        "prompt": prompt,
        "target": text,
        "choices": choices,
        "gold": gold,
        "_target_delimiter": task.config.target_delimiter,  # `_`: not document text (decontamination)
        "_output_type": task.config.output_type,
    }


def lm_eval_records(name: str, role: str, include: tuple[str, ...] = ()) -> Iterator[Record]:
    """(source, row number, row) for each document of one role (row numbers from 1)."""
    task = load_lm_eval_task(name, tuple(str(Path(p)) for p in include))
    source = f"lm_eval:{name}:{role}"
    for i, doc in enumerate(_documents(task, name, role), start=1):
        yield source, i, document_row(task, doc, name, f"{role} document {i}")


def lm_eval_task_entry(entry: dict[str, Any], base_dir: Path | None = None) -> dict[str, Any]:
    """A catalog entry `{lm_eval: TASK, include: [...], ...}` expanded into a full task definition.

    The task is named `lm_eval_<TASK>`, in cluster `<TASK>` and collection `lm_eval`; other keys
    (name, cluster, collection, held_out_templates, ...) override these defaults; relative
    `include` folders resolve against the YAML's directory. Only the task's YAML is read here (for
    `exemplar_split`, unless the entry sets it); documents are read when rows are asked for.
    """
    entry = dict(entry)
    name = str(entry.pop("lm_eval"))
    include = [
        str(p if p.is_absolute() or base_dir is None else base_dir / p)
        for p in map(Path, entry.pop("include", None) or [])
    ]
    if "exemplar_split" not in entry:
        entry["exemplar_split"] = exemplar_role(task_config(name, tuple(include)))
    splits = {
        role: {"lm_eval": name, "split": role, "include": include} for role in ("train", "fewshot", "eval")
    }
    return {
        "name": f"lm_eval_{name}",  # beside the catalog's own tasks of the same data (gsm8k)
        "cluster": name,
        "collection": "lm_eval",
        "description": f"lm-eval task {name}: lm-eval's own prompts and targets",
        "splits": splits,
        "answer_field": "target",
        "eval_split": "eval",
        "templates": [TEMPLATE],
        **entry,
    }


def _roles_present(task: Any) -> list[str]:
    """The roles an imported task gets: train when lm-eval has a training split, always fewshot and eval."""
    return (["train"] if task.has_training_docs() else []) + ["fewshot", "eval"]


def import_lm_eval_task(name: str, data_dir: Path, include: tuple[str, ...] = ()) -> dict[str, Any]:
    """Materialise one lm-eval task: `<data_dir>/<name>/<role>.jsonl` rows and its catalog entry.

    The entry reads those files (absolute paths, so no data root can shadow them) with the
    pass-through template, so training needs no lm-eval and the rows are identified by content.
    """
    import json

    from ...atomic import atomic_file

    task = load_lm_eval_task(name, include)
    splits = {}
    for role in _roles_present(task):
        path = (data_dir / name / f"{role}.jsonl").resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, encoding="utf-8") as handle:
            for _, _, row in lm_eval_records(name, role, include):
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        splits[role] = {"files": [str(path)]}
    entry = lm_eval_task_entry({"lm_eval": name, "exemplar_split": exemplar_role(task_config(name, include))})
    from importlib.metadata import version

    materialised = f"{entry['description']} (rows written by lm-eval {version('lm_eval')})"
    return {**entry, "splits": splits, "description": materialised}


def write_lm_eval_catalog(names: list[str], out: Path, include: tuple[str, ...] = ()) -> Path:
    """Import `names` into one catalog YAML: `out` itself when it ends in .yaml, else `out/lm_eval_tasks.yaml`;
    the rows go in folders beside it. Returns the YAML's path."""
    import yaml

    from ...atomic import atomic_file

    catalog = out if out.suffix in (".yaml", ".yml") else out / "lm_eval_tasks.yaml"
    catalog.parent.mkdir(parents=True, exist_ok=True)
    tasks = [import_lm_eval_task(n, catalog.parent, include) for n in names]
    with atomic_file(catalog, encoding="utf-8") as handle:
        yaml.safe_dump({"tasks": tasks}, handle, sort_keys=False, allow_unicode=True)
    return catalog
