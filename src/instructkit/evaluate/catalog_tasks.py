"""Catalog tasks (instructkit.data.tasks) as EvalTasks: the held-out templates a task would be trained
with, zero-shot or k-shot, direct or CoT; option tasks are scored by loglikelihood over their options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .metrics import random_baseline
from .spec import EvalDoc, EvalTask

# catalog metric name → this package's metric name
METRICS = {"exact_match": "em", "accuracy": "acc", "acc": "acc", "f1": "f1", "em": "em"}


def catalog_eval_tasks(
    tasks: list[Any],
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
    for task in (catalog[t] if isinstance(t, str) else t for t in tasks):
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


def _eval_task(task: Any, template_id: str, examples: list[Any], k_shot: int, cot: bool) -> EvalTask:
    scored_by_options = not cot and all(_gold(ex) is not None for ex in examples) and bool(examples)
    docs = [_doc(ex, scored_by_options) for ex in examples]
    options = examples[0].options if examples and examples[0].options else None
    return EvalTask(
        name=f"{task.name}/{template_id}{'/cot' if cot else ''}{f'/{k_shot}shot' if k_shot else ''}",
        method="multiple_choice" if scored_by_options else "generate",
        docs=docs,
        metric="acc" if scored_by_options else METRICS.get(task.metric, "em"),
        num_fewshot=k_shot,
        target_delimiter="",
        extractor="answer_is" if cot else "first_line",
        stop=("\n\n",) if cot else ("\n",),
        max_new_tokens=256 if cot else 64,
        random_baseline=random_baseline(len(options)) if options else 0.0,
        group=task.name,
        cluster=task.cluster,
        source=task.file,
    )


def _gold(example: Any) -> int | None:
    options = example.options or []
    for value in (example.target, example.answer):
        if value in options:
            return options.index(value)
    return None


def _doc(example: Any, by_options: bool) -> EvalDoc:
    # few-shot prompts end with an answer cue ("A:"): the reply follows a space; zero-shot ones a newline.
    cue = example.prompt.rstrip().endswith(":")
    query, delimiter = (example.prompt, " ") if cue else (example.prompt + "\n", "")
    doc_id = f"{example.task}/{example.template_id}/{example.row_id}"
    if by_options:
        return EvalDoc(
            doc_id,
            query,
            [delimiter + o for o in example.options],
            _gold(example),
            answers=[example.target],
            meta={"source": example.meta.get("source")},
        )
    return EvalDoc(
        doc_id,
        query,
        answers=list(dict.fromkeys([example.target, example.answer])),
        meta={"source": example.meta.get("source")},
    )
