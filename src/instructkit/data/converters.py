"""Format converters: one raw row (any common instruction-data schema) → one `Conversation`.

Formats are detected from the column names, or named explicitly. Each converter raises
`ConversationError(field, reason)` for a bad row; the caller adds file and row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..errors import InstructkitError
from .conversation import Conversation, ConversationError, Message, turn_controls

# Required and optional columns per format, in detection priority order.
INPUT_FORMATS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "messages": (frozenset({"messages"}), frozenset()),
    "sharegpt": (frozenset({"conversations"}), frozenset()),
    "alpaca": (frozenset({"instruction", "output"}), frozenset({"input"})),
    "dolly": (frozenset({"instruction", "response"}), frozenset({"context"})),
    "prompt_completion": (frozenset({"prompt", "completion"}), frozenset()),
    "flan": (frozenset({"inputs", "targets"}), frozenset()),
    "question_answer": (frozenset({"question", "answer"}), frozenset()),
    "self_instruct": (frozenset({"instruction", "instances"}), frozenset()),
    "text": (frozenset({"text"}), frozenset()),
    # preference pairs (data/preference.py): conversational, plain strings or HH transcripts
    "preference": (frozenset({"chosen", "rejected"}), frozenset({"prompt"})),
}
PREFERENCE_FORMATS = frozenset({"preference"})

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
}
END_OF_TEXT_MARKERS = ("<|endoftext|>",)  # the P3/T0 files end completions with this literal


def detect_input_format(columns: Iterable[str]) -> str:
    """Name the format whose required columns are present; error if none or several fit."""
    cols = set(columns)
    matches = [name for name, (required, _) in INPUT_FORMATS.items() if required <= cols]
    if "preference" in matches:  # a chosen/rejected pair (UltraFeedback also carries `messages`)
        return "preference"
    if "messages" in matches:  # instructkit's own conversation datasets carry extra metadata columns
        return "messages"
    if len(matches) == 1:
        return matches[0]
    accepted = "; ".join(f"{n}: {', '.join(sorted(r))}" for n, (r, _) in INPUT_FORMATS.items())
    if not matches:
        raise InstructkitError(
            f"cannot tell the data format from the columns {sorted(cols)}. Accepted formats (required columns): "
            f"{accepted}. Pass --input-format to choose one."
        )
    raise InstructkitError(
        f"ambiguous data format: the columns {sorted(cols)} fit {', '.join(matches)}. Pass --input-format to choose one."
    )


def _string(record: dict[str, Any], field: str, required: bool = True) -> str:
    value = record.get(field)
    if value is None:
        if required:
            raise ConversationError(field, "missing")
        return ""
    if not isinstance(value, str):
        raise ConversationError(field, f"expected a string, got {type(value).__name__}")
    return value


def _join(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p.strip())


def _from_messages(record: dict[str, Any], column: str = "messages") -> list[Message]:
    """A list of {role, content[, weight]} turns in `column`; errors name `column[i]`."""
    messages = record.get(column)
    if not isinstance(messages, list):
        raise ConversationError(column, f"expected a list of messages, got {type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        where = f"{column}[{i}]"
        if not isinstance(m, dict):
            raise ConversationError(
                where, f"expected an object with role and content, got {type(m).__name__}"
            )
        weight = turn_controls(m, where)
        for key in ("role", "content"):
            if not isinstance(m.get(key), str):
                got = "missing" if key not in m else f"expected a string, got {type(m[key]).__name__}"
                raise ConversationError(f"{where}.{key}", got)
        out.append(Message(m["role"], m["content"], weight, field=None if column == "messages" else where))
    return out


def _from_sharegpt(record: dict[str, Any]) -> list[Message]:
    turns = record.get("conversations")
    if not isinstance(turns, list):
        raise ConversationError("conversations", f"expected a list of turns, got {type(turns).__name__}")
    out = []
    for i, t in enumerate(turns):
        if (
            not isinstance(t, dict)
            or not isinstance(t.get("from"), str)
            or not isinstance(t.get("value"), str)
        ):
            raise ConversationError(
                f"conversations[{i}]", "expected an object with string fields 'from' and 'value'"
            )
        weight = turn_controls(t, f"conversations[{i}]", role_key="from")
        role = SHAREGPT_ROLES.get(t["from"].lower())
        if role is None:
            raise ConversationError(f"conversations[{i}].from", f"unknown speaker {t['from']!r}")
        out.append(Message(role, t["value"], weight, field=f"conversations[{i}]"))
    return out


def _from_alpaca(record: dict[str, Any]) -> list[Message]:
    user = _join(_string(record, "instruction"), _string(record, "input", required=False))
    return [Message("user", user), Message("assistant", _string(record, "output"))]


def _from_dolly(record: dict[str, Any]) -> list[Message]:
    user = _join(_string(record, "instruction"), _string(record, "context", required=False))
    return [Message("user", user), Message("assistant", _string(record, "response"))]


def _strip_end_marker(text: str) -> str:
    for marker in END_OF_TEXT_MARKERS:
        if text.endswith(marker):
            return text[: -len(marker)]
    return text


def _from_prompt_completion(record: dict[str, Any]) -> list[Message]:
    prompt, completion = record.get("prompt"), record.get("completion")
    if isinstance(prompt, list) and isinstance(completion, list):  # TRL conversational prompt-completion
        return _from_prompt_completion_turns(record)
    prompt_text = _string(record, "prompt")
    return [
        Message("user", prompt_text),
        Message("assistant", _strip_end_marker(_string(record, "completion"))),
    ]


def _from_prompt_completion_turns(record: dict[str, Any]) -> list[Message]:
    """TRL's conversational prompt-completion: every `prompt` turn is context, only `completion` is trained.

    An assistant turn inside `prompt` (a few-shot exchange, an earlier reply) gets weight 0 whatever
    its own weight says, as TRL's completion-only loss never trains the prompt.
    """
    prompt = [
        Message(m.role, m.content, 0.0 if m.role == "assistant" else m.weight, m.field)
        for m in _from_messages(record, "prompt")
    ]
    return prompt + _from_messages(record, "completion")


def _from_flan(record: dict[str, Any]) -> list[Message]:
    return [Message("user", _string(record, "inputs")), Message("assistant", _string(record, "targets"))]


def _from_question_answer(record: dict[str, Any]) -> list[Message]:
    """GSM8K-style `question` / `answer` rows."""
    return [Message("user", _string(record, "question")), Message("assistant", _string(record, "answer"))]


def _from_self_instruct(record: dict[str, Any]) -> list[list[Message]]:
    """Self-instruct tasks: one conversation per instance (instruction + input → output)."""
    instances = record.get("instances")
    if not isinstance(instances, list) or not instances:
        raise ConversationError("instances", "expected a non-empty list of {input, output} objects")
    instruction = _string(record, "instruction")
    out = []
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict):
            raise ConversationError(f"instances[{i}]", f"expected an object, got {type(inst).__name__}")
        try:
            user = _join(instruction, _string(inst, "input", required=False))
            out.append([Message("user", user), Message("assistant", _string(inst, "output"))])
        except ConversationError as exc:
            raise ConversationError(f"instances[{i}].{exc.field}", exc.reason) from None
    return out


CONVERTERS: dict[str, Callable[[dict[str, Any]], list[Message] | list[list[Message]]]] = {
    "messages": _from_messages,
    "sharegpt": _from_sharegpt,
    "alpaca": _from_alpaca,
    "dolly": _from_dolly,
    "prompt_completion": _from_prompt_completion,
    "flan": _from_flan,
    "question_answer": _from_question_answer,
    "self_instruct": _from_self_instruct,
}
MULTI_CONVERSATION_FORMATS = {"self_instruct"}

METADATA_FIELDS = ("task", "cluster", "template_id", "format")


def to_conversations(record: dict[str, Any], fmt: str, source: str, row_id: int) -> list[Conversation]:
    """Convert one raw row (some formats hold several conversations per row); errors name the field."""
    if fmt not in CONVERTERS:
        raise InstructkitError(
            f"format {fmt!r} is not a conversation format (accepted: {', '.join(CONVERTERS)})"
        )
    converted = CONVERTERS[fmt](record)
    groups = converted if fmt in MULTI_CONVERSATION_FORMATS else [converted]
    metadata = {k: record[k] for k in METADATA_FIELDS if isinstance(record.get(k), str)}
    if isinstance(record.get("row_id"), int):
        row_id = record["row_id"]
    source = record.get("source") or source
    convs = []
    for k, messages in enumerate(groups):
        meta = {"instance": k} if len(groups) > 1 else {}
        convs.append(Conversation(messages, source=source, row_id=row_id, meta=meta, **metadata))
    return convs


def to_conversation(record: dict[str, Any], fmt: str, source: str, row_id: int) -> Conversation:
    """Convert a row that holds exactly one conversation."""
    convs = to_conversations(record, fmt, source, row_id)
    if len(convs) != 1:
        raise InstructkitError(f"{source}:{row_id}: holds {len(convs)} conversations; use to_conversations")
    return convs[0]
