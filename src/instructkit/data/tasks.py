"""Tasks are data: a YAML entry names a source, a field mapping, answer options, a metric and templates.

Catalog
    `load_catalog(dirs=None) -> dict[str, Task]` reads the built-in catalog (`data/catalog/`) plus any
    user directories of `*.yaml` files (each file: `tasks: [...]`, optional `defaults: {...}` merged
    into every task). Errors name the file, the task and the field.

Rows
    `task_rows(task, split) -> list[dict]` gives a split's rows after the field mapping (`fields:` are
    sandboxed Jinja expressions over the raw record). Each row carries `_source` ("file:row"). A source
    with one pool of rows is split by `split_fractions` (a fixed permutation per task); `splits:` gives
    one source per split instead. Bad rows raise `BadRowError`, or with `on_error="skip"` are appended
    to `rejects` (a list of `BadRowError.as_record()` dicts).

Evaluation API (what `instructkit.evaluate` calls)
    `eval_examples(task, split=None, template_ids=None, k_shot=0, cot=False, with_options=True,
    delimiter="q_a", seed=0, limit=None) -> list[EvalExample]`: the task's evaluation rows (default
    `task.eval_split`) rendered as `prompt` + gold `target` (the template's target) and `answer` (the raw
    gold answer), with `options` (classification / multiple choice, else None), `metric`, and for CoT
    `answer_prefix` ("So the answer is"): parse the answer after it. Templates default to
    `task.eval_template_ids()`: the task's `held_out_templates` when set (never used in training),
    else every non-inverted template. k-shot exemplars come from `task.exemplar_split` and never
    include the evaluated row. Everything random is seeded by (seed, task, row, template).

Rendering
    `render_task_rows(task, split, template_ids=None, mix=FormatMix(), seed=0) -> list[Conversation]`
    renders every row with a template and format drawn per row; `render_training_example` renders one
    (the function the mixture builder maps over rows, so `num_proc` cannot change results).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from ..errors import BadRowError, InstructkitError
from .catalog import BUILTIN_DIR
from .catalog.readers import READERS, Record, explode
from .conversation import Conversation, Message
from .formats import (
    ANSWER_PREFIX,
    COT,
    FEW_SHOT,
    FEW_SHOT_COT,
    ZERO_SHOT,
    FormatChoice,
    FormatMix,
    choose_format,
    pick_exemplars,
    render_example,
    row_options,
)
from .prepare_config import OnError
from .procedural import generate
from .procedural.rng import stable_rng
from .templates import Template, TemplateError, check_syntax, evaluate_expression


class TaskSource(BaseModel):
    """Where rows come from: exactly one of `procedural`, `hub` or `files`."""

    model_config = ConfigDict(extra="forbid")

    procedural: str | None = Field(
        None, description="name of a registered generator (instructkit.data.procedural)"
    )
    size: int = Field(1000, ge=1, description="procedural: rows to generate (all splits together)")
    seed: int = Field(0, description="procedural: generator seed")
    params: dict[str, Any] = Field(
        default_factory=dict, description="procedural: generator keyword arguments"
    )
    hub: str | None = Field(None, description="Hugging Face dataset id")
    config: str | None = Field(None, description="hub: dataset config name")
    split: str | None = Field(None, description="hub: split to read (default train)")
    files: list[str] | None = Field(
        None,
        description="local files or globs; relative paths resolve against the data root, then the YAML's directory",
    )
    explode: str | None = Field(None, description="a list/dict field holding several examples per record")
    reader: str = Field("rows", description=f"record schema: {', '.join(READERS)}")

    @model_validator(mode="after")
    def _one_kind(self) -> TaskSource:
        kinds = [k for k in ("procedural", "hub", "files") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of procedural, hub, files (got {kinds or 'none'})")
        if self.reader not in READERS:
            raise ValueError(f"reader: unknown {self.reader!r} (known: {', '.join(READERS)})")
        return self


class Task(BaseModel):
    """One task: a source of rows and the templates that turn a row into an instruction and a reply."""

    model_config = ConfigDict(extra="forbid")

    name: str
    cluster: str = Field(description="task cluster (held out as a whole in leave-one-cluster-out)")
    collection: str = Field(
        "custom", description="where the task comes from, e.g. procedural, p3_t0, flan_v2"
    )
    description: str = ""
    kind: Literal["template", "chat"] = Field("template", description="chat: rows already are conversations")
    source: TaskSource | None = Field(None, description="one pool of rows, split by split_fractions")
    splits: dict[str, TaskSource] | None = Field(
        None, description="one source per split name (instead of source)"
    )
    split_fractions: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1}
    )
    fields: dict[str, str] = Field(
        default_factory=dict, description="field name → sandboxed expression over the raw record"
    )
    answer_field: str = Field("answer", description="the gold answer (targets, CoT answers, exact match)")
    options: list[str] | None = Field(None, description="fixed answer options (classification)")
    options_field: str | None = Field(None, description="per-row answer options (multiple choice)")
    rationale_field: str | None = Field(None, description="rationale for chain-of-thought formats")
    metric: str = Field("exact_match", description="metric name the evaluator uses")
    exemplar_split: str = Field("train", description="split few-shot exemplars come from")
    eval_split: str = Field("test", description="split evaluation reads")
    eval_only: bool = Field(False, description="benchmark data: a mixture may not train on it unless forced")
    held_out_templates: list[str] = Field(
        default_factory=list, description="template ids kept out of training"
    )
    templates: list[Template] = Field(default_factory=list)
    _base_dir: Path | None = PrivateAttr(None)
    _file: str = PrivateAttr("<inline>")

    @model_validator(mode="after")
    def _check(self) -> Task:
        if (self.source is None) == (self.splits is None):
            raise ValueError("give exactly one of source, splits")
        ids = [t.id for t in self.templates]
        if len(ids) != len(set(ids)):
            raise ValueError(f"templates: duplicate ids {sorted({i for i in ids if ids.count(i) > 1})}")
        if self.kind == "template" and not self.templates:
            raise ValueError("templates: a template task needs at least one template")
        unknown = set(self.held_out_templates) - set(ids)
        if unknown:
            raise ValueError(f"held_out_templates: unknown template ids {sorted(unknown)}")
        if self.kind == "template" and not self.train_templates():
            raise ValueError("held_out_templates: every template is held out; none is left for training")
        for template in self.templates:
            check_syntax(self.name, template)
        return self

    def template(self, template_id: str) -> Template:
        """The template with this id (error names the task and the known ids)."""
        for t in self.templates:
            if t.id == template_id:
                return t
        raise InstructkitError(
            f"task {self.name!r}: no template {template_id!r} (known: {', '.join(t.id for t in self.templates)})"
        )

    def train_templates(self) -> list[Template]:
        """Templates a mixture may use: all but the held-out ones."""
        return [t for t in self.templates if t.id not in self.held_out_templates]

    def eval_template_ids(self) -> list[str]:
        """Held-out templates when the task names some, else every non-inverted template."""
        return list(self.held_out_templates) or [t.id for t in self.templates if not t.inverted]

    @property
    def file(self) -> str:
        """The YAML file this task was read from."""
        return self._file

    def split_names(self) -> list[str]:
        """Splits this task offers."""
        return list(self.splits) if self.splits else list(self.split_fractions)


# ---------------------------------------------------------------- catalog


def _format_validation(file: Path, index: int, name: str, exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<task>'}: {e['msg']}" for e in exc.errors()
    )
    return f"{file}: task #{index} ({name}): {problems}"


def load_task_file(path: Path) -> list[Task]:
    """Tasks of one YAML file (`tasks:` list, optional `defaults:` merged under each task)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InstructkitError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise InstructkitError(f"{path}: expected a mapping with a `tasks:` list")
    defaults = data.get("defaults") or {}
    tasks = []
    for i, entry in enumerate(data["tasks"]):
        name = entry.get("name", "?") if isinstance(entry, dict) else "?"
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


