"""A recipe's eval sets as EvalTasks: catalog tasks (which templates, which shots) or held-out corpus QA.

Held-out QA reads `heldout_qa.jsonl`, the gold questions `synth.pretrain_corpus` writes about the
texts it kept without synthesized pairs; the file's name and prompt live here, with their reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BadRowError, InstructkitError
from .config import EvalSetSpec, EvaluateSpec
from .spec import EvalDoc, EvalTask
from .suites.io import read_jsonl

if TYPE_CHECKING:
    from ..data.mixture_config import MixtureConfig
    from ..data.tasks import Task

HELDOUT_QA = "heldout_qa.jsonl"
QA_PROMPT = "{text}\n\nQuestion: {question}\nAnswer:"  # the corpus's first `qa` template style
QA_FIELDS = ("text", "question", "answer")


def eval_tasks(
    spec: EvaluateSpec,
    mixture: MixtureConfig | None = None,
    seed: int = 0,
    corpus_dir: Path | None = None,
) -> list[EvalTask]:
    """EvalTasks of every eval set: catalog tasks per template and shot, or the corpus's held-out QA.

    `mixture` gives the extra catalog directories and the tasks `@train` means; `corpus_dir` is the
    corpus stage's folder (needed by `heldout_qa` sets).
    """
    out: list[EvalTask] = []
    catalog = recipe_catalog(mixture) if any(s.kind == "catalog" for s in spec.sets) else {}
    for eval_set in spec.sets:
        if eval_set.kind == "heldout_qa":
            out.append(heldout_qa_set(eval_set, corpus_dir))
        else:
            out += _catalog_set(eval_set, mixture, catalog, seed)
    return out


def recipe_catalog(mixture: MixtureConfig | None) -> dict[str, Task]:
    """The task catalog a recipe sees: the built-in one plus its mixture's extra directories."""
    from ..data.tasks import load_catalog

    return load_catalog(mixture.catalog if mixture else None)


def _catalog_set(
    eval_set: EvalSetSpec, mixture: MixtureConfig | None, catalog: dict[str, Task], seed: int
) -> list[EvalTask]:
    """One EvalTask per (task, template, shot count), named and grouped under the set's name."""
    from .catalog_tasks import catalog_eval_tasks

    out = []
    for task in set_tasks(eval_set, mixture, catalog):
        template_ids = _template_ids(task, eval_set.templates)
        if not template_ids:
            continue
        for k in eval_set.k_shot:
            for t in catalog_eval_tasks(
                [task],
                split=eval_set.split,
                template_ids=template_ids,
                k_shot=k,
                cot=eval_set.cot,
                limit=eval_set.limit,
                seed=seed,
            ):
                t.group = f"{eval_set.name}/{task.name}"
                t.cluster = f"{eval_set.name}/{k}-shot"
                t.name = f"{eval_set.name}/{t.name}"
                out.append(t)
    return out


def set_tasks(eval_set: EvalSetSpec, mixture: MixtureConfig | None, catalog: dict[str, Task]) -> list[Task]:
    """The catalog tasks an eval set names (`@train`: the mixture's), its clusters' tasks, each once."""
    names: list[str] = []
    for name in eval_set.tasks:
        names += _mixture_task_names(eval_set, mixture, catalog) if name == "@train" else [name]
    names += sorted(n for n, t in catalog.items() if t.cluster in eval_set.clusters)
    unknown = sorted({n for n in names if n not in catalog})
    if unknown:
        raise InstructkitError(f"eval set {eval_set.name!r}: unknown task(s) {unknown}")
    return [catalog[n] for n in dict.fromkeys(names)]


def _mixture_task_names(
    eval_set: EvalSetSpec, mixture: MixtureConfig | None, catalog: dict[str, Task]
) -> list[str]:
    from ..data.mixture import resolve_groups

    if mixture is None:
        raise InstructkitError(f"eval set {eval_set.name!r}: `@train` needs a recipe with a mixture")
    groups = resolve_groups(mixture, catalog)
    return sorted({t.name for g in groups for t, _ in g.members})


def _template_ids(task: Task, which: str) -> list[str]:
    if which == "train":
        return [t.id for t in task.train_templates() if not t.inverted]
    if which == "heldout":
        return list(task.held_out_templates)
    return task.eval_template_ids()


def heldout_qa_set(eval_set: EvalSetSpec, corpus_dir: Path | None) -> EvalTask:
    """A `heldout_qa` eval set: its own group, reported as the set's 0-shot cluster."""
    if corpus_dir is None:
        raise InstructkitError(f"eval set {eval_set.name!r}: heldout_qa needs the corpus stage's folder")
    task = heldout_qa_task(corpus_dir, f"{eval_set.name}/heldout_qa", eval_set.limit)
    task.group, task.cluster = task.name, f"{eval_set.name}/0-shot"
    return task


def heldout_qa_task(corpus_dir: Path, name: str, limit: int | None = None) -> EvalTask:
    """Zero-shot questions about the held-out texts, the text in the prompt, scored by F1 (and EM)."""
    path = Path(corpus_dir) / HELDOUT_QA
    rows = read_jsonl(path)[:limit] if path.is_file() else []
    if not rows:
        raise InstructkitError(f"{path}: no held-out questions (held-out QA needs `corpus.raw: generated`)")
    for i, row in enumerate(rows, 1):
        for field in QA_FIELDS:
            if not isinstance(row.get(field), str):
                raise BadRowError(str(path), i, field, "missing or not a string")
    docs = [
        EvalDoc(
            id=str(i),
            query=QA_PROMPT.format(**r),
            answers=[r["answer"]],
            meta={"dataset": r.get("dataset", "")},
        )
        for i, r in enumerate(rows)
    ]
    return EvalTask(
        name=name,
        method="generate",
        docs=docs,
        metric="f1",
        target_delimiter=" ",
        extractor="first_line",
        stop=("\n",),
        max_new_tokens=16,
        source=str(path),
    )
