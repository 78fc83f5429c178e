"""The evaluation API: a task's held-out rows rendered as prompts with gold answers and options.

Each example carries an `EvalDocument`, the exact parts an evaluation document is built from (query,
target delimiter, options, gold index), decided here where the format and the template are known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InstructkitError
from ..procedural.rng import stable_rng
from ..prompt_formats import (
    ANSWER_PREFIX,
    COT,
    DELIMITERS,
    FEW_SHOT,
    FEW_SHOT_COT,
    ZERO_SHOT,
    FormatChoice,
    Rendered,
    pick_exemplars,
    render_example,
    row_options,
)
from ..templates import Template, referenced_fields
from .rows import task_rows
from .schema import Task

ANSWER_CUE = ":"  # a template input ending so ("Sentiment:") asks for the reply on the same line


@dataclass(frozen=True)
class EvalDocument:
    """What an evaluation document needs: the text the model reads up to where the reply starts, the
    text between it and the reply, the answer options and the gold option's index.

    A reply after an answer cue ("A:" of the few-shot delimiter, a template's "Sentiment:") continues
    that line after a space (`target_delimiter=" "`, lm-eval's convention); any other reply starts on
    a new line, and that newline ends the query (`target_delimiter=""`). `gold` is the index of the
    target (else the raw answer) in `options`; None when neither is an option or there are none.
    """

    query: str
    target_delimiter: str
    options: tuple[str, ...] | None
    gold: int | None


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
    document: EvalDocument
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
    answer = str(row[task.answer_field])
    target = answer if cot else r.target
    return EvalExample(
        task=task.name,
        cluster=task.cluster,
        template_id=template.id,
        row_id=index,
        prompt=r.prompt,
        target=target,
        answer=answer,
        options=options,
        metric=task.metric,
        format=r.format,
        document=_document(template, r, choice, options, (target, answer)),
        answer_prefix=ANSWER_PREFIX if cot else None,
        meta={**r.meta, "source": row["_source"], "exemplar_sources": [e["_source"] for e in exemplars]},
    )


def _document(
    template: Template,
    rendered: Rendered,
    choice: FormatChoice,
    options: list[str] | None,
    golds: tuple[str, str],
) -> EvalDocument:
    """The document parts of one rendered row; `golds` are the target, then the raw answer."""
    query, delimiter = _reply_start(template, rendered, choice)
    gold = next((options.index(g) for g in golds if options and g in options), None)
    return EvalDocument(query, delimiter, tuple(options) if options is not None else None, gold)


def _reply_start(template: Template, rendered: Rendered, choice: FormatChoice) -> tuple[str, str]:
    """(query, target delimiter): where the format, else the template, puts the start of the reply."""
    prompt = rendered.prompt
    if rendered.meta["k"]:  # few-shot: the prompt ends with the delimiter's answer prefix, stripped
        prefix = DELIMITERS[choice.delimiter].answer
        cue = prefix.rstrip()
        return (prompt, prefix[len(cue) :]) if cue else (prompt + "\n", "")
    if rendered.format == COT or _options_appended(template, rendered):  # ends with text of ours
        return prompt + "\n", ""
    return (prompt, " ") if prompt.endswith(ANSWER_CUE) else (prompt + "\n", "")  # the template's input


def _options_appended(template: Template, rendered: Rendered) -> bool:
    """The OPTIONS block follows the template's input (the template did not place `options_` itself)."""
    return rendered.meta["with_options"] and "options_" not in referenced_fields(template.input)