# ---------------------------------------------------------------- rows


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


def _resolve_files(task: Task, source: TaskSource, root: Path) -> list[Path]:
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


def _raw_records(
    task: Task, source: TaskSource, root: Path, on_error: OnError, rejects: list
) -> Iterator[Record]:
    from .sources import iter_file_rows

    if source.procedural:
        for i, row in enumerate(
            generate(source.procedural, source.size, source.seed, source.params), start=1
        ):
            yield f"procedural:{source.procedural}", i, row
    elif source.hub:
        from ..hub import load_hub_dataset

        for i, row in enumerate(
            load_hub_dataset(source.hub, source.config, source.split or "train"), start=1
        ):
            yield source.hub, i, dict(row)
    else:
        for path in _resolve_files(task, source, root):
            for raw in iter_file_rows(path):
                if raw.error is not None:
                    _reject(raw.error, on_error, rejects)
                else:
                    yield raw.file, raw.row, raw.record


def _reject(error: BadRowError, on_error: OnError, rejects: list) -> None:
    if on_error == "raise":
        raise error
    rejects.append(error.as_record())


def _per_record(records: Iterator[Record], fn, on_error: OnError, rejects: list) -> Iterator[Record]:
    """Apply a one-record → rows function; a bad record is rejected alone (with on_error=skip)."""
    for record in records:
        try:
            yield from list(fn([record]))
        except BadRowError as exc:
            _reject(exc, on_error, rejects)


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


