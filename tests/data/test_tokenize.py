"""Exact assistant-only masks: labelled tokens decode to the replies plus end-of-turn, for any template."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instructkit.data.tokenize import IGNORE_INDEX, ChatTokenizer
from instructkit.errors import InstructkitError, TemplateMaskError

END_OF_TURN = {"tulu": "</s>", "chatml": "<|im_end|>", "llama3": "<|eot_id|>", "plain": "</s>"}

# A tokenizer's own template (Mistral-instruct style, no generation markers), set on the tokenizer itself.
OWN_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ '[SYS]' + m['content'] + '[/SYS]' }}"
    "{% elif m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
)

word = st.text(alphabet="abcdefxyz0123456789.,!?'", min_size=1, max_size=8)
content = st.lists(word, min_size=1, max_size=6).map(" ".join)


@st.composite
def conversations(draw):
    turns = draw(st.integers(min_value=1, max_value=3))
    chat = [{"role": "system", "content": draw(content)}] if draw(st.booleans()) else []
    for _ in range(turns):
        chat += [{"role": "user", "content": draw(content)}, {"role": "assistant", "content": draw(content)}]
    return chat


def labelled_runs(labels: list[int]) -> list[list[int]]:
    runs, current = [], []
    for label in labels:
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(label)
    return runs + ([current] if current else [])


def decode(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


@pytest.fixture(scope="module")
def own_template_tokenizer(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = OWN_TEMPLATE
    return tok


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chat=conversations(), template=st.sampled_from(sorted(END_OF_TURN)))
def test_builtin_templates_label_exactly_the_replies(tiny_tokenizer, chat, template):
    ct = ChatTokenizer(tiny_tokenizer, template)
    enc = ct.encode([chat])[0]
    assert not isinstance(enc, Exception), enc
    replies = [m["content"] for m in chat if m["role"] == "assistant"]
    runs = labelled_runs(enc.labels)
    assert [decode(tiny_tokenizer, r) for r in runs] == [r + END_OF_TURN[template] for r in replies]
    assert all(lab in (IGNORE_INDEX, tok) for lab, tok in zip(enc.labels, enc.input_ids))
    assert enc.input_ids == ct.tokenize(ct.render([chat]))[0]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chat=conversations())
def test_tokenizer_own_template_labels_exactly_the_replies(own_template_tokenizer, chat):
    ct = ChatTokenizer(own_template_tokenizer, None)
    enc = ct.encode([chat])[0]
    replies = [m["content"] for m in chat if m["role"] == "assistant"]
    runs = [decode(own_template_tokenizer, r) for r in labelled_runs(enc.labels)]
    assert runs == [" " + r + "</s>" for r in replies]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chat=conversations())
def test_last_assistant_and_all_modes(tiny_tokenizer, chat):
    ct = ChatTokenizer(tiny_tokenizer, "tulu")
    last = ct.encode([chat], "last_assistant")[0]
    assert [decode(tiny_tokenizer, r) for r in labelled_runs(last.labels)] == [chat[-1]["content"] + "</s>"]
    every = ct.encode([chat], "all")[0]
    assert every.labels == every.input_ids


def test_user_turns_are_never_labelled(tiny_tokenizer):
    chat = [
        {"role": "user", "content": "same words"},
        {"role": "assistant", "content": "same words"},
        {"role": "user", "content": "same words"},
        {"role": "assistant", "content": "other"},
    ]
    enc = ChatTokenizer(tiny_tokenizer, "tulu").encode([chat])[0]
    labelled = [i for i, lab in enumerate(enc.labels) if lab != IGNORE_INDEX]
    text_before_first = decode(tiny_tokenizer, enc.input_ids[: labelled[0]])
    assert text_before_first == "<|user|>\nsame words\n<|assistant|>\n"
    assert len(labelled_runs(enc.labels)) == 2


def test_template_that_rewrites_history_is_refused_naming_the_turn(tiny_tokenizer):
    # Earlier assistant turns are rendered differently once a later turn exists (as reasoning-stripping templates do).
    rewriting = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}"
        "{% if loop.last %}{{ '<|assistant|>\\n' + m['content'] + eos_token }}{% else %}{{ '<|assistant|>\\n...' + eos_token }}{% endif %}"
        "{% else %}{{ '<|user|>\\n' + m['content'] + '\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    )
    chat = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    result = ChatTokenizer(tiny_tokenizer, rewriting).encode([chat])[0]
    assert isinstance(result, TemplateMaskError)
    assert "messages[1]" in str(result)


def test_missing_template_is_a_clear_error(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(InstructkitError, match="no chat template.*tulu"):
        ChatTokenizer(tok, None)


messy = st.text(alphabet=" \n\tab1.é<>|/", min_size=1, max_size=12).filter(lambda s: s.strip())


@st.composite
def messy_conversations(draw):
    chat = []
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        chat += [{"role": "user", "content": draw(messy)}, {"role": "assistant", "content": draw(messy)}]
    return chat


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chat=messy_conversations(), template=st.sampled_from(sorted(END_OF_TURN)))
def test_offset_boundaries_agree_with_tokenizing_every_prefix(tiny_tokenizer, chat, template):
    """The one-tokenization path gives exactly the labels of tokenizing each prefix, where that succeeds."""
    ct = ChatTokenizer(tiny_tokenizer, template)
    fast, strict = ct.encode([chat])[0], ct.encode([chat], strict=True)[0]
    if isinstance(fast, TemplateMaskError):  # the default never refuses what strict mode accepts
        assert isinstance(strict, TemplateMaskError)
    if not isinstance(strict, TemplateMaskError):  # strict also refuses tokens straddling a reply's ends
        assert not isinstance(fast, Exception), fast
        assert (fast.input_ids, fast.labels) == (strict.input_ids, strict.labels)
