"""Multi-round prompts: chains, earlier rounds prefixed newest-first within a token budget, truncation."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from instructkit.synth.markup import Pair, SynthFormat, encode, encode_example
from instructkit.synth.rounds import Entry, build_prompt, plan_chains


def test_chains_are_consecutive_and_break_at_group_changes():
    assert plan_chains(5, 2) == [[0, 1], [2, 3], [4]]
    assert plan_chains(5, 3, ["a", "a", "b", "b", "b"]) == [[0, 1], [2, 3, 4]]


def _history(n: int) -> list[Entry]:
    return [
        Entry(f"Text number {i} about topic {i}.", (Pair(f"What is topic {i}?", f"Topic {i}"),))
        for i in range(n)
    ]


def test_prompt_is_earlier_examples_then_reading_block(tiny_tokenizer):
    fmt = SynthFormat.for_tokenizer(tiny_tokenizer)
    history = _history(2)
    prompt = build_prompt(tiny_tokenizer, fmt, history, "Now this text.", budget=10_000)
    expected = [t for e in history for t in encode_example(tiny_tokenizer, fmt, e.context, e.pairs)[0]]
    assert prompt.ids == expected + encode(tiny_tokenizer, fmt.read("Now this text."))
    assert prompt.prefix_rounds == 2 and not prompt.truncated
    assert tiny_tokenizer.decode(prompt.ids) == (
        fmt.example(history[0].context, history[0].pairs)
        + fmt.example(history[1].context, history[1].pairs)
        + fmt.read("Now this text.")
    )


def test_newest_rounds_are_kept_when_not_all_fit(tiny_tokenizer):
    fmt = SynthFormat.for_tokenizer(tiny_tokenizer)
    history = _history(3)
    current = len(encode(tiny_tokenizer, fmt.read("Now.")))
    newest = len(encode_example(tiny_tokenizer, fmt, history[2].context, history[2].pairs)[0])
    prompt = build_prompt(tiny_tokenizer, fmt, history, "Now.", budget=current + newest + 1)
    assert prompt.prefix_rounds == 1
    assert tiny_tokenizer.decode(prompt.ids).startswith(fmt.example(history[2].context, history[2].pairs))


def test_a_round_without_pairs_breaks_the_chain(tiny_tokenizer):
    fmt = SynthFormat.for_tokenizer(tiny_tokenizer)
    history = [*_history(1), Entry("No pairs here.", ())]
    assert build_prompt(tiny_tokenizer, fmt, history, "Now.", budget=10_000).prefix_rounds == 0


def test_overlong_text_is_truncated_to_the_budget(tiny_tokenizer):
    fmt = SynthFormat.for_tokenizer(tiny_tokenizer)
    prompt = build_prompt(tiny_tokenizer, fmt, [], "word " * 500, budget=40)
    assert prompt.truncated and len(prompt.ids) <= 40
    assert tiny_tokenizer.decode(prompt.ids).endswith(" </CON>\n\n")


@settings(max_examples=60, deadline=None)
@given(budget=st.integers(30, 400), n_history=st.integers(0, 5), words=st.integers(1, 120))
def test_round_prompts_stay_within_budget(tiny_tokenizer, budget, n_history, words):
    fmt = SynthFormat.for_tokenizer(tiny_tokenizer)
    prompt = build_prompt(tiny_tokenizer, fmt, _history(n_history), " ".join(["alpha"] * words), budget)
    assert len(prompt.ids) <= budget
    assert 0 <= prompt.prefix_rounds <= n_history
