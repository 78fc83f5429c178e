"""What an evaluation task is: documents, exemplars, prompt pieces, method and metric — data, not code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Method = Literal["multiple_choice", "generate", "self_consistency", "open_ended", "code"]


@dataclass
class EvalDoc:
    """One example: the query text up to where the answer starts, plus gold choices/answers."""

    id: str
    query: str
    choices: list[str] | None = None  # continuation texts for loglikelihood multiple choice
    gold: int | None = None  # index into choices
    answers: list[str] = field(default_factory=list)  # acceptable answers for generation
    target: str = ""  # the worked answer shown when this doc is a few-shot exemplar
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalTask:
    """A scored task; `group` aggregates tasks (e.g. 27 BBH tasks, MGSM languages) before averaging."""

    name: str
    method: Method
    docs: list[EvalDoc]
    metric: str = "acc"  # acc | acc_norm | em | f1 | auc_roc | pass@k
    exemplars: list[EvalDoc] = field(default_factory=list)
    num_fewshot: int = 0
    fewshot_text: str | None = None  # a fixed few-shot prefix (e.g. BBH's official CoT prompts)
    description: str = ""  # instruction placed before the exemplars
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    extractor: str = "first_line"
    stop: tuple[str, ...] = ("\n\n",)
    max_new_tokens: int = 256
    samples: int = 1  # self-consistency / open-ended / pass@k sample count
    temperature: float = 0.0
    random_baseline: float = 0.0  # percent
    group: str = ""
    cluster: str = ""
    source: str = ""  # file path or hub id the docs came from (recorded in results)

    def fewshot(self) -> list[EvalDoc]:
        """The exemplars actually shown (the first `num_fewshot`)."""
        return self.exemplars[: self.num_fewshot]
