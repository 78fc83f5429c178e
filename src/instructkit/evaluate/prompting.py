"""Prompt text for a task's document: plain text for base models, the chat template for chat models.

Styles: `base` (few-shot text, then the query); `chat` (the same text as one user turn, the answer as the
assistant's reply); `chat_multiturn` (each exemplar a user/assistant exchange, then the query).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, get_args

from ..errors import InstructkitError
from .config import PromptStyle
from .spec import EvalDoc, EvalTask

if TYPE_CHECKING:  # a type only: backends/hf.py imports this module (stop_token_ids)
    from .backends.base import Backend

STYLES: tuple[str, ...] = get_args(PromptStyle)


def base_text(task: EvalTask, doc: EvalDoc) -> str:
    """Description, few-shot block and query as one string (base-model form)."""
    parts = [task.description] if task.description else []
    if task.fewshot_text is not None:
        parts.append(task.fewshot_text)
    else:
        parts += [ex.query + task.target_delimiter + ex.target for ex in task.fewshot()]
    parts.append(doc.query)
    return task.fewshot_delimiter.join(p for p in parts if p)


def context(task: EvalTask, doc: EvalDoc, style: PromptStyle, backend: Backend | None = None) -> str:
    """The text the model continues from (the prompt for generation, the context for loglikelihood)."""
    if style == "base":
        return base_text(task, doc)
    if backend is None:
        raise InstructkitError("chat prompt styles need a backend with a chat template")
    if style in ("chat", "chat_multiturn"):
        return backend.render_chat(chat_messages(task, doc, style))
    raise InstructkitError(f"unknown prompt style {style!r}; styles: {', '.join(STYLES)}")


def chat_messages(task: EvalTask, doc: EvalDoc, style: PromptStyle) -> list[dict[str, str]]:
    """The chat a chat style sends (before the template): one user turn (`chat`) or the exemplars as turns."""
    if style == "chat":
        return [{"role": "user", "content": base_text(task, doc)}]
    if style == "chat_multiturn":
        return _turns(task, doc)
    raise InstructkitError(f"{style!r} is not a chat prompt style; chat styles: chat, chat_multiturn")


def continuation(task: EvalTask, choice: str, style: PromptStyle) -> str:
    """A choice as the model should produce it: after the delimiter for base, as the reply for chat."""
    return task.target_delimiter + choice if style == "base" else choice.lstrip()


def _turns(task: EvalTask, doc: EvalDoc) -> list[dict[str, str]]:
    turns: list[dict[str, str]] = []
    exemplars = task.fewshot()
    for i, ex in enumerate(exemplars):
        query = (
            f"{task.description}{task.fewshot_delimiter}{ex.query}"
            if i == 0 and task.description
            else ex.query
        )
        turns += [{"role": "user", "content": query}, {"role": "assistant", "content": ex.target}]
    first = not exemplars and task.description
    query = f"{task.description}{task.fewshot_delimiter}{doc.query}" if first else doc.query
    if task.fewshot_text is not None:
        query = task.fewshot_text + task.fewshot_delimiter + query
    return turns + [{"role": "user", "content": query}]


def stop_token_ids(model: object, tokenizer: object) -> frozenset[int]:
    """Token ids that end a generation: the tokenizer's EOS plus every `eos_token_id` of the model's
    `generation_config.json` (an int or a list, e.g. Llama 3's <|eot_id|> and <|end_of_text|>)."""
    ids = {getattr(tokenizer, "eos_token_id", None)}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return frozenset(i for i in ids if isinstance(i, int))
