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

from bisect import bisect_right
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
        self, chats: Sequence[Chat], loss_on: LossOn = "assistant", strict: bool = False
    ) -> list[Encoded | TemplateMaskError]:
        """Tokenize conversations; a conversation that cannot be masked exactly yields its error.

        The whole conversation is tokenized once, with character offsets. Each trained turn's prompt
        and end renderings must be string prefixes of the conversation, and a token boundary must
        fall exactly at each prefix's end: then (BPE, unigram and WordPiece alike) the prefix
        tokenizes to exactly the tokens before that boundary, because no merge crosses it. Where a
        boundary is not clean (e.g. trimmed offsets), or with `strict=True`, the prefixes are
        tokenized and compared token by token instead.
        """
        full_texts = self.render(chats)
        if loss_on == "all":
            return [Encoded(ids, list(ids)) for ids in self.tokenize(full_texts)]
        encoded = (
            self._encode_with_offsets(full_texts)
            if not strict
            else self.tokenizer(full_texts, add_special_tokens=False)
        )
        turns = [_trained_turns(chat, loss_on) for chat in chats]
        prompts = self.render([chat[:i] for chat, ts in zip(chats, turns) for i in ts], True)
        ends = self.render(
            [chat[: i + 1] for chat, ts in zip(chats, turns) for i in ts if i != len(chat) - 1]
        )
        results: list[Encoded | TemplateMaskError] = []
        p_cursor = e_cursor = 0
        for n, (chat, ts) in enumerate(zip(chats, turns)):
            spans = []
            for i in ts:
                is_last = i == len(chat) - 1
                spans.append((prompts[p_cursor], full_texts[n] if is_last else ends[e_cursor], i))
                p_cursor += 1
                e_cursor += not is_last
            ids = encoded["input_ids"][n]
            offsets = None if strict else encoded["offset_mapping"][n]
            try:
                results.append(Encoded(ids, self._labels(full_texts[n], ids, offsets, spans)))
            except TemplateMaskError as exc:
                results.append(exc)
        return results

    def _encode_with_offsets(self, texts: list[str]) -> dict[str, list]:
        """Ids and character offsets straight from the Rust tokenizer (what the fast HF call wraps)."""
        encodings = self.tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        return {"input_ids": [e.ids for e in encodings], "offset_mapping": [e.offsets for e in encodings]}

    def _labels(
        self, full_text: str, ids: list[int], offsets, spans: list[tuple[str, str, int]]
    ) -> list[int]:
        """Labels from character boundaries when they are clean, else from tokenized prefixes."""
        if offsets is not None:
            bounds = _token_bounds(full_text, offsets, spans)
            if bounds is not None:
                return _labels_from_bounds(ids, bounds)
        tokenized = self.tokenize([text for prompt, end, _ in spans for text in (prompt, end)])
        token_spans = [(tokenized[2 * k], tokenized[2 * k + 1], turn) for k, (_, _, turn) in enumerate(spans)]
        return _labels_from_spans(ids, token_spans)


def _token_bounds(full_text: str, offsets, spans: list[tuple[str, str, int]]) -> list[tuple[int, int]] | None:
    """Token index pairs (start, end) of each trained turn, or None where a boundary is not clean.

    Raises TemplateMaskError when a rendering is not a string prefix of the next: no tokenization
    can then make the masks exact.
    """
    token_ends = [end for _, end in offsets]
    bounds = []
    previous_end = 0
    for prompt, end, turn in spans:
        if not full_text.startswith(end):
            raise TemplateMaskError(
                f"messages[{turn}] (assistant): the conversation rendered up to this turn is not a prefix of the "
                "whole rendered conversation; the chat template rewrites earlier turns"
            )
        if not end.startswith(prompt) or len(prompt) < previous_end:
            raise TemplateMaskError(
                f"messages[{turn}] (assistant): the prompt before this reply (with the generation prompt) is not a "
                "prefix of the reply's rendering; the template's generation prompt differs from how it renders replies"
            )
        start_tok, end_tok = (
            _boundary(token_ends, offsets, len(prompt)),
            _boundary(token_ends, offsets, len(end)),
        )
        if start_tok is None or end_tok is None:
            return None
        if end_tok == start_tok:
            raise TemplateMaskError(
                f"messages[{turn}] (assistant): the template renders no tokens for this reply"
            )
        bounds.append((start_tok, end_tok))
        previous_end = len(end)
    return bounds


def _boundary(token_ends: list[int], offsets, char: int) -> int | None:
    """Index of the first token starting at or after `char` when a token boundary falls exactly there."""
    k = bisect_right(token_ends, char)
    if char != 0 and (k == 0 or token_ends[k - 1] != char):
        return None
    if k < len(offsets) and offsets[k][0] < char:
        return None
    return k


def _labels_from_bounds(ids: list[int], bounds: list[tuple[int, int]]) -> list[int]:
    labels = [IGNORE_INDEX] * len(ids)
    for start, end in bounds:
        labels[start:end] = ids[start:end]
    return labels


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
