"""Chat-template rendering and tokenization with exact assistant-only loss masks.

The labelled text of assistant turn i is found on characters first, from renderings of prefixes
(`ChatTemplate`: the limited sandbox, with transformers' context):

- P_i = messages[:i] with the generation prompt: what the model is given at inference.
- E_i = messages[:i+1]: the conversation up to the end of this turn.
- H_i = messages[:i+1] with the reply replaced by a sentinel: where the reply's text starts.

Labels run from the reply's start to the end of E_i. The start is the end of P_i, unless the
template's generation prompt is empty or shorter than the header it writes before replies (ChatML
variants without a generation branch): that header text is not labelled, the labels start at H_i's
sentinel. The end is the end of E_i less any text *every* rendering ends with (the rendering of no
messages), which some templates append unconditionally (the original Llama-3-Instruct and GLM-Edge
templates write the next assistant header after every conversation). E_i so trimmed must be a
prefix of the whole rendering, and the labelled text must hold the reply as written (whitespace
aside): a template that rewrites earlier turns, or drops part of a reply (DeepSeek-R1 distills strip
`<think>…</think>`), is refused naming the turn — never trained on a rendering the model will not see.

Tokens: the whole conversation is tokenized once; a token is labelled when it overlaps the labelled
characters. A token that straddles the prompt/reply boundary (a reply opening with a newline that
merges with the header's last newline) is therefore labelled: it holds reply text the model must
produce. `strict=True` instead tokenizes every prefix, requires token boundaries at both ends of each
reply, and refuses rows where a token straddles them.

Control tokens: message content holding a control token's text (`<|im_end|>`, `<|eot_id|>`, …) is
encoded as plain text, as `apply_chat_template(sanitize_control_tokens=True)` does, while the
template's own control tokens stay control tokens; `control_tokens="refuse"` rejects such rows.
Per-message `weight: 0` marks an assistant turn that is not trained. Every row-level failure is a
`ChatRowError` naming the source field (`conversations[3]`) or `template`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2

from ..errors import InstructkitError, TemplateMaskError
from ..models.chat_templates import BUILTIN_TEMPLATES
from ..sandbox import DEFAULT_LIMITS, Limits
from .chat_templates import ChatTemplate
from .conversation import TOOL_ROLES, TOOLS_UNSUPPORTED
from .prepare_config import ControlTokens, LossOn
from .prepared import IGNORE_INDEX

Chat = list[dict[str, Any]]

SENTINEL = "\ue000instructkit-reply\ue001"  # stands in for a reply to find where the template puts it
CONTROL_KEYS = ("weight", "field")  # per-message controls; never passed to the template
_MARK_START, _MARK_END = "\U000f0000", "\U000f0001"  # private-use markers around control tokens in content


class ChatRowError(TemplateMaskError):
    """One conversation cannot be tokenized with exact masks; `field` is `template` or a source field."""

    def __init__(self, field: str, reason: str):
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")


def split_row_error(message: str) -> tuple[str, str]:
    """(field, reason) of a `ChatRowError` message for a reject record.

    Template errors become `template: <message>`; a turn's error is filed under its source column
    (`messages`, `conversations`) and keeps the exact turn (`conversations[3] (assistant): …`) in the reason.
    """
    head, sep, rest = message.partition(": ")
    if not sep:
        return "messages", message
    if head == "template":
        return "template", rest
    return re.split(r"[\[. ]", head, maxsplit=1)[0] or "messages", message


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


@dataclass
class _Span:
    """Characters [start, end) of the rendered conversation that turn `field` trains on."""

    field: str
    start: int
    end: int


@dataclass
class _Plan:
    """A conversation rendered, with its labelled spans and the content control tokens to encode as text."""

    text: str
    spans: list[_Span]
    control: list[tuple[int, int]] = field(default_factory=list)


class ChatTokenizer:
    """Renders conversations with one chat template and tokenizes them with exact loss masks."""

    def __init__(
        self,
        tokenizer,
        chat_template: str | None = None,
        control_tokens: ControlTokens = "text",
        limits: Limits = DEFAULT_LIMITS,
    ):
        if not getattr(tokenizer, "is_fast", False):
            raise InstructkitError("a fast (Rust) tokenizer is required; load it with use_fast=True")
        self.tokenizer = tokenizer
        self.template = resolve_chat_template(tokenizer, chat_template)
        self.control_tokens = control_tokens
        try:
            self.chat_template = ChatTemplate(self.template, tokenizer.special_tokens_map, limits)
        except jinja2.TemplateSyntaxError as exc:
            raise InstructkitError(
                f"chat template: syntax error at line {exc.lineno}: {exc.message}"
            ) from exc
        self._suffix = self._unconditional_suffix()
        names = _control_token_names(tokenizer, self.template)
        self._control_re = re.compile(
            "|".join(map(re.escape, sorted(names, key=len, reverse=True))) or "(?!)"
        )
        self._control_ids = {tokenizer.convert_tokens_to_ids(n) for n in names}
        self._control_names = tuple(names)
        self._newline_ids = self._plain_ids_raw("\n")

    # -- rendering -------------------------------------------------------------------------------

    def render(self, chats: Sequence[Chat], add_generation_prompt: bool = False) -> list[str]:
        """Render conversations (or prefixes of them) to text with the template."""
        out = []
        for chat in chats:
            try:
                out.append(self._render(_template_messages(chat), add_generation_prompt))
            except ChatRowError as exc:
                raise InstructkitError(f"chat template: {exc.reason}") from None
        return out

    def _render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> str:
        try:
            return self.chat_template.render(messages, add_generation_prompt)
        except jinja2.TemplateError as exc:  # raise_exception(), render limits, undefined names
            raise ChatRowError("template", str(exc) or type(exc).__name__) from None
        except Exception as exc:  # errors inside untrusted template code (bad index, wrong type)
            raise ChatRowError("template", f"{type(exc).__name__}: {exc}") from None

    def _unconditional_suffix(self) -> str:
        """Text the template appends to every rendering (the rendering of no messages, less BOS), or ''."""
        try:
            text = self.chat_template.render([], False)
        except Exception:  # templates may index messages[0]; then they append nothing unconditionally
            return ""
        bos = self.tokenizer.bos_token
        if bos and text.startswith(bos):
            text = text[len(bos) :]
        return text if text.strip() else ""

    # -- tokenizing ------------------------------------------------------------------------------

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
        """Tokenize conversations; a conversation that cannot be masked exactly yields its `ChatRowError`.

        Rendering and label spans are per conversation; the texts are tokenized in one batch.
        """
        plans: list[_Plan | ChatRowError] = []
        for chat in chats:
            try:
                plans.append(self._plan(chat, loss_on))
            except ChatRowError as exc:
                plans.append(exc)
        ok = [p for p in plans if isinstance(p, _Plan)]
        encodings = iter(
            self.tokenizer.backend_tokenizer.encode_batch([p.text for p in ok], add_special_tokens=False)
            if ok
            else []
        )
        results: list[Encoded | TemplateMaskError] = []
        for plan in plans:
            if isinstance(plan, ChatRowError):
                results.append(plan)
                continue
            try:
                results.append(self._encode_plan(plan, next(encodings), loss_on, strict))
            except ChatRowError as exc:
                results.append(exc)
        return results

    def _encode_plan(self, plan: _Plan, enc, loss_on: LossOn, strict: bool) -> Encoded:
        ids = list(enc.ids)
        replacements = self._replacements(plan.text, enc, plan.control, plan.spans)
        if loss_on == "all":
            ids = _splice(ids, replacements)
            return Encoded(ids, list(ids))
        bounds = None if strict else _token_bounds(enc, plan.spans)
        if bounds is None:  # strict, or a boundary falls where no token is (trimmed offsets)
            ids = _splice(ids, replacements)
            return Encoded(ids, self._labels_by_prefixes(plan, ids))
        labels = [IGNORE_INDEX] * len(ids)
        for start, end in bounds:
            labels[start:end] = ids[start:end]
        # content tokens encoded as text keep the label state of the control token they replace
        label_replacements = [
            (index, list(new_ids) if labels[index] != IGNORE_INDEX else [IGNORE_INDEX] * len(new_ids))
            for index, new_ids in replacements
        ]
        return Encoded(_splice(ids, replacements), _splice(labels, label_replacements))

    def _labels_by_prefixes(self, plan: _Plan, ids: list[int]) -> list[int]:
        """Strict labels: each reply's prefixes tokenize to prefixes of the whole; a straddling token is refused."""
        labels = [IGNORE_INDEX] * len(ids)
        for span in plan.spans:
            before = self._protected_ids(plan.text[: span.start], plan.control)
            upto = self._protected_ids(plan.text[: span.end], plan.control)
            _require_prefix(
                ids,
                upto,
                span.field,
                "the conversation up to the end of this reply does not tokenize as a prefix of the whole "
                "conversation (first difference at token {at}): the reply's last token merges with the text "
                "after it",
            )
            _require_prefix(
                upto,
                before,
                span.field,
                "the reply merges with the prompt's last token (first difference at token {at}); strict mode "
                "refuses this (otherwise the merged token is labelled)",
            )
            labels[len(before) : len(upto)] = upto[len(before) :]
        return labels

    # -- planning: renderings → labelled character spans -------------------------------------------

    def _plan(self, chat: Chat, loss_on: LossOn) -> _Plan:
        fields = [m.get("field") or f"messages[{i}]" for i, m in enumerate(chat)]
        _refuse_tools(chat, fields)
        messages = _template_messages(chat)
        text = self._render(messages)
        spans: list[_Span] = []
        if loss_on != "all":
            for i in _trained_turns(chat, loss_on):
                spans.append(self._turn_span(messages, i, text, fields[i], spans[-1].end if spans else 0))
        return _Plan(text, spans, self._control_spans(messages, text, fields))

    def _turn_span(self, messages: list[dict], i: int, full: str, where: str, previous_end: int) -> _Span:
        """The characters of `full` that assistant turn i trains on (see the module docstring)."""
        turn = f"{where} (assistant)"
        rendered = full if i == len(messages) - 1 else self._render(messages[: i + 1])
        end = self._end_of_turn(rendered, len(rendered) - self._suffix_length(rendered, messages[:i]))
        prompt = self._render(messages[:i], add_generation_prompt=True)
        if not full.startswith(rendered[:end]):
            raise ChatRowError(
                turn,
                "the conversation rendered up to this reply is not a prefix of the whole rendered conversation: "
                "the chat template rewrites earlier turns (e.g. drops their reasoning), so no one sequence "
                "trains this reply as the model sees it at inference; train only the final reply "
                "(--loss-on last_assistant) or use a template that renders history unchanged",
            )
        if not rendered.startswith(prompt):
            raise ChatRowError(
                turn,
                "the prompt before this reply (with the generation prompt) is not a prefix of the reply's "
                "rendering: the template's generation prompt differs from how it renders replies",
            )
        start = len(prompt)
        content_start = self._content_start(messages, i, rendered)
        if content_start is not None and content_start > start and rendered[start:content_start].strip():
            start = content_start  # a header the generation prompt lacks is prompt, not reply
        if start < previous_end:
            raise ChatRowError(turn, "the generation prompt overlaps the previous reply")
        if end <= start:
            raise ChatRowError(turn, "the template renders no text for this reply")
        _check_reply_kept(messages[i]["content"], full[start:end], turn)
        return _Span(where, start, end)

    def _end_of_turn(self, rendered: str, end: int) -> int:
        """Where a turn's labels end: at its end-of-turn control token when only whitespace follows it.

        ChatML-style templates write `<|im_end|>\n` after every message; the model stops at the
        control token at inference and never produces the newline, so the newline is not trained.
        """
        trimmed = len(rendered[:end].rstrip())
        if trimmed < end and rendered[:trimmed].endswith(self._control_names):
            return trimmed
        return end

    def _suffix_length(self, rendered: str, before: list[dict]) -> int:
        """Length of the unconditional suffix at the end of `rendered` (it belongs to no turn), else 0."""
        suffix = self._suffix
        if not suffix or not rendered.endswith(suffix):
            return 0
        return len(suffix) if self._render(before).endswith(suffix) else 0

    def _content_start(self, messages: list[dict], i: int, rendered: str) -> int | None:
        """Where turn i's content starts, from a rendering with a sentinel reply; None if not found."""
        try:
            probe = self._render([*messages[:i], {**messages[i], "content": SENTINEL}])
        except ChatRowError:
            return None
        at = probe.find(SENTINEL)
        return at if at >= 0 and rendered.startswith(probe[:at]) else None

    # -- control tokens inside content ---------------------------------------------------------------

    def _control_spans(self, messages: list[dict], text: str, fields: list[str]) -> list[tuple[int, int]]:
        """Character spans of `text` where content holds a control token's text (to encode as plain text)."""
        found = ((i, self._control_re.search(str(m.get("content", "")))) for i, m in enumerate(messages))
        hits = [(i, match) for i, match in found if match]
        if not hits:
            return []
        first, match = hits[0]
        if self.control_tokens == "refuse":
            raise ChatRowError(
                f"{fields[first]}.content",
                f"holds the control token {match.group(0)!r} as text; rows like this are refused "
                "(control_tokens='refuse'); the default encodes it as plain text",
            )
        marked = [{**m, "content": self._mark(m["content"])} for m in messages]
        spans, plain = _marked_spans(self._render(marked))
        if plain != text:
            raise ChatRowError(
                f"{fields[first]}.content",
                f"holds the control token {match.group(0)!r} as text, and the chat template renders such content "
                "differently, so it cannot be encoded as plain text exactly",
            )
        return spans

    def _mark(self, content: str) -> str:
        content = content.replace(_MARK_START, "").replace(_MARK_END, "")
        return self._control_re.sub(lambda m: _MARK_START + m.group(0) + _MARK_END, content)

    def _replacements(self, text: str, enc, control: list[tuple[int, int]], spans: list[_Span]):
        """(token index, plain-text ids) for each control token the tokenizer matched inside content."""
        out = []
        for a, b in control:
            k = enc.char_to_token(a)
            start, end = enc.token_to_chars(k) if k is not None else (a, a)
            if k is None or enc.ids[k] not in self._control_ids or start > a or end < b:
                where = next((s.field for s in spans if s.start <= a < s.end), "content")
                raise ChatRowError(where, f"cannot encode {text[a:b]!r} in the content as plain text")
            out.append((k, self._plain_ids(text[start:end])))
        return out

    def _protected_ids(self, text: str, control: list[tuple[int, int]]) -> list[int]:
        """Ids of `text` (a prefix of a rendering) with content control tokens encoded as plain text."""
        enc = self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
        inside = [(a, b) for a, b in control if b <= len(text)]
        return _splice(list(enc.ids), self._replacements(text, enc, inside, []))

    def _plain_ids(self, piece: str) -> list[int]:
        """`piece` encoded as plain text, as it reads mid-sequence (no SentencePiece prefix space)."""
        ids = self._plain_ids_raw("\n" + piece)
        ids = ids[len(self._newline_ids) :] if ids[: len(self._newline_ids)] == self._newline_ids else None
        ids = ids if ids is not None else self._plain_ids_raw(piece)
        if any(i in self._control_ids for i in ids):
            raise ChatRowError(
                "content", f"the tokenizer encodes {piece!r} as a control token even as plain text"
            )
        return ids

    def _plain_ids_raw(self, text: str) -> list[int]:
        encode = getattr(self.tokenizer, "_encode_without_added_tokens", None)
        if encode is not None:
            return list(encode(text))
        return self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)


