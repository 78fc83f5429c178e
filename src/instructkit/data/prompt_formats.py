"""Flan 2022 formats: zero-shot, few-shot and chain-of-thought, with or without answer options.

One rendered example = template + row + a `FormatChoice` (format, options on/off, k exemplars,
delimiter, CoT instruction). `choose_format` draws the choice from the row's own RNG, so an example is
a pure function of (task, row, seed). Few-shot exemplars are joined with a delimiter drawn per example
(`Q:`/`A:`, `Question:`/`Answer:`, `Input:`/`Output:`, bare separators), as Flan 2022 does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .templates import Template, referenced_fields, render_text

if TYPE_CHECKING:
    from .tasks.schema import Task

ZERO_SHOT, FEW_SHOT, COT, FEW_SHOT_COT = "zero_shot", "few_shot", "cot", "few_shot_cot"
COT_TRIGGER = "Let's think step by step."
COT_INSTRUCTIONS = (
    "Give the rationale before answering.",
    "Explain your reasoning first, then give the answer.",
    "Think it through, then answer.",
)
ANSWER_PREFIX = "So the answer is"


@dataclass(frozen=True)
class Delimiter:
    """How exemplars are marked: a question prefix, an answer prefix and a separator between exemplars."""

    name: str
    question: str
    answer: str
    separator: str


DELIMITERS: dict[str, Delimiter] = {
    d.name: d
    for d in (
        Delimiter("q_a", "Q: ", "A: ", "\n\n"),
        Delimiter("question_answer", "Question: ", "Answer: ", "\n\n"),
        Delimiter("input_output", "Input: ", "Output: ", "\n\n"),
        Delimiter("problem_solution", "Problem: ", "Solution: ", "\n\n"),
        Delimiter("blank_line", "", "", "\n\n"),
        Delimiter("hashes", "", "", "\n\n###\n\n"),
        Delimiter("dashes", "", "", "\n\n----\n\n"),
    )
}


class FormatMix(BaseModel):
    """Fractions of formats in a mixture; every field is a probability drawn per example."""

    model_config = ConfigDict(extra="forbid")

    zero_shot: float = Field(1.0, ge=0, description="weight of zero-shot examples")
    few_shot: float = Field(
        0.0, ge=0, description="weight of few-shot examples (exemplars from the exemplar split)"
    )
    cot: float = Field(
        0.0, ge=0, description="weight of chain-of-thought (only tasks with a rationale field)"
    )
    with_options: float = Field(
        0.5, ge=0, le=1, description="share of option-bearing examples shown with options"
    )
    min_shots: int = Field(1, ge=1, description="fewest exemplars in a few-shot example")
    max_shots: int = Field(3, ge=1, description="most exemplars in a few-shot example")
    cot_exemplars: float = Field(0.5, ge=0, le=1, description="share of CoT examples that get CoT exemplars")
    cot_trigger: float = Field(
        0.5, ge=0, le=1, description="share of CoT examples using 'Let's think step by step.'"
    )
    delimiters: list[str] = Field(
        default_factory=lambda: list(DELIMITERS), description="delimiter names to draw from"
    )

    @model_validator(mode="after")
    def _check(self) -> FormatMix:
        if self.zero_shot + self.few_shot + self.cot <= 0:
            raise ValueError("formats: zero_shot + few_shot + cot must be > 0")
        if self.min_shots > self.max_shots:
            raise ValueError("formats: min_shots must be <= max_shots")
        unknown = [d for d in self.delimiters if d not in DELIMITERS]
        if unknown or not self.delimiters:
            raise ValueError(f"formats.delimiters: unknown {unknown} (known: {', '.join(DELIMITERS)})")
        return self


@dataclass(frozen=True)
class FormatChoice:
    """Everything random about one example's format, drawn before rendering."""

    format: str = ZERO_SHOT
    with_options: bool = True
    k: int = 0
    delimiter: str = "q_a"
    cot_instruction: str = COT_TRIGGER


@dataclass
class Rendered:
    """One rendered example: the user turn, the assistant turn and what produced them."""

    prompt: str
    target: str
    template_id: str
    format: str
    meta: dict[str, Any] = field(default_factory=dict)


