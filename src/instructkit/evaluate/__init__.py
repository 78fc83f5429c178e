"""Evaluation: catalog tasks and published benchmark protocols scored through interchangeable backends.

Python API (names are imported lazily, so the CLI starts fast):
    evaluate(model, tokenizer, config=EvalConfig(suite="flan" | tasks=[...], ...), out_dir=...)
    EvalConfig: every evaluation setting, declared once (evaluate.config; `eval run` options derive from it)
    catalog_eval_tasks(tasks, template_ids=..., k_shot=0, cot=False, split=None, limit=None) -> [EvalTask]
    write_report(runs, out_dir); compare(run_a, run_b); pairwise_win_rate(judge, instructions, a, b)
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "catalog_eval_tasks": ".catalog_tasks",
    "pairwise_win_rate": ".judge",
    "compare": ".eval_report",
    "write_report": ".eval_report",
    "EvalConfig": ".config",
    "evaluate": ".runner",
    "EvalDoc": ".spec",
    "EvalTask": ".spec",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
