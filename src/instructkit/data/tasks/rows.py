"""A task's rows: read from its source, fields mapped in the sandbox, split, cached by file content."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import BadRowError, InstructkitError
from ..catalog.readers import READERS, Record, explode
from ..procedural import generate
from ..procedural.rng import stable_rng
from ..rejects import RejectLog
from ..templates import TemplateError, evaluate_expression
from .schema import Task, TaskSource


def data_root(explicit: str | Path | None = None) -> Path:
    """Where relative task files live: explicit, $INSTRUCTKIT_DATA_ROOT, $INSTRUCTKIT_SHARED_DATA, or shared/data above cwd."""
    for candidate in (
        explicit,
        os.environ.get("INSTRUCTKIT_DATA_ROOT"),
        os.environ.get("INSTRUCTKIT_SHARED_DATA"),
    ):
        if candidate:
            return Path(candidate).expanduser()
    for base in (Path.cwd(), *Path.cwd().parents):
        if (base / "shared" / "data").is_dir():
            return base / "shared" / "data"
    return Path.cwd()


def resolve_files(task: Task, source: TaskSource, root: Path) -> list[Path]:
    files: list[Path] = []
    for pattern in source.files or []:
        bases = [Path("")] if Path(pattern).is_absolute() else [root, task._base_dir or Path.cwd()]
        matches = next(
            (sorted(glob.glob(str(b / pattern))) for b in bases if glob.glob(str(b / pattern))), []
        )
        if not matches:
            where = ", ".join(str(b) for b in bases)
            raise InstructkitError(
                f"task {task.name!r} ({task.file}): no files match {pattern!r} under {where}; "
                "set INSTRUCTKIT_DATA_ROOT to the directory holding the data"
            )
        files.extend(Path(m) for m in matches)
    return files


def _raw_records(task: Task, source: TaskSource, root: Path, rejects: RejectLog) -> Iterator[Record]:
    from ..sources import iter_file_rows

    if source.procedural:
        for i, row in enumerate(
            generate(source.procedural, source.size, source.seed, source.params), start=1
        ):
            yield f"procedural:{source.procedural}", i, row
    elif source.hub:
        from ...hub import load_hub_dataset

        for i, row in enumerate(
            load_hub_dataset(source.hub, source.config, source.split or "train"), start=1
        ):
            yield source.hub, i, dict(row)
    elif source.lm_eval:
        from ..catalog.lm_eval import lm_eval_records

        base = task._base_dir or Path.cwd()
        include = tuple(str(p if p.is_absolute() else base / p) for p in map(Path, source.include))
        yield from lm_eval_records(source.lm_eval, source.split or "train", include)
    else:
        for path in resolve_files(task, source, root):
            for raw in iter_file_rows(path):
                if raw.error is not None:
                    rejects.reject(raw.error)
                else:
                    yield raw.file, raw.row, raw.record


def _per_record(records: Iterator[Record], fn, rejects: RejectLog) -> Iterator[Record]:
    """Apply a one-record → rows function; a bad record is rejected alone (with on_error=skip)."""
    for record in records:
        try:
            yield from list(fn([record]))
        except BadRowError as exc:
            rejects.reject(exc)


def _map_fields(task: Task, file: str, row: int, record: dict[str, Any]) -> dict[str, Any]:
    where = f"{record['_element']}." if "_element" in record else ""
    mapped = dict(record)
    try:
        for name, expression in task.fields.items():
            mapped[name] = evaluate_expression(expression, record, task=task.name, field=name)
    except TemplateError as exc:
        raise BadRowError(file, row, where + exc.field, exc.reason) from exc
    required = (
        ["messages"]
        if task.kind == "chat"
        else [task.answer_field] + ([task.rationale_field] if task.rationale_field else [])
    )
    for name in required:
        value = mapped.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise BadRowError(file, row, where + name, "missing or empty")
    mapped["_source"] = f"{file}:{row}"
    return mapped


def _load_source(task: Task, source: TaskSource, root: Path, rejects: RejectLog) -> list[dict[str, Any]]:
    records = _raw_records(task, source, root, rejects)
    if source.explode:
        records = _per_record(records, lambda rs: explode(rs, source.explode), rejects)
    reader = READERS[source.reader]
    records = reader(records) if source.reader == "oasst_tree" else _per_record(records, reader, rejects)
    rows = []
    for file, row, record in records:
        try:
            rows.append(_map_fields(task, file, row, record))
        except BadRowError as exc:
            rejects.reject(exc)
    return rows


def _partition(task: Task, n: int, split: str) -> list[int]:
    if split not in task.split_fractions:
        raise InstructkitError(
            f"task {task.name!r}: no split {split!r} (splits: {', '.join(task.split_names())})"
        )
    order = stable_rng("split", task.name).permutation(n)
    total, start = sum(task.split_fractions.values()), 0.0
    for name, fraction in task.split_fractions.items():
        lo, hi = round(start / total * n), round((start + fraction) / total * n)
        if name == split:
            return sorted(int(i) for i in order[lo:hi])
        start += fraction
    return []


_ROW_CACHE: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}


def _source_digests(task: Task, root: Path) -> list[str]:
    """Content digests of the local files behind a task (empty for hub and procedural sources)."""
    from ...fingerprint import file_digest

    digests = []
    for source in [task.source] if task.source else list((task.splits or {}).values()):
        if source is None or not source.files:
            continue
        try:
            digests += [file_digest(f) for f in resolve_files(task, source, root)]
        except InstructkitError:
            digests.append("unresolved")  # the read itself will raise the clear error
    return digests


def task_rows(
    task: Task,
    split: str,
    *,
    root: str | Path | None = None,
    rejects: RejectLog | None = None,
) -> list[dict[str, Any]]:
    """The mapped rows of one split (cached per process).

    Bad rows follow `rejects`' policy: raise (the default, and when `rejects` is None), or with a
    `RejectLog("skip")` each is recorded there, once per call.

    The cache key holds the content digest of every local file the task reads, so rows appended to
    a task's data file within one process are seen, never served from the old read.
    """
    resolved = data_root(root)
    policy = rejects.on_error if rejects is not None else "raise"
    key = json.dumps(
        [
            task.model_dump(mode="json"),
            str(task._base_dir),
            split,
            str(resolved),
            policy,
            _source_digests(task, resolved),
        ],
        sort_keys=True,
    )
    if key not in _ROW_CACHE:
        bad = RejectLog(policy)
        if task.splits is not None:
            if split not in task.splits:
                raise InstructkitError(
                    f"task {task.name!r}: no split {split!r} (splits: {', '.join(task.splits)})"
                )
            rows = _load_source(task, task.splits[split], resolved, bad)
        else:
            pool = _load_source(task, task.source, resolved, bad)  # type: ignore[arg-type]
            rows = [pool[i] for i in _partition(task, len(pool), split)]
        _ROW_CACHE[key] = (rows, bad)
    rows, bad = _ROW_CACHE[key]
    if rejects is not None:
        rejects.rows.extend(bad.rows)
    return rows
