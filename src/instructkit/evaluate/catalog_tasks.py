"""Catalog tasks (instructkit.data.tasks) as EvalTasks: the held-out templates a task would be trained
with, zero-shot or k-shot, direct or CoT; option tasks are scored by loglikelihood over their options."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InstructkitError
from .metrics import random_baseline
from .spec import EvalDoc, EvalTask

if TYPE_CHECKING:
    from ..data.tasks import EvalExample, Task

# catalog metric name → this package's metric name
METRICS = {"exact_match": "em", "accuracy": "acc", "acc": "acc", "f1": "f1", "em": "em"}


def catalog_eval_tasks(
    tasks: list[Task | str],
    *,
    split: str | None = None,
    template_ids: list[str] | None = None,
    k_shot: int = 0,
    cot: bool = False,
    with_options: bool = True,
    limit: int | None = None,
    seed: int = 0,
    root: str | Path | None = None,
) -> list[EvalTask]:
    """One EvalTask per (catalog task, template); tasks are `Task` objects or names in the built-in catalog."""
    from ..data.tasks import eval_examples, load_catalog

    catalog = load_catalog() if any(isinstance(t, str) for t in tasks) else {}
    out: list[EvalTask] = []
    for task in (_named(catalog, t) if isinstance(t, str) else t for t in tasks):
        for tid in template_ids or task.eval_template_ids():
            examples = eval_examples(
                task,
                split=split,
                template_ids=[tid],
                k_shot=k_shot,
                cot=cot,
                with_options=with_options,
                seed=seed,
                limit=limit,
                root=root,
            )
            out.append(_eval_task(task, tid, examples, k_shot, cot))
    return out


def _named(catalog: dict[str, Task], name: str) -> Task:
    """A built-in catalog task by name; an unknown name is an error, not a KeyError."""
    if name not in catalog:
        raise InstructkitError(f"unknown catalog task {name!r}; see `instructkit tasks list`")
    return catalog[name]


def load_catalog_task(
    name: str,
    data_dir: Path | None = None,
    num_fewshot: int = 0,
    cot: bool = False,
    templates: list[str] | None = None,
    **options: Any,
) -> list[EvalTask]:
    """Suite-file entry point: `{catalog: NAME, num_fewshot: K, cot: false, templates: [...]}`."""
    return catalog_eval_tasks(
        [name], template_ids=templates, k_shot=num_fewshot, cot=cot, root=data_dir, **options
    )


def _eval_task(task: Task, template_id: str, examples: list[EvalExample], k_shot: int, cot: bool) -> EvalTask:
    """One template's examples as a task, scored by options when every example's gold is an option."""
    scored_by_options = not cot and bool(examples) and all(ex.document.gold is not None for ex in examples)
    docs = [_doc(ex, scored_by_options) for ex in examples]
    options = examples[0].document.options if examples else None
    return EvalTask(
        name=f"{task.name}/{template_id}{'/cot' if cot else ''}{f'/{k_shot}shot' if k_shot else ''}",
        method="multiple_choice" if scored_by_options else "generate",
        docs=docs,
        metric="acc" if scored_by_options else METRICS.get(task.metric, "em"),
        num_fewshot=k_shot,
        target_delimiter="",  # each doc's own delimiter leads its choices
        extractor="answer_is" if cot else "first_line",
        stop=("\n\n",) if cot else ("\n",),
        max_new_tokens=256 if cot else 64,
        random_baseline=random_baseline(len(options)) if options else 0.0,
        group=task.name,
        cluster=task.cluster,
        source=task.file,
    )


def _doc(example: EvalExample, by_options: bool) -> EvalDoc:
    """The task layer's document parts as an EvalDoc: options led by the delimiter, or gold answers."""
    parts = example.document
    doc_id = f"{example.task}/{example.template_id}/{example.row_id}"
    meta = {"source": example.meta.get("source")}
    if by_options:
        choices = [parts.target_delimiter + o for o in parts.options or ()]
        return EvalDoc(doc_id, parts.query, choices, parts.gold, answers=[example.target], meta=meta)
    answers = list(dict.fromkeys([example.target, example.answer]))
    return EvalDoc(doc_id, parts.query, answers=answers, meta=meta)
