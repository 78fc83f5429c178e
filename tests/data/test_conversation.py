"""The conversation type and every format converter, including each bad-input case."""

from __future__ import annotations

import pytest

from instructkit.data.conversation import Conversation, ConversationError, Message
from instructkit.data.converters import detect_input_format, to_conversation
from instructkit.errors import InstructkitError


def roles(conv: Conversation) -> list[str]:
    return [m.role for m in conv.messages]


def test_record_round_trip_keeps_messages_and_metadata():
    conv = Conversation.from_pairs(
        ("system", "s"), ("user", "u"), ("assistant", "a"), task="t", cluster="c", meta={"k": 1}
    )
    back = Conversation.from_record(conv.to_record())
    assert back == conv


@pytest.mark.parametrize(
    ("messages", "field", "reason"),
    [
        ([], "messages", "empty"),
        ([Message("user", "hi")], "messages[0].role", "end with an assistant"),
        ([Message("assistant", "hi")], "messages[0].role", "wrong order"),
        ([Message("user", "a"), Message("user", "b")], "messages[1].role", "wrong order"),
        ([Message("user", "a"), Message("assistant", "  ")], "messages[1].content", "empty assistant"),
        ([Message("user", "a"), Message("bot", "b")], "messages[1].role", "unknown role"),
        (
            [Message("user", "a"), Message("system", "b"), Message("assistant", "c")],
            "messages[1].role",
            "wrong order",
        ),
        ([Message("system", "s")], "messages", "only a system"),
    ],
)
def test_bad_shapes_name_the_field(messages, field, reason):
    with pytest.raises(ConversationError) as info:
        Conversation(messages)
    assert info.value.field == field
    assert reason in info.value.reason


CASES = {
    "messages": {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
    "sharegpt": {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
    "alpaca": {"instruction": "Q", "input": "", "output": "A"},
    "dolly": {"instruction": "Q", "context": "", "response": "A", "category": "open_qa"},
    "prompt_completion": {"prompt": "Q", "completion": "A<|endoftext|>"},
    "flan": {"inputs": "Q", "targets": "A"},
}


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_each_converter_detects_and_converts(fmt):
    record = CASES[fmt]
    assert detect_input_format(record.keys()) == fmt
    conv = to_conversation(record, fmt, "f.jsonl", 3)
    assert [(m.role, m.content) for m in conv.messages] == [("user", "Q"), ("assistant", "A")]
    assert (conv.source, conv.row_id) == ("f.jsonl", 3)


def test_alpaca_and_dolly_append_input_and_context():
    conv = to_conversation({"instruction": "Sum", "input": "2 3", "output": "5"}, "alpaca", "f", 1)
    assert conv.messages[0].content == "Sum\n\n2 3"
    conv = to_conversation({"instruction": "Who?", "context": "Bo ran.", "response": "Bo"}, "dolly", "f", 1)
    assert conv.messages[0].content == "Who?\n\nBo ran."


def test_sharegpt_multi_turn_with_system():
    record = {
        "conversations": [
            {"from": "system", "value": "S"},
            {"from": "human", "value": "1"},
            {"from": "gpt", "value": "2"},
            {"from": "human", "value": "3"},
            {"from": "gpt", "value": "4"},
        ]
    }
    assert roles(to_conversation(record, "sharegpt", "f", 1)) == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]


def test_conversational_prompt_completion():
    record = {
        "prompt": [{"role": "user", "content": "Q"}],
        "completion": [{"role": "assistant", "content": "A"}],
    }
    assert roles(to_conversation(record, "prompt_completion", "f", 1)) == ["user", "assistant"]


def test_unknown_columns_list_found_and_accepted():
    with pytest.raises(InstructkitError) as info:
        detect_input_format(["query", "reply"])
    text = str(info.value)
    assert "['query', 'reply']" in text and "alpaca: instruction, output" in text


def test_ambiguous_columns_say_which_formats_fit():
    with pytest.raises(InstructkitError, match="ambiguous.*alpaca.*dolly"):
        detect_input_format(["instruction", "output", "response"])


@pytest.mark.parametrize(
    ("record", "fmt", "field"),
    [
        ({"instruction": "Q", "output": 5}, "alpaca", "output"),
        ({"instruction": None, "output": "A"}, "alpaca", "instruction"),
        ({"inputs": "Q"}, "flan", "targets"),
        ({"messages": "hello"}, "messages", "messages"),
        ({"messages": [{"role": "user"}]}, "messages", "messages[0].content"),
        ({"conversations": [{"from": "alien", "value": "x"}]}, "sharegpt", "conversations[0].from"),
        ({"prompt": "Q", "completion": ""}, "prompt_completion", "messages[1].content"),
    ],
)
def test_mistyped_or_missing_fields_are_named(record, fmt, field):
    with pytest.raises(ConversationError) as info:
        to_conversation(record, fmt, "f", 1)
    assert info.value.field == field
