"""The evaluation API: a task's held-out rows rendered as prompts with gold answers and options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InstructkitError
from ..procedural.rng import stable_rng
from ..prompt_formats import (
    ANSWER_PREFIX,
    COT,
    FEW_SHOT,
    FEW_SHOT_COT,
    ZERO_SHOT,
    FormatChoice,
    pick_exemplars,
    render_example,
    row_options,
)
from ..templates import Template
from .rows import task_rows
from .schema import Task


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
