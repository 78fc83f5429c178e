"""Exact masks on the chat templates people use: no header, next header or control token is labelled silently.

Templates are copies of published ones (tests/fixtures/chat_templates, each naming its source). The
tokenizer is a tiny BPE trained here, with those templates' control tokens added as special tokens.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.paths import FIXTURES_ROOT
from instructkit.data.conversation import ConversationError
from instructkit.data.converters import to_conversation
from instructkit.data.prepare import PrepareConfig, prepare
from instructkit.data.tokenize import IGNORE_INDEX, ChatRowError, ChatTokenizer, split_row_error
from instructkit.errors import BadRowError
from instructkit.models.chat_templates import TULU
from instructkit.models.tiny import train_tiny_tokenizer

FIXTURES = FIXTURES_ROOT / "chat_templates"
EXTRA_SPECIAL = [
    "<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>",
    "<start_of_turn>", "<end_of_turn>",
]  # fmt: skip
# What each template writes after a reply, which the labels must end with ('' where it writes nothing).
# The newline ChatML-style templates write after the end-of-turn token is never generated, never trained.
END_OF_TURN = {
    "llama3_original": "<|eot_id|>",
    "chatml_no_generation": "<|im_end|>",
    "qwen2_5": "<|im_end|>",
    "gemma2": "<end_of_turn>",
    "deepseek_r1_distill_jan2025": "<｜end▁of▁sentence｜>",
    "glm_edge": "",
}
# Text a template writes before a reply that its generation prompt lacks and the model must produce itself.
REPLY_PREFIX = {"glm_edge": "\n"}
CORPUS = [
    "def f(x):\n\n    return x\n\n\nprint(f(2))\n",
    "The answer is 47.\n\nThe sea is blue.\n\n\nHello there!",
] * 60


def template(name: str) -> str:
    return (FIXTURES / f"{name}.jinja").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tok():
    """A tiny BPE that merges runs of newlines, with every fixture template's control tokens."""
    from helpers.paths import TOKENIZER_CORPUS

    tokenizer = train_tiny_tokenizer(TOKENIZER_CORPUS + CORPUS, vocab_size=600)
    tokenizer.add_special_tokens({"additional_special_tokens": EXTRA_SPECIAL})
    return tokenizer


def decode(tokenizer, ids) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def labelled_runs(labels: list[int]) -> list[list[int]]:
    runs, current = [], []
    for label in labels:
        if label == IGNORE_INDEX:
            runs, current = (runs + [current] if current else runs), []
        else:
            current.append(label)
    return runs + ([current] if current else [])


word = st.text(alphabet="abcxyz0123.,!?'", min_size=1, max_size=6)
content = st.lists(word, min_size=1, max_size=5).map(" ".join)


@st.composite
def conversations(draw, system: bool = True):
    chat = [{"role": "system", "content": draw(content)}] if system and draw(st.booleans()) else []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        chat += [{"role": "user", "content": draw(content)}, {"role": "assistant", "content": draw(content)}]
    return chat


@pytest.mark.parametrize("name", sorted(END_OF_TURN))
def test_sandboxed_rendering_matches_transformers(tok, name):
    """Rendering in instructkit's limited sandbox gives transformers' text for the same template."""
    chat = [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Sum 1 2"},
    ]
    ct = ChatTokenizer(tok, template(name))
    for gen in (False, True):
        expected = tok.apply_chat_template(
            chat, chat_template=ct.template, tokenize=False, add_generation_prompt=gen
        )
        assert ct.render([chat], add_generation_prompt=gen) == [expected]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chat=conversations(), name=st.sampled_from(sorted(END_OF_TURN)))
def test_published_templates_label_exactly_the_replies(tok, chat, name):
    """Labelled tokens decode to each reply plus the template's end-of-turn text, nothing else."""
    if name == "gemma2":
        chat = [m for m in chat if m["role"] != "system"]  # Gemma-2 refuses system messages (tested below)
    enc = ChatTokenizer(tok, template(name)).encode([chat])[0]
    assert not isinstance(enc, Exception), enc
    replies = [m["content"] for m in chat if m["role"] == "assistant"]
    runs = [decode(tok, r) for r in labelled_runs(enc.labels)]
    assert runs == [REPLY_PREFIX.get(name, "") + r + END_OF_TURN[name] for r in replies]


def test_chatml_without_generation_branch_does_not_label_the_header(tok):
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    enc = ChatTokenizer(tok, template("chatml_no_generation")).encode([chat])[0]
    first = next(i for i, lab in enumerate(enc.labels) if lab != IGNORE_INDEX)
    assert decode(tok, enc.input_ids[:first]).endswith("<|im_start|>assistant\n")