def _load_source(
    task: Task, source: TaskSource, root: Path, on_error: OnError, rejects: list
) -> list[dict[str, Any]]:
    records = _raw_records(task, source, root, on_error, rejects)
    if source.explode:
        records = _per_record(records, lambda rs: explode(rs, source.explode), on_error, rejects)
    reader = READERS[source.reader]
    records = (
        reader(records) if source.reader == "oasst_tree" else _per_record(records, reader, on_error, rejects)
    )
    rows = []
    for file, row, record in records:
        try:
            rows.append(_map_fields(task, file, row, record))
        except BadRowError as exc:
            _reject(exc, on_error, rejects)
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
    from ..fingerprint import file_digest

    digests = []
    for source in [task.source] if task.source else list((task.splits or {}).values()):
        if source is None or not source.files:
            continue
        try:
            digests += [file_digest(f) for f in _resolve_files(task, source, root)]
        except InstructkitError:
            digests.append("unresolved")  # the read itself will raise the clear error
    return digests


def task_rows(
    task: Task,
    split: str,
    *,
    root: str | Path | None = None,
    on_error: OnError = "raise",
    rejects: list | None = None,
) -> list[dict[str, Any]]:
    """The mapped rows of one split (cached per process; rejected rows are appended to `rejects`).

    The cache key holds the content digest of every local file the task reads, so rows appended to
    a task's data file within one process are seen, never served from the old read.
    """
    resolved = data_root(root)
    key = json.dumps(
        [
            task.model_dump(mode="json"),
            str(task._base_dir),
            split,
            str(resolved),
            on_error,
            _source_digests(task, resolved),
        ],
        sort_keys=True,
    )
    if key not in _ROW_CACHE:
        bad: list[dict[str, Any]] = []
        if task.splits is not None:
            if split not in task.splits:
                raise InstructkitError(
                    f"task {task.name!r}: no split {split!r} (splits: {', '.join(task.splits)})"
                )
            rows = _load_source(task, task.splits[split], resolved, on_error, bad)
        else:
            pool = _load_source(task, task.source, resolved, on_error, bad)  # type: ignore[arg-type]
            rows = [pool[i] for i in _partition(task, len(pool), split)]
        _ROW_CACHE[key] = (rows, bad)
    rows, bad = _ROW_CACHE[key]
    if rejects is not None:
        rejects.extend(bad)
    return rows


# ---------------------------------------------------------------- rendering


def _conversation(
    task: Task, row: dict[str, Any], index: int, rendered_or_messages, **meta: Any
) -> Conversation:
    if task.kind == "chat":
        messages = [Message(m["role"], m["content"]) for m in rendered_or_messages]
        return Conversation(
            messages,
            source=row["_source"],
            row_id=index,
            task=task.name,
            cluster=task.cluster,
            template_id="",
            format="chat",
            meta=meta,
        )
    r = rendered_or_messages
    return Conversation(
        [Message("user", r.prompt), Message("assistant", r.target)],
        source=row["_source"],
        row_id=index,
        task=task.name,
        cluster=task.cluster,
        template_id=r.template_id,
        format=r.format,
        meta={**r.meta, **meta},
    )