def _draw(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def choose_format(mix: FormatMix, rng: np.random.Generator, *, can_cot: bool, inverted: bool) -> FormatChoice:
    """Draw format, options flag, k, delimiter and CoT instruction in a fixed order from `rng`."""
    weights = np.array([mix.zero_shot, mix.few_shot, mix.cot if can_cot and not inverted else 0.0])
    if weights.sum() <= 0:  # e.g. only CoT asked for, but this task has no rationale: fall back to zero-shot
        weights = np.array([1.0, 0.0, 0.0])
    kind = int(rng.choice(3, p=weights / weights.sum()))
    with_options = _draw(rng, mix.with_options)
    k = int(rng.integers(mix.min_shots, mix.max_shots + 1))
    delimiter = mix.delimiters[int(rng.integers(len(mix.delimiters)))]
    cot_instruction = (
        COT_TRIGGER
        if _draw(rng, mix.cot_trigger)
        else COT_INSTRUCTIONS[int(rng.integers(len(COT_INSTRUCTIONS)))]
    )
    cot_with_exemplars = _draw(rng, mix.cot_exemplars)
    fmt = [ZERO_SHOT, FEW_SHOT, FEW_SHOT_COT if cot_with_exemplars else COT][kind]
    return FormatChoice(
        fmt, with_options, k if fmt in (FEW_SHOT, FEW_SHOT_COT) else 0, delimiter, cot_instruction
    )


def options_block(options: list[str]) -> str:
    """FLAN's OPTIONS block."""
    return "OPTIONS:\n" + "\n".join(f"- {o}" for o in options)


def row_options(task: Task, row: dict[str, Any]) -> list[str] | None:
    """The answer options of a row: the task's fixed list, or the row's options field."""
    if task.options is not None:
        return list(task.options)
    if task.options_field is not None:
        return [str(o) for o in row[task.options_field]]
    return None


def render_pair(task: Task, template: Template, row: dict[str, Any], with_options: bool) -> tuple[str, str]:
    """(input, target) of a row under a template, with the OPTIONS block added where asked."""
    options = None if template.inverted else row_options(task, row)
    block = options_block(options) if options and with_options else ""
    context = {**row, "options_": block}
    prompt = render_text(template.input, context, task=task.name, template=template.id, part="input")
    target = render_text(template.target, context, task=task.name, template=template.id, part="target")
    if block and "options_" not in referenced_fields(template.input):
        prompt = f"{prompt}\n\n{block}"
    return prompt, target


def cot_target(task: Task, row: dict[str, Any]) -> str:
    """'<rationale> So the answer is <answer>.' (the Flan 2022 CoT target)."""
    rationale = str(row[task.rationale_field]).strip()
    answer = str(row[task.answer_field]).strip()
    return f"{rationale} {ANSWER_PREFIX} {answer}."


def _pair_for(
    task: Task, template: Template, row: dict[str, Any], choice: FormatChoice, cot: bool
) -> tuple[str, str]:
    prompt, target = render_pair(task, template, row, choice.with_options)
    if cot:
        return f"{prompt}\n{choice.cot_instruction}", cot_target(task, row)
    return prompt, target


def render_example(
    task: Task, template: Template, row: dict[str, Any], choice: FormatChoice, exemplars: list[dict[str, Any]]
) -> Rendered:
    """Render one example; few-shot formats prepend `exemplars` joined by the chosen delimiter."""
    cot = choice.format in (COT, FEW_SHOT_COT)
    fmt = choice.format if exemplars or choice.format in (ZERO_SHOT, COT) else (COT if cot else ZERO_SHOT)
    prompt, target = _pair_for(task, template, row, choice, cot)
    shows_options = choice.with_options and not template.inverted and row_options(task, row) is not None
    meta: dict[str, Any] = {"inverted": template.inverted, "with_options": shows_options, "k": 0}
    if cot:
        meta["cot_instruction"] = choice.cot_instruction
    if fmt in (FEW_SHOT, FEW_SHOT_COT):
        delim = DELIMITERS[choice.delimiter]
        shots = [_pair_for(task, template, ex, choice, cot) for ex in exemplars]
        parts = [f"{delim.question}{q}\n{delim.answer}{a}" for q, a in shots]
        parts.append(f"{delim.question}{prompt}\n{delim.answer}".rstrip())
        prompt = delim.separator.join(parts)
        meta.update(k=len(exemplars), delimiter=delim.name)
    return Rendered(prompt, target, template.id, fmt, meta)


def pick_exemplars(
    rng: np.random.Generator, pool: list[dict[str, Any]], k: int, exclude: int | None
) -> list[dict[str, Any]]:
    """k distinct exemplars from `pool`, never the row at index `exclude` (the evaluated row)."""
    skip = exclude if exclude is not None and 0 <= exclude < len(pool) else None
    available = len(pool) - (skip is not None)
    k = min(k, available)
    if k <= 0:
        return []
    chosen = (int(i) for i in rng.choice(available, size=k, replace=False))
    return [pool[i + 1 if skip is not None and i >= skip else i] for i in chosen]
