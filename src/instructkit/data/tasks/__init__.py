"""Tasks are data (one module per job: schema, registry, rows, render, evaluation): a YAML entry names a source, a field mapping, answer options, a metric and templates.

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
    Each example's `document` (`EvalDocument`) holds exactly what an evaluation document needs: the
    `query` up to where the reply starts, the `target_delimiter` before the reply (" " after an answer
    cue such as the few-shot "A:" or a template's "Sentiment:", else "" with the query ending in a
    newline), the `options` and the `gold` option's index.

Rendering
    `render_task_rows(task, split, template_ids=None, mix=FormatMix(), seed=0) -> list[Conversation]`
    renders every row with a template and format drawn per row; `render_training_example` renders one
    (the function the mixture builder maps over rows, so `num_proc` cannot change results).
"""

from .evaluation import EvalDocument, EvalExample, eval_examples
from .registry import load_catalog, load_task_file, select_tasks
from .render import render_task_rows, render_training_example
from .rows import data_root, resolve_files, task_rows
from .schema import Task, TaskSource

__all__ = [
    "EvalDocument",
    "EvalExample",
    "Task",
    "TaskSource",
    "data_root",
    "eval_examples",
    "load_catalog",
    "load_task_file",
    "render_task_rows",
    "render_training_example",
    "resolve_files",
    "select_tasks",
    "task_rows",
]