def _control_token_names(tokenizer, template: str) -> tuple[str, ...]:
    """The tokens content must not produce: transformers' choice for `sanitize_control_tokens` when available."""
    getter = getattr(tokenizer, "_get_control_tokens", None)
    if getter is not None:
        return tuple(getter(template))
    return tuple(t.content for t in tokenizer.added_tokens_decoder.values() if t.special)


def _marked_spans(marked: str) -> tuple[list[tuple[int, int]], str]:
    """Spans of the marked control tokens in the unmarked text, and the unmarked text."""
    spans, out, size = [], [], 0
    for piece in re.split(f"({_MARK_START}[^{_MARK_END}]*{_MARK_END}|[{_MARK_START}{_MARK_END}])", marked):
        if piece.startswith(_MARK_START) and piece.endswith(_MARK_END) and len(piece) > 2:
            piece = piece[1:-1]
            spans.append((size, size + len(piece)))
        elif piece in (_MARK_START, _MARK_END):
            continue
        out.append(piece)
        size += len(piece)
    return spans, "".join(out)


def _template_messages(chat: Chat) -> list[dict[str, Any]]:
    """What the template sees: each message without instructkit's per-message controls or None values."""
    return [{k: v for k, v in m.items() if k not in CONTROL_KEYS and v is not None} for m in chat]