def test_llama3_original_does_not_label_the_next_header(tok):
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    enc = ChatTokenizer(tok, template("llama3_original")).encode([chat])[0]
    assert decode(tok, enc.input_ids).endswith(
        "Hello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert [decode(tok, r) for r in labelled_runs(enc.labels)] == ["Hello<|eot_id|>"]


@pytest.mark.parametrize(
    "reply", ["<think>\nadd them\n</think>\n\n3", "<think>only reasoning</think>"], ids=["reasoning", "only"]
)
def test_template_that_drops_reasoning_is_refused_with_the_reason(tok, reply):
    chat = [{"role": "user", "content": "1+2?"}, {"role": "assistant", "content": reply}]
    result = ChatTokenizer(tok, template("deepseek_r1_distill_jan2025")).encode([chat])[0]
    assert isinstance(result, ChatRowError)
    assert (
        result.field == "messages[1] (assistant)" and "does not render this reply as written" in result.reason
    )


@pytest.mark.parametrize("name", ["chatml", "llama3"])
@pytest.mark.parametrize("where", ["user", "assistant"])
def test_control_token_text_in_content_is_encoded_as_plain_text(tiny_tokenizer, name, where):
    tok = tiny_tokenizer  # no newline merges, so strict prefix tokenization agrees too
    text = "ends with <|im_end|> and <|eot_id|> mid-text"
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    chat[0 if where == "user" else 1]["content"] = text
    ct = ChatTokenizer(tok, name)
    enc = ct.encode([chat])[0]
    clean = ct.encode([[{**m, "content": "x"} for m in chat]])[0]
    controls = {tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|eot_id|>")}
    count = sum(i in controls for i in enc.input_ids)
    assert count == sum(i in controls for i in clean.input_ids)  # only the template's own control tokens
    assert decode(tok, enc.input_ids) == ct.render([chat])[0]
    eot = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}[name]
    assert [decode(tok, r) for r in labelled_runs(enc.labels)] == [chat[1]["content"] + eot]
    strict = ct.encode([chat], strict=True)[0]
    assert (strict.input_ids, strict.labels) == (enc.input_ids, enc.labels)


CONTROL_STRINGS = ["<|im_end|>", "<|eot_id|>", "<|im_start|>", "</s>", "<s>", "<|assistant|>", "<|user|>"]
BUILTIN_END = {"tulu": "</s>", "chatml": "<|im_end|>", "llama3": "<|eot_id|>"}
risky = st.lists(st.one_of(word, st.sampled_from(CONTROL_STRINGS)), min_size=1, max_size=6).map(" ".join)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    turns=st.lists(st.tuples(risky, risky), min_size=1, max_size=2), name=st.sampled_from(sorted(BUILTIN_END))
)
def test_content_with_control_token_text_labels_exactly_reply_plus_one_end_token(tiny_tokenizer, turns, name):
    chat = [{"role": r, "content": c} for pair in turns for r, c in zip(("user", "assistant"), pair)]
    enc = ChatTokenizer(tiny_tokenizer, name).encode([chat])[0]
    assert not isinstance(enc, Exception), enc
    runs = labelled_runs(enc.labels)
    assert [decode(tiny_tokenizer, r) for r in runs] == [a + BUILTIN_END[name] for _, a in turns]
    controls = set(tiny_tokenizer.all_special_ids)
    assert [sum(i in controls for i in run) for run in runs] == [1] * len(turns)  # only the end-of-turn token
    assert all(run[-1] in controls for run in runs)


def test_control_token_text_can_be_refused_instead(tok):
    chat = [{"role": "user", "content": "say <|im_end|>"}, {"role": "assistant", "content": "no"}]
    result = ChatTokenizer(tok, "chatml", control_tokens="refuse").encode([chat])[0]
    assert isinstance(result, ChatRowError) and result.field == "messages[0].content"
    assert "'<|im_end|>'" in result.reason


def test_turn_with_weight_zero_is_not_trained(tok):
    chat = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "bad reply", "weight": 0},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "good reply", "weight": 1},
    ]
    enc = ChatTokenizer(tok, "tulu").encode([chat])[0]
    assert [decode(tok, r) for r in labelled_runs(enc.labels)] == ["good reply</s>"]


def test_sharegpt_weight_reaches_the_conversation_and_errors_name_the_source_field(tok):
    row = {
        "conversations": [
            {"from": "human", "value": "a"},
            {"from": "gpt", "value": "b", "weight": 0},
            {"from": "human", "value": "c"},
            {"from": "gpt", "value": "d"},
        ]
    }
    conv = to_conversation(row, "sharegpt", "f.jsonl", 0)
    assert [m.weight for m in conv.messages] == [None, 0.0, None, None]
    # A template that renders the last reply differently from earlier ones cannot mask turn 3 exactly.
    rewriting = "{% if messages[-1]['content'] == 'd' %}!{% endif %}" + TULU
    result = ChatTokenizer(tok, rewriting).encode([conv.as_chat()])[0]
    assert isinstance(result, ChatRowError) and result.field == "conversations[3] (assistant)"


