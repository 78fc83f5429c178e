"""User Jinja (task templates, chat templates) cannot hang or exhaust memory: limits on time, size, range."""

from __future__ import annotations

import pytest

from instructkit.data.templates import TemplateError, render_text, sandbox
from instructkit.data.tokenize import ChatRowError, ChatTokenizer
from instructkit.sandbox import Limits, RenderLimitError, render

SHORT = Limits(seconds=0.3)  # keeps the time-limit tests short; the default is 10 s

# Each of these ran unbounded before (minutes of CPU or gigabytes of memory).
SIZE_ATTACKS = {
    "string_repeat": "{{ 'a' * 10**9 }}",
    "list_repeat": "{{ ([1] * 10**9)|length }}",
    "lipsum": "{{ lipsum(10**6) }}",
    "big_range": "{{ range(10**9)|length }}",
    "doubling_with_tilde": "{% set ns = namespace(x='a') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
    "doubling_with_plus": "{% set ns = namespace(x='a') %}{% for i in range(60) %}{% set ns.x = ns.x + ns.x %}{% endfor %}",
    "center_filter": "{{ 'a'|center(10**9) }}",
    "ljust_method": "{{ 'a'.ljust(10**9) }}",
    "percent_width": "{{ '%1000000000s' % 'a' }}",
    "format_width": "{{ '{:>1000000000}'.format('a') }}",
    "join_separator": "{{ range(100000)|join('x' * 100000) }}",
    "replace_growth": "{{ ('a' * 100000).replace('a', 'b' * 1000) }}",
    "huge_power": "{{ 7 ** (10**8) }}",
}
TIME_ATTACKS = {
    "nested_range": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "nested_string_loops": "{% set s = 'ab' * 400000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "recursive_macro": "{% macro f(n) %}{% for i in range(100) %}{{ f(n + 1) if n < 50 else '' }}{% endfor %}{% endmacro %}{{ f(0) }}",
}


@pytest.mark.parametrize("source", SIZE_ATTACKS.values(), ids=SIZE_ATTACKS.keys())
def test_task_template_size_attacks_are_refused(source):
    with pytest.raises(TemplateError, match="over a render limit"):
        render_text(source, {}, task="t", template="evil", part="input")


@pytest.mark.parametrize("source", TIME_ATTACKS.values(), ids=TIME_ATTACKS.keys())
def test_templates_that_loop_too_long_stop_at_the_time_limit(source):
    with pytest.raises(RenderLimitError, match="longer than 0.3 s"):
        render(sandbox().from_string(source), {}, SHORT)


def test_output_size_is_bounded_even_when_every_step_is_small():
    source = "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}"  # 10M characters in small pieces
    with pytest.raises(RenderLimitError, match="rendered output"):
        render(sandbox().from_string(source), {}, Limits(max_chars=1_000_000))


def test_ordinary_templates_still_render():
    source = (
        "{{ q ~ '?' }} {% for o in opts %}{{ loop.index }}/{{ loop.length }}:{{ o|upper }} {% endfor %}"
        "{{ opts|join(', ') }} {{ '%3d'|format(7) }} {{ 'ab' * 2 }} {{ '{:>4}'.format('z') }} {{ 2 ** 10 }}"
    )
    out = render_text(source, {"q": "why", "opts": ["a", "b"]}, task="t", template="ok", part="input")
    assert out == "why? 1/2:A 2/2:B a, b   7 abab    z 1024"


def test_chat_template_over_a_limit_is_a_bad_row_naming_the_template(tiny_tokenizer):
    hanging = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ messages[0]['content'] }}"
    result = ChatTokenizer(tiny_tokenizer, hanging, limits=SHORT).encode(
        [[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]]
    )[0]
    assert isinstance(result, ChatRowError) and result.field == "template"
    assert "longer than 0.3 s" in result.reason


def test_chat_template_limits_scale_with_a_large_row(tiny_tokenizer):
    """A template may repeat a large reply: the size limit grows with the row, so real rows are not refused."""
    reply = "word " * 400_000  # 2 MB, over the 1 MB default limit
    chat = [{"role": "user", "content": "a"}, {"role": "assistant", "content": reply.strip()}]
    enc = ChatTokenizer(tiny_tokenizer, "tulu").encode([chat])[0]
    assert not isinstance(enc, Exception), enc


def test_task_template_limits_scale_with_a_large_field():
    document = "x" * 2_000_000  # over the 1 MB default: a long document field is not an attack
    out = render_text("{{ doc }} {{ doc|length }}", {"doc": document}, task="t", template="ok", part="input")
    assert out == document + " 2000000"
