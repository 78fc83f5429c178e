"""Evaluation: catalog tasks and published benchmark protocols scored through interchangeable backends.

Python API:
    evaluate(model, tokenizer, tasks=[...] | suite="flan", out_dir=..., batch_size=16, **EvalConfig fields)
    catalog_eval_tasks(tasks, template_ids=..., k_shot=0, cot=False, split=None, limit=None) -> [EvalTask]
    write_report(runs, out_dir); compare(run_a, run_b); pairwise_win_rate(judge, instructions, a, b)
"""

from .catalog_tasks import catalog_eval_tasks
from .judge import pairwise_win_rate
from .report import compare, write_report
from .runner import EvalConfig, evaluate
from .spec import EvalDoc, EvalTask

__all__ = [
    "EvalConfig",
    "EvalDoc",
    "EvalTask",
    "catalog_eval_tasks",
    "compare",
    "evaluate",
    "pairwise_win_rate",
    "write_report",
]