def render_training_example(
    task: Task,
    rows: list[dict[str, Any]],
    pool: list[dict[str, Any]],
    index: int,
    split: str,
    mix: FormatMix,
    seed: int,
    occurrence: int = 0,
) -> Conversation:
    """Row `index` of `split` rendered with a template and format drawn from its own RNG."""
    row = rows[index]
    if task.kind == "chat":
        return _conversation(task, row, index, row["messages"], occurrence=occurrence)
    rng = stable_rng(seed, task.name, split, index, occurrence)
    templates = task.train_templates()
    template = templates[int(rng.integers(len(templates)))]
    choice = choose_format(mix, rng, can_cot=task.rationale_field is not None, inverted=template.inverted)
    exclude = index if task.exemplar_split == split else None
    exemplars = pick_exemplars(rng, pool, choice.k, exclude) if choice.k else []
    return _conversation(
        task, row, index, render_example(task, template, row, choice, exemplars), occurrence=occurrence
    )


def render_task_rows(
    task: Task,
    split: str,
    template_ids: list[str] | None = None,
    mix: FormatMix | None = None,
    seed: int = 0,
    root: str | Path | None = None,
) -> list[Conversation]:
    """Every row of a split rendered (templates restricted to `template_ids` when given)."""
    if template_ids is not None:
        task = task.model_copy(
            update={"templates": [task.template(t) for t in template_ids], "held_out_templates": []}
        )
    rows = task_rows(task, split, root=root)
    pool = task_rows(task, task.exemplar_split, root=root) if task.kind == "template" else []
    return [
        render_training_example(task, rows, pool, i, split, mix or FormatMix(), seed)
        for i in range(len(rows))
    ]


@dataclass
class EvalExample:
    """One evaluation prompt with its gold answer, for generation or option scoring."""

    task: str
    cluster: str
    template_id: str
    row_id: int
    prompt: str
    target: str
    answer: str
    options: list[str] | None
    metric: str
    format: str
    answer_prefix: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def eval_examples(
    task: Task,
    *,
    split: str | None = None,
    template_ids: list[str] | None = None,
    k_shot: int = 0,
    cot: bool = False,
    with_options: bool = True,
    delimiter: str = "q_a",
    seed: int = 0,
    limit: int | None = None,
    root: str | Path | None = None,
) -> list[EvalExample]:
    """A task's evaluation rows rendered zero-shot or k-shot (optionally CoT) for chosen templates."""
    if task.kind != "template":
        raise InstructkitError(f"task {task.name!r} is a chat task; it has no gold answers to evaluate")
    if cot and task.rationale_field is None and k_shot:
        raise InstructkitError(f"task {task.name!r}: few-shot CoT needs a rationale_field for the exemplars")
    split = split or task.eval_split
    rows = task_rows(task, split, root=root)[:limit]
    pool = task_rows(task, task.exemplar_split, root=root) if k_shot else []
    out = []
    for tid in template_ids or task.eval_template_ids():
        template = task.template(tid)
        fmt = (FEW_SHOT_COT if cot else FEW_SHOT) if k_shot else (COT if cot else ZERO_SHOT)
        for i, row in enumerate(rows):
            out.append(
                _eval_one(
                    task,
                    template,
                    row,
                    i,
                    split,
                    pool,
                    FormatChoice(fmt, with_options, k_shot, delimiter),
                    seed,
                )
            )
    return out


def _eval_one(
    task: Task,
    template: Template,
    row: dict,
    index: int,
    split: str,
    pool: list,
    choice: FormatChoice,
    seed: int,
) -> EvalExample:
    rng = stable_rng(seed, "eval", task.name, split, index, template.id)
    exclude = index if task.exemplar_split == split else None
    exemplars = pick_exemplars(rng, pool, choice.k, exclude) if choice.k else []
    cot = choice.format in (COT, FEW_SHOT_COT)
    if cot and task.rationale_field is None:  # zero-shot CoT needs no rationale: only the trigger
        task = task.model_copy(update={"rationale_field": task.answer_field})
    r = render_example(task, template, row, choice, exemplars)
    options = row_options(task, row) if not template.inverted else None
    return EvalExample(
        task=task.name,
        cluster=task.cluster,
        template_id=template.id,
        row_id=index,
        prompt=r.prompt,
        target=str(row[task.answer_field]) if cot else r.target,
        answer=str(row[task.answer_field]),
        options=options,
        metric=task.metric,
        format=r.format,
        answer_prefix=ANSWER_PREFIX if cot else None,
        meta={**r.meta, "source": row["_source"], "exemplar_sources": [e["_source"] for e in exemplars]},
    )
