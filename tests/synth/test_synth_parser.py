"""Parsing synthesizer output: pairs, incomplete tails, duplicates, malformed pieces counted, never a crash."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from instructkit.synth.markup import Pair, SynthFormat
from instructkit.synth.parser import REASONS, parse_pairs


def test_parses_pairs_and_drops_incomplete_trailing_pair():
    text = "<QUE> Q1? <ANS> A1 </END>\n\n<QUE> Q2? <ANS> A2 </END>\n\n<QUE> Q3? <ANS> half"
    result = parse_pairs(text)
    assert result.pairs == [Pair("Q1?", "A1"), Pair("Q2?", "A2")]
    assert dict(result.failures) == {"incomplete_trailing": 1}


def test_duplicates_are_dropped_case_insensitively_and_counted():
    text = "<QUE> Who? <ANS> A </END><QUE> WHO? <ANS> B </END>"
    result = parse_pairs(text)
    assert result.pairs == [Pair("Who?", "A")]
    assert result.failures["duplicate"] == 1


def test_each_malformed_piece_is_counted_by_reason():
    text = (
        "no markers </END>"
        "<QUE> a <ANS> b <ANS> c </END>"
        "q <ANS> a </END>"
        "<QUE>  <ANS> a </END>"
        "<QUE> q <ANS>   </END>"
        "<QUE> good <ANS> yes </END></s><QUE> after eos <ANS> x </END>"
    )
    result = parse_pairs(text)
    assert result.pairs == [Pair("good", "yes")]
    assert dict(result.failures) == {
        "no_answer_marker": 1,
        "several_answer_markers": 1,
        "no_question_marker": 1,
        "empty_instruction": 1,
        "empty_response": 1,
    }


def test_published_rendering_round_trips():
    pairs = [Pair("What is 2+2?", "4"), Pair("Name a colour.", "Blue, for example.")]
    assert parse_pairs(SynthFormat().pairs(pairs) + "</s>").pairs == pairs


MARKUP = st.sampled_from(["<QUE>", "<ANS>", "</END>", "</s>", " ", "\n\n", "x", "Q?", "<", "END>"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(st.one_of(MARKUP, st.text(max_size=5)), max_size=30).map("".join)))
def test_garbage_never_crashes_and_every_piece_is_accounted_for(text):
    result = parse_pairs(text)
    assert set(result.failures) <= set(REASONS)
    body = text.split("</s>")[0]
    assert result.segments == body.count("</END>") + (1 if body.split("</END>")[-1].strip() else 0)
    for pair in result.pairs:
        assert pair.instruction and pair.response
        assert "<ANS>" not in pair.instruction and "</END>" not in pair.response
    assert len({p.instruction.lower() for p in result.pairs}) == len(result.pairs)


SAFE = st.text(st.characters(blacklist_characters="<>"), min_size=1, max_size=20).filter(lambda s: s.strip())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(SAFE, SAFE), max_size=6, unique_by=lambda t: t[0].strip().lower()))
def test_rendered_pairs_parse_back(pairs):
    rendered = [Pair(q.strip(), a.strip()) for q, a in pairs]
    assert parse_pairs(SynthFormat().pairs(rendered)).pairs == rendered
