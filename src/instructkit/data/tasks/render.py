"""Training rendering: each row through a template and a format (zero/few-shot, CoT) drawn per row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..conversation import Conversation, Message
from ..procedural.rng import stable_rng
from ..prompt_formats import (
    FormatMix,
    choose_format,
    pick_exemplars,
    render_example,
)
from .rows import task_rows
from .schema import Task


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
