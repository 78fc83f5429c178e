"""Templates render in a sandbox: missing fields and escapes fail with errors naming task, template and field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instructkit.data.templates import (
    Template,
    TemplateError,
    check_syntax,
    evaluate_expression,
    referenced_fields,
    render_text,
)


def test_renders_input_and_target():
    t = Template(id="t1", input="What is {{ a }} plus {{ b }}?", target="{{ a + b }}")
    row = {"a": 2, "b": 3}
    prompt = render_text(t.input, row, task="add", template=t.id, part="input")
    target = render_text(t.target, row, task="add", template=t.id, part="target")
    assert (prompt, target) == ("What is 2 plus 3?", "5")


def test_missing_field_names_task_template_and_field():
    t = Template(id="t1", input="Hello {{ name }}", target="{{ answer }}")
    with pytest.raises(TemplateError) as info:
        render_text(t.input, {"answer": "x"}, task="greet", template=t.id, part="input")
    assert (info.value.task, info.value.template, info.value.field) == ("greet", "t1", "name")
    assert "greet" in str(info.value) and "t1" in str(info.value)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ x.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ x.__dict__ }}",
        "{{ items.append(1) }}",
        "{{ lipsum.__globals__['os'] }}",
    ],
)
def test_sandbox_refuses_escapes(source):
    with pytest.raises(TemplateError) as info:
        render_text(source, {"x": "text", "items": [1, 2]}, task="evil", template="t", part="input")
    assert info.value.task == "evil"


def test_field_expressions_return_native_values_and_refuse_escapes():
    row = {"answer": "steps\n#### 42", "options": ["A)1", "B)2"]}
    assert evaluate_expression("answer.split('####')[-1] | trim", row, task="t", field="answer") == "42"
    assert evaluate_expression("options | length", row, task="t", field="n") == 2
    with pytest.raises(TemplateError):
        evaluate_expression("answer.__class__.__base__", row, task="t", field="answer")
    with pytest.raises(TemplateError) as info:
        evaluate_expression("missing_field", row, task="t", field="rationale")
    assert info.value.field == "rationale"


def test_syntax_errors_found_at_load_time():
    with pytest.raises(TemplateError) as info:
        check_syntax("task", Template(id="broken", input="{{ a ", target="x"))
    assert info.value.template == "broken" and info.value.field == "input"


def test_referenced_fields():
    assert referenced_fields("{{ a }} and {% if b %}{{ c | upper }}{% endif %}") == {"a", "b", "c"}


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=50))
def test_values_render_verbatim(value):
    out = render_text("[{{ x }}]", {"x": value}, task="t", template="t", part="input")
    assert out == f"[{value}]".strip()