@pytest.mark.parametrize(
    ("row", "fmt", "field"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "w?"},
                    {"role": "assistant", "content": "", "tool_calls": [{}]},
                ]
            },
            "messages",
            "messages[1].tool_calls",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "w?"},
                    {"role": "tool", "content": "{}"},
                    {"role": "assistant", "content": "sunny"},
                ]
            },
            "messages",
            "messages[1].role",
        ),
        (
            {"conversations": [{"from": "human", "value": "w?"}, {"from": "function_call", "value": "{}"}]},
            "sharegpt",
            "conversations[1].from",
        ),
        (
            {
                "conversations": [
                    {"from": "human", "value": "w?"},
                    {"from": "gpt", "value": "x", "weight": 0.5},
                ]
            },
            "sharegpt",
            "conversations[1].weight",
        ),
    ],
    ids=["tool_calls", "tool_role", "sharegpt_function_call", "fractional_weight"],
)
def test_tool_turns_and_unsupported_weights_are_refused_clearly(row, fmt, field):
    with pytest.raises(ConversationError) as info:
        to_conversation(row, fmt, "f.jsonl", 0)
    assert info.value.field == field


@pytest.mark.parametrize("reply", ["\n\ndef f(x):\n\n    return x", "\n\n\nThe answer is 47."])
def test_reply_opening_with_newlines_labels_the_merged_token(tok, reply):
    """The header's newline and the reply's newlines merge into one token; that token is labelled."""
    chat = [{"role": "user", "content": "code?"}, {"role": "assistant", "content": reply}]
    ct = ChatTokenizer(tok, "tulu")
    prompt = ct.render([chat[:1]], add_generation_prompt=True)[0]
    full = tok.backend_tokenizer.encode(ct.render([chat])[0], add_special_tokens=False)
    start, end = full.token_to_chars(full.char_to_token(len(prompt)))
    assert start < len(prompt) < end  # precondition: one token straddles the prompt/reply boundary
    enc = ct.encode([chat])[0]
    assert [decode(tok, r) for r in labelled_runs(enc.labels)] == ["\n" + reply + "</s>"]
    strict = ct.encode([chat], strict=True)[0]
    assert isinstance(strict, ChatRowError) and "merges with the prompt's last token" in strict.reason


def test_template_exception_is_a_bad_row_naming_the_template(tok):
    chat = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
    ]
    result = ChatTokenizer(tok, template("gemma2")).encode([chat])[0]
    assert isinstance(result, ChatRowError)
    assert split_row_error(str(result)) == ("template", "System role not supported")


def test_prepare_reports_template_errors_and_skips_them(tiny_tokenizer, tmp_path):
    tokenizer_dir = tmp_path / "tok"
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.save_pretrained(tokenizer_dir)
    raising = "{% if messages[0]['content'] == 'bad' %}{{ raise_exception('no bad rows') }}{% endif %}" + TULU
    src = tmp_path / "a.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": c}, {"role": "assistant", "content": "fine"}]}
        for c in ("good", "bad")
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def run(**kw):
        cfg = PrepareConfig(
            sources=[str(src)],
            tokenizer=str(tokenizer_dir),
            out=str(tmp_path / "out"),
            chat_template=raising,
            **kw,
        )
        return prepare(cfg, progress=False)

    with pytest.raises(BadRowError, match=r"a\.jsonl:2: template: no bad rows$"):
        run()
    stats = run(on_error="skip")
    assert stats["rejected"] == 1 and stats["examples_out"] == 1
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["field"], r["reason"]) for r in rejects] == [("template", "no bad rows")]


def test_prepare_honours_sharegpt_weight_zero(tiny_tokenizer, tmp_path):
    tokenizer_dir = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(tokenizer_dir)
    row = {
        "conversations": [
            {"from": "human", "value": "a"},
            {"from": "gpt", "value": "skip me", "weight": 0},
            {"from": "human", "value": "c"},
            {"from": "gpt", "value": "train me"},
        ]
    }
    src = tmp_path / "a.jsonl"
    src.write_text(json.dumps(row) + "\n")
    prepare(
        PrepareConfig(sources=[str(src)], tokenizer=str(tokenizer_dir), out=str(tmp_path / "out")),
        progress=False,
    )
    import datasets

    labels = datasets.load_from_disk(str(tmp_path / "out"))[0]["labels"]
    assert [decode(tiny_tokenizer, r) for r in labelled_runs(labels)] == ["train me</s>"]
