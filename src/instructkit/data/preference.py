"""Preference pairs: one prompt (messages) with a chosen and a rejected reply, and the formats they come in.

`Preference` sits beside `Conversation`: prompt + chosen and prompt + rejected are each a valid
conversation. Rows read as the `preference` input format (columns `chosen`, `rejected`, optional
`prompt`); the converter tells the three shapes people publish apart by their values:

- conversational (UltraFeedback-binarized, Tülu 3 preference, TRL): `chosen` / `rejected` are
  message lists, either whole conversations or only the replies after a `prompt` message list;
- plain strings: `{prompt, chosen, rejected}` (one user turn, one assistant reply each);
- Anthropic HH: `chosen` / `rejected` are whole `Human: … Assistant: …` transcripts and no prompt.

Whole conversations are split at their last assistant turn; a pair whose two prompts differ is
refused naming the field, never trained on the chosen side's prompt alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import datasets

from .conversation import CONVERSATION_FEATURES, ConversationError, Message, validate_messages
from .converters import _from_messages

MESSAGE_LIST = CONVERSATION_FEATURES["messages"]
PREFERENCE_FEATURES = datasets.Features(
    {
        "prompt": MESSAGE_LIST,
        "chosen": MESSAGE_LIST,
        "rejected": MESSAGE_LIST,
        "source": datasets.Value("string"),
        "row_id": datasets.Value("int64"),
        "meta": datasets.Value("string"),
    }
)
SIDES = ("chosen", "rejected")  # side 0 and side 1 of a pair, in this order everywhere
HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclass
class Preference:
    """A prompt (system? then user/assistant turns, ending with user) and two replies to it."""

    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    source: str = ""
    row_id: int = -1
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for side in SIDES:
            try:
                validate_messages(self.prompt + getattr(self, side))
            except ConversationError as exc:
                raise ConversationError(f"{side}: {exc.field}", exc.reason) from None
            if not getattr(self, side):
                raise ConversationError(side, "no reply after the prompt")

    def chats(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(prompt + chosen, prompt + rejected) for `ChatTokenizer.encode`; prompt replies are never trained."""
        prompt = [m.as_dict() for m in self.prompt]
        return pair_chat(prompt, [m.as_dict() for m in self.chosen]), pair_chat(
            prompt, [m.as_dict() for m in self.rejected]
        )

    def to_record(self) -> dict[str, Any]:
        """The Arrow row form (matches `PREFERENCE_FEATURES`)."""

        def rows(messages: list[Message]) -> list[dict[str, Any]]:
            return [
                {"role": m.role, "content": m.content, "weight": m.weight, "field": m.field} for m in messages
            ]

        return {
            "prompt": rows(self.prompt),
            "chosen": rows(self.chosen),
            "rejected": rows(self.rejected),
            "source": self.source,
            "row_id": self.row_id,
            "meta": json.dumps(self.meta, sort_keys=True, ensure_ascii=False),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Preference:
        """Inverse of `to_record`."""

        def messages(rows: list[dict[str, Any]]) -> list[Message]:
            return [Message(m["role"], m["content"], m.get("weight"), m.get("field")) for m in rows]

        meta = record.get("meta") or "{}"
        return cls(
            messages(record["prompt"]),
            messages(record["chosen"]),
            messages(record["rejected"]),
            source=record.get("source") or "",
            row_id=record["row_id"] if record.get("row_id") is not None else -1,
            meta=json.loads(meta) if isinstance(meta, str) else dict(meta),
        )


def pair_chat(prompt: list[dict[str, Any]], reply: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """prompt + reply as `ChatTokenizer.encode` takes them: assistant turns inside the prompt get weight 0
    (context, never trained), and unset fields are left out."""
    head = [{**m, "weight": 0.0} if m["role"] == "assistant" else dict(m) for m in prompt]
    return [{k: v for k, v in m.items() if v is not None} for m in head + list(reply)]


def to_preference(record: dict[str, Any], source: str, row_id: int) -> Preference:
    """One raw `preference` row → a `Preference`; a bad row raises `ConversationError(field, reason)`."""
    chosen, rejected, prompt = record.get("chosen"), record.get("rejected"), record.get("prompt")
    for side, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, (str, list)):
            got = (
                "missing"
                if value is None
                else f"expected a string or a list of messages, got {type(value).__name__}"
            )
            raise ConversationError(side, got)
    if isinstance(chosen, str) != isinstance(rejected, str):
        raise ConversationError("rejected", "chosen and rejected must both be strings or both message lists")
    if isinstance(chosen, list):
        sides = _conversational(record, prompt)
    elif prompt is None:
        sides = {side: _hh_turns(record[side], side) for side in SIDES}
    elif isinstance(prompt, str):
        sides = {
            side: [Message("user", prompt, field="prompt"), Message("assistant", record[side], field=side)]
            for side in SIDES
        }
    else:
        raise ConversationError(
            "prompt", f"expected a string with string replies, got {type(prompt).__name__}"
        )
    shared, replies = _split_pair(sides["chosen"], sides["rejected"])
    return Preference(shared, replies[0], replies[1], source=source, row_id=row_id)


def _conversational(record: dict[str, Any], prompt: Any) -> dict[str, list[Message]]:
    """Message-list sides: whole conversations, or replies after a `prompt` message list or string."""
    sides = {side: _from_messages(record, side) for side in SIDES}
    if isinstance(prompt, list):
        head = _from_messages(record, "prompt")
        return {side: _prefixed(head, turns) for side, turns in sides.items()}
    if isinstance(prompt, str) and all(m.role == "assistant" for s in sides.values() for m in s):
        return {side: [Message("user", prompt, field="prompt"), *turns] for side, turns in sides.items()}
    if prompt is not None and not isinstance(prompt, str):
        raise ConversationError(
            "prompt", f"expected a string or a list of messages, got {type(prompt).__name__}"
        )
    return sides  # whole conversations (a string `prompt` beside them only repeats their last user turn)


def _prefixed(head: list[Message], turns: list[Message]) -> list[Message]:
    """`turns` when it already starts with the prompt (whole conversations), else prompt + turns."""
    same = len(turns) > len(head) and all(
        (a.role, a.content) == (b.role, b.content) for a, b in zip(head, turns)
    )
    return turns if same else head + turns


def _hh_turns(text: str, side: str) -> list[Message]:
    """An Anthropic HH transcript (`\\n\\nHuman: …\\n\\nAssistant: …`) as messages."""
    parts = HH_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise ConversationError(
            side, "expected a transcript of 'Human:' and 'Assistant:' turns (or give a 'prompt' column)"
        )
    turns = zip(parts[1::2], parts[2::2])
    return [Message(HH_ROLES[who], said.strip(), field=f"{side}[{k}]") for k, (who, said) in enumerate(turns)]


def _split_pair(chosen: list[Message], rejected: list[Message]) -> tuple[list[Message], list[list[Message]]]:
    """Split both sides at their last assistant turn; the prompts before it must be the same."""
    prompts, replies = [], []
    for side, turns in zip(SIDES, (chosen, rejected)):
        last = max((i for i, m in enumerate(turns) if m.role == "assistant"), default=-1)
        if last < 0:
            raise ConversationError(side, "no assistant turn to use as the reply")
        prompts.append(turns[:last])
        replies.append(turns[last:])
    first, second = ([(m.role, m.content) for m in p] for p in prompts)
    if first != second:
        at = next((i for i, (a, b) in enumerate(zip(first, second)) if a != b), min(len(first), len(second)))
        raise ConversationError(
            "rejected",
            f"its prompt differs from chosen's (first difference at message {at}): a pair must answer the "
            "same prompt",
        )
    return prompts[0], replies
