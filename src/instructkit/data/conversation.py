"""The one example type every stage shares: an ordered list of chat messages plus metadata.

Stored in Arrow as plain columns (see `CONVERSATION_FEATURES`) so every stage reads and writes
`datasets` directories that can be inspected and resumed on their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import datasets

ROLES = ("system", "user", "assistant")
# Tool turns (calls and results) in the field's formats. They are refused, never trained as plain text:
# rendering them needs the chat template's tool support, which conversations here do not carry yet.
TOOL_ROLES = ("tool", "function", "ipython", "observation", "function_call", "tool_call", "tool_response")
TOOLS_UNSUPPORTED = (
    "tool calls and tool results are not supported yet (they would be trained as plain text instead of "
    "the chat template's tool format); drop this row or remove its tool turns"
)

CONVERSATION_FEATURES = datasets.Features(
    {
        # weight: None (default) or 1 = trained when an assistant turn, 0 = never trained (ShareGPT/axolotl
        # `weight`); field: where the message came from in the source row (e.g. `conversations[3]`), for errors.
        "messages": [
            {
                "role": datasets.Value("string"),
                "content": datasets.Value("string"),
                "weight": datasets.Value("float64"),
                "field": datasets.Value("string"),
            }
        ],
        "source": datasets.Value("string"),
        "row_id": datasets.Value("int64"),
        "task": datasets.Value("string"),
        "cluster": datasets.Value("string"),
        "template_id": datasets.Value("string"),
        "format": datasets.Value("string"),
        "meta": datasets.Value("string"),
    }
)


class ConversationError(ValueError):
    """A conversation breaks the shape rules; `field` names the offending part (e.g. `messages[2].role`)."""

    def __init__(self, field: str, reason: str):
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")


@dataclass(frozen=True)
class Message:
    """One turn. `weight` 0 marks an assistant turn that is not trained; `field` names its source field."""

    role: str
    content: str
    weight: float | None = None
    field: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The record / chat form: role and content, plus weight and field when set."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.weight is not None:
            out["weight"] = self.weight
        if self.field is not None:
            out["field"] = self.field
        return out


@dataclass
class Conversation:
    """System (optional, first), then alternating user/assistant turns, ending with assistant."""

    messages: list[Message]
    source: str = ""
    row_id: int = -1
    task: str | None = None
    cluster: str | None = None
    template_id: str | None = None
    format: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_messages(self.messages)

    @classmethod
    def from_pairs(cls, *turns: tuple[str, str], **metadata: Any) -> Conversation:
        """Build from (role, content) tuples: `Conversation.from_pairs(("user", "hi"), ("assistant", "yo"))`."""
        return cls([Message(r, c) for r, c in turns], **metadata)

    def to_record(self) -> dict[str, Any]:
        """The Arrow row form (matches `CONVERSATION_FEATURES`)."""
        return {
            "messages": [
                {"role": m.role, "content": m.content, "weight": m.weight, "field": m.field}
                for m in self.messages
            ],
            "source": self.source,
            "row_id": self.row_id,
            "task": self.task,
            "cluster": self.cluster,
            "template_id": self.template_id,
            "format": self.format,
            "meta": json.dumps(self.meta, sort_keys=True, ensure_ascii=False),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Conversation:
        """Inverse of `to_record`."""
        meta = record.get("meta") or "{}"
        return cls(
            [Message(m["role"], m["content"], m.get("weight"), m.get("field")) for m in record["messages"]],
            source=record.get("source") or "",
            row_id=record.get("row_id", -1) if record.get("row_id") is not None else -1,
            task=record.get("task"),
            cluster=record.get("cluster"),
            template_id=record.get("template_id"),
            format=record.get("format"),
            meta=json.loads(meta) if isinstance(meta, str) else dict(meta),
        )

    def as_chat(self) -> list[dict[str, str]]:
        """Messages as dicts (role, content; weight and field when set): what `ChatTokenizer.encode` takes."""
        return [m.as_dict() for m in self.messages]


def validate_messages(messages: list[Message]) -> None:
    """Raise ConversationError unless messages follow system? (user assistant)+ with non-empty replies."""
    if not messages:
        raise ConversationError("messages", "empty conversation")
    for i, m in enumerate(messages):
        where = _where(messages, i)
        if not isinstance(m.content, str):
            raise ConversationError(f"{where}.content", f"expected a string, got {type(m.content).__name__}")
        if m.role in TOOL_ROLES:
            raise ConversationError(f"{where}.role", f"{m.role!r}: {TOOLS_UNSUPPORTED}")
        if m.weight is not None and m.weight not in (0, 1):
            raise ConversationError(
                f"{where}.weight",
                f"{m.weight!r}: only 0 (turn not trained) or 1 (trained) are supported, not per-turn loss scales",
            )
        if m.role not in ROLES:
            raise ConversationError(
                f"{where}.role", f"unknown role {m.role!r} (accepted: {', '.join(ROLES)})"
            )
    start = 1 if messages[0].role == "system" else 0
    body = messages[start:]
    if not body:
        raise ConversationError(
            "messages", "only a system message; a user and an assistant turn are required"
        )
    for i, m in enumerate(body, start=start):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if m.role != expected:
            raise ConversationError(
                f"{_where(messages, i)}.role", f"expected {expected!r} here, got {m.role!r} (wrong order)"
            )
        if m.role == "assistant" and not m.content.strip():
            raise ConversationError(f"{_where(messages, i)}.content", "empty assistant content")
    if body[-1].role != "assistant":
        raise ConversationError(
            f"{_where(messages, len(messages) - 1)}.role", "conversation must end with an assistant turn"
        )


def _where(messages: list[Message], i: int) -> str:
    """The source field of message i (e.g. `conversations[3]`), `messages[i]` when not recorded."""
    return messages[i].field or f"messages[{i}]"


def turn_controls(turn: dict[str, Any], where: str, role_key: str = "role") -> float | None:
    """A source turn's per-turn controls: refuse tool turns clearly, return its `weight` (None when absent)."""
    role = turn.get(role_key)
    if turn.get("tool_calls") or turn.get("function_call"):
        raise ConversationError(f"{where}.tool_calls", TOOLS_UNSUPPORTED)
    if isinstance(role, str) and role.lower() in TOOL_ROLES:
        raise ConversationError(f"{where}.{role_key}", f"{role!r}: {TOOLS_UNSUPPORTED}")
    weight = turn.get("weight")
    if weight is None:
        return None
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ConversationError(f"{where}.weight", f"expected 0 or 1, got {weight!r}")
    return float(weight)
