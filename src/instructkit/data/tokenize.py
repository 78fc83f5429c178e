"""Chat-template rendering and tokenization with exact assistant-only loss masks.

For assistant turn i the template renders two prefixes: P_i = messages[:i] with the generation
prompt, and E_i = messages[:i+1]. Their tokens must extend each other and the whole conversation:
tokens(P_i) ⊑ tokens(E_i) ⊑ tokens(full). The labelled tokens of turn i are then exactly
tokens(E_i)[len(tokens(P_i)):] — the reply plus the template's end-of-turn marker — with no
`{% generation %}` markers and no searching of token strings. When a template breaks this (it
rewrites earlier turns, or a reply merges with the prompt into one token) masking is impossible
to do exactly, and a `TemplateMaskError` names the turn instead of guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import InstructkitError, TemplateMaskError
from .chat_templates import BUILTIN_TEMPLATES

LossOn = Literal["assistant", "last_assistant", "all"]
IGNORE_INDEX = -100
Chat = list[dict[str, str]]


def resolve_chat_template(tokenizer, chat_template: str | None) -> str:
    """A built-in name, a Jinja source string, or None for the tokenizer's own template."""
    if chat_template is None or chat_template == "tokenizer":
        if not getattr(tokenizer, "chat_template", None):
            raise InstructkitError(
                "this tokenizer has no chat template; choose a built-in one with --chat-template "
                f"({', '.join(BUILTIN_TEMPLATES)})"
            )
        template = tokenizer.chat_template
        if isinstance(template, dict):  # tokenizers may carry several named templates
            template = template.get("default") or next(iter(template.values()))
        return template
    if chat_template in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[chat_template]
    if "{%" in chat_template or "{{" in chat_template:
        return chat_template
    raise InstructkitError(
        f"unknown chat template {chat_template!r}: give a built-in name ({', '.join(BUILTIN_TEMPLATES)}), "
        "'tokenizer', or a Jinja template string"
    )


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


class ChatTokenizer:
    """Renders conversations with one chat template and tokenizes them with exact loss masks."""

    def __init__(self, tokenizer, chat_template: str | None = None):
        if not getattr(tokenizer, "is_fast", False):
            raise InstructkitError("a fast (Rust) tokenizer is required; load it with use_fast=True")
        self.tokenizer = tokenizer
        self.template = resolve_chat_template(tokenizer, chat_template)

    def render(self, chats: Sequence[Chat], add_generation_prompt: bool = False) -> list[str]:
        """Render conversations (or prefixes of them) to text with the template."""
        if not chats:
            return []
        out = self.tokenizer.apply_chat_template(
            list(chats),
            chat_template=self.template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
        return [out] if isinstance(out, str) else list(out)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of rendered texts; special tokens come from the template, never added here."""
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def encode_text(self, texts: Sequence[str]) -> list[Encoded]:
        """Pretraining rows: text + EOS, every token labelled."""
        eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        return [Encoded(ids + eos, ids + eos) for ids in self.tokenize(texts)]

    def encode(
        self, chats: Sequence[Chat], loss_on: LossOn = "assistant"
    ) -> list[Encoded | TemplateMaskError]:
        """Tokenize conversations; a conversation that cannot be masked exactly yields its error."""
        fulls = self.tokenize(self.render(chats))
        if loss_on == "all":
            return [Encoded(ids, list(ids)) for ids in fulls]
        turns = [_trained_turns(chat, loss_on) for chat in chats]
        prompts = self.tokenize(self.render([chat[:i] for chat, ts in zip(chats, turns) for i in ts], True))
        ends = self.tokenize(self.render([chat[: i + 1] for chat, ts in zip(chats, turns) for i in ts]))
        results: list[Encoded | TemplateMaskError] = []
        cursor = 0
        for full, ts in zip(fulls, turns):
            spans = [(prompts[cursor + k], ends[cursor + k], i) for k, i in enumerate(ts)]
            cursor += len(ts)
            try:
                results.append(Encoded(full, _labels_from_spans(full, spans)))
            except TemplateMaskError as exc:
                results.append(exc)
        return results


def _trained_turns(chat: Chat, loss_on: LossOn) -> list[int]:
    """Indices of the assistant messages that carry labels."""
    turns = [i for i, m in enumerate(chat) if m["role"] == "assistant"]
    return turns[-1:] if loss_on == "last_assistant" else turns


def _labels_from_spans(full: list[int], spans: list[tuple[list[int], list[int], int]]) -> list[int]:
    """Labels for `full`: the tokens each turn adds beyond its prompt; everything else ignored."""
    labels = [IGNORE_INDEX] * len(full)
    previous_end = 0
    for prompt, end, turn in spans:
        if full[: len(end)] != end:
            raise TemplateMaskError(
                f"messages[{turn}] (assistant): the conversation rendered up to this turn does not tokenize as a "
                f"prefix of the whole conversation (first difference at token {_first_difference(full, end)}); "
                "the chat template rewrites earlier turns or a turn boundary merges into one token"
            )
        if end[: len(prompt)] != prompt:
            raise TemplateMaskError(
                f"messages[{turn}] (assistant): the prompt before this reply (with the generation prompt) does not "
                f"tokenize as a prefix of the reply's rendering (first difference at token "
                f"{_first_difference(end, prompt)}); the reply merges with the prompt's last token"
            )
        if len(prompt) < previous_end:
            raise TemplateMaskError(
                f"messages[{turn}] (assistant): the generation prompt overlaps the previous reply"
            )
        if len(end) == len(prompt):
            raise TemplateMaskError(
                f"messages[{turn}] (assistant): the template renders no tokens for this reply"
            )
        labels[len(prompt) : len(end)] = end[len(prompt) :]
        previous_end = len(end)
    return labels


def _first_difference(a: list[int], b: list[int]) -> int:
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k
    return min(len(a), len(b))