def _refuse_tools(chat: Chat, fields: list[str]) -> None:
    for m, where in zip(chat, fields):
        if m.get("role") in TOOL_ROLES or m.get("tool_calls"):
            raise ChatRowError(where, TOOLS_UNSUPPORTED)


def _trained_turns(chat: Chat, loss_on: LossOn) -> list[int]:
    """Indices of the assistant messages that carry labels (`weight: 0` turns never do)."""
    turns = [i for i, m in enumerate(chat) if m["role"] == "assistant"]
    if loss_on == "last_assistant":
        turns = turns[-1:]
    return [i for i in turns if chat[i].get("weight") != 0]


def _squash(text: str) -> str:
    return "".join(text.split())


def _check_reply_kept(content: str, labelled: str, turn: str) -> None:
    """Refuse a template that drops or rewrites part of the reply (whitespace differences aside)."""
    if not _squash(labelled).startswith(_squash(content)):
        raise ChatRowError(
            turn,
            "the chat template does not render this reply as written (it drops or rewrites part of it, e.g. "
            "reasoning between <think> tags), so training on it would teach a reply other than the data's; "
            "use a template that keeps the reply, or remove that part from the data",
        )


def _token_bounds(enc, spans: list[_Span]) -> list[tuple[int, int]] | None:
    """Token ranges overlapping each span, or None when a span's end falls where no token is."""
    bounds = []
    for span in spans:
        first, last = enc.char_to_token(span.start), enc.char_to_token(span.end - 1)
        if first is None or last is None:
            return None
        bounds.append((first, last + 1))
    return bounds


def _splice(ids: list[int], replacements: list[tuple[int, list[int]]]) -> list[int]:
    if not replacements:
        return ids
    out = list(ids)
    for index, new_ids in sorted(replacements, reverse=True):
        out[index : index + 1] = new_ids
    return out


def _require_prefix(whole: list[int], part: list[int], field: str, message: str) -> None:
    """Refuse the assistant reply `field` unless `part` is a prefix of `whole` (`{at}` in `message`: where
    they first differ)."""
    if whole[: len(part)] != part:
        raise ChatRowError(f"{field} (assistant)", message.format(at=_first_difference(whole, part)))


def _first_difference(a: list[int], b: list[int]) -> int:
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k
    return min(len(a), len(b))
