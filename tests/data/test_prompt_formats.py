"""Zero-shot / few-shot / CoT formats: seeded choices, delimiters, options, and exemplars never the evaluated row."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from instructkit.data.procedural.rng import stable_rng
from instructkit.data.prompt_formats import (
    ANSWER_PREFIX,
    COT_TRIGGER,
    DELIMITERS,
    FormatChoice,
    FormatMix,
    choose_format,
    pick_exemplars,
    render_example,
)
from instructkit.data.tasks import Task

TASK = Task.model_validate(
    {
        "name": "toy",
        "cluster": "c",
        "source": {"procedural": "list_max", "size": 10},
        "options": ["yes", "no"],
        "rationale_field": "why",
        "templates": [
            {"id": "plain", "input": "Is {{ x }} even?", "target": "{{ answer }}"},
            {"id": "placed", "input": "{{ options_ }}\nIs {{ x }} even?", "target": "{{ answer }}"},
            {"id": "inv", "input": "Write an {{ answer }} number.", "target": "{{ x }}", "inverted": True},
        ],
    }
)
ROW = {"x": 4, "answer": "yes", "why": "4 = 2 * 2."}
EXEMPLARS = [{"x": 3, "answer": "no", "why": "3 is odd."}, {"x": 8, "answer": "yes", "why": "8 = 2 * 4."}]


def test_choice_is_a_pure_function_of_the_seed():
    mix = FormatMix(zero_shot=1, few_shot=1, cot=1)
    draws = [choose_format(mix, stable_rng(0, "toy", i), can_cot=True, inverted=False) for i in range(50)]
    again = [choose_format(mix, stable_rng(0, "toy", i), can_cot=True, inverted=False) for i in range(50)]
    assert draws == again
    assert {d.format for d in draws} == {"zero_shot", "few_shot", "cot", "few_shot_cot"}
    assert {d.delimiter for d in draws} <= set(DELIMITERS) and len({d.delimiter for d in draws}) > 2


def test_cot_is_never_chosen_without_a_rationale_or_for_inverted_templates():
    mix = FormatMix(zero_shot=0, few_shot=0, cot=1)
    for i in range(30):
        assert choose_format(mix, stable_rng(i), can_cot=False, inverted=False).format == "zero_shot"
        assert choose_format(mix, stable_rng(i), can_cot=True, inverted=True).format == "zero_shot"


def test_zero_shot_with_and_without_options():
    with_opts = render_example(TASK, TASK.template("plain"), ROW, FormatChoice("zero_shot", True), [])
    without = render_example(TASK, TASK.template("plain"), ROW, FormatChoice("zero_shot", False), [])
    assert with_opts.prompt == "Is 4 even?\n\nOPTIONS:\n- yes\n- no" and with_opts.meta["with_options"]
    assert without.prompt == "Is 4 even?" and without.target == "yes"
    placed = render_example(TASK, TASK.template("placed"), ROW, FormatChoice("zero_shot", True), [])
    assert placed.prompt.startswith("OPTIONS:") and placed.prompt.count("OPTIONS") == 1


def test_inverted_templates_never_show_options():
    r = render_example(TASK, TASK.template("inv"), ROW, FormatChoice("zero_shot", True), [])
    assert "OPTIONS" not in r.prompt and r.target == "4" and r.meta["inverted"]


def test_few_shot_uses_the_delimiter_and_ends_with_the_answer_prefix():
    r = render_example(
        TASK, TASK.template("plain"), ROW, FormatChoice("few_shot", False, 2, "question_answer"), EXEMPLARS
    )
    assert (
        r.prompt
        == "Question: Is 3 even?\nAnswer: no\n\nQuestion: Is 8 even?\nAnswer: yes\n\nQuestion: Is 4 even?\nAnswer:"
    )
    assert r.format == "few_shot" and r.meta["k"] == 2 and r.target == "yes"


def test_cot_target_and_trigger():
    r = render_example(
        TASK, TASK.template("plain"), ROW, FormatChoice("cot", False, 0, "q_a", COT_TRIGGER), []
    )
    assert r.prompt.endswith(COT_TRIGGER) and r.target == f"4 = 2 * 2. {ANSWER_PREFIX} yes."
    fs = render_example(
        TASK,
        TASK.template("plain"),
        ROW,
        FormatChoice("few_shot_cot", False, 1, "q_a", COT_TRIGGER),
        EXEMPLARS[:1],
    )
    assert f"A: 3 is odd. {ANSWER_PREFIX} no." in fs.prompt and fs.format == "few_shot_cot"


def test_few_shot_without_exemplars_falls_back_to_zero_shot():
    r = render_example(TASK, TASK.template("plain"), ROW, FormatChoice("few_shot", False, 3), [])
    assert r.format == "zero_shot" and r.prompt == "Is 4 even?"


@given(st.integers(0, 30), st.integers(0, 8), st.integers(-1, 30), st.integers(0, 10_000))
def test_exemplars_never_include_the_evaluated_row(n, k, exclude, seed):
    pool = [{"i": i} for i in range(n)]
    skip = exclude if 0 <= exclude < n else None
    chosen = pick_exemplars(stable_rng(seed), pool, k, skip)
    indices = [c["i"] for c in chosen]
    assert skip not in indices
    assert len(indices) == len(set(indices)) == min(k, n - (skip is not None))
