"""The two shapes most benchmark tasks take, built in one place: a loglikelihood choice among options
(PIQA, MMLU, ARC, BoolQ, HellaSwag, AQuA direct) and a generated answer scored by accuracy, in a
direct or a chain-of-thought variant (GSM8K, MGSM, AQuA CoT, BBH)."""

from __future__ import annotations

from typing import Any

from ..spec import EvalDoc, EvalTask


def multiple_choice_task(
    name: str,
    docs: list[EvalDoc],
    source: str,
    *,
    random_baseline: float,
    metric: str = "acc",
    group: str = "",
    **fields: Any,
) -> EvalTask:
    """A task scored by which option gets the highest loglikelihood; its own group unless told otherwise."""
    return EvalTask(
        name,
        "multiple_choice",
        docs,
        metric=metric,
        random_baseline=random_baseline,
        group=group or name,
        source=source,
        **fields,
    )


def variant(family: str, cot: bool) -> str:
    """`gsm8k_cot` or `gsm8k_direct`: the name a benchmark's CoT or direct variant goes by."""
    return f"{family}_{'cot' if cot else 'direct'}"


def reasoning_task(name: str, docs: list[EvalDoc], source: str, *, cot: bool, **fields: Any) -> EvalTask:
    """A generated answer scored by accuracy; chain of thought gets room to reason (256 new tokens),
    a direct answer 32, unless `max_new_tokens` says otherwise."""
    fields.setdefault("max_new_tokens", 256 if cot else 32)
    return EvalTask(name, "generate", docs, metric="acc", source=source, **fields)
