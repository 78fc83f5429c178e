"""User Jinja (task templates, chat templates) cannot hang or exhaust memory: limits on time, size, range."""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from instructkit.data.chat_templates import chat_environment
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


# --- Every building operation is bounded before it builds (filters, methods, printing) ---------
# Small limits so the attacks stay cheap: each builds ≥ 25 MB (or ≥ 1M items) without the checks, while
# the total budget (`max_built`, 12.8M here) bounds what the checked render may hold.
SMALL = Limits(seconds=5.0, max_chars=100_000, max_items=100_000)
DAG = "{% set a = ['x' * 100] * 100 %}"  # 10,000 characters of text, shared 3,000 times below
BUILD_ATTACKS = {
    "batch_fill": "{{ 'ab'|batch(10000000, 'x')|list|length }}",
    "slice_count": "{{ 'ab'|slice(1000000)|list|length }}",
    "slice_fill": "{{ range(10)|slice(1000000, 'x')|list|length }}",
    "map_center_total": "{{ range(400)|map('center', 99999)|list|length }}",
    "list_of_big_strings_total": "{% set ns = namespace(l=[]) %}{% for i in range(400) %}{% set ns.l = ns.l + ['a' * 99999] %}{% endfor %}",
    "sum_of_lists": "{{ ([[0] * 2000] * 2000)|sum(start=[])|length }}",
    "tojson_indent": "{{ [[[[1]]]]|tojson(indent=3000000) }}",
    "tojson_shared": DAG + "{{ ([a] * 3000)|tojson }}",
    "pprint_shared": DAG + "{{ ([a] * 3000)|pprint }}",
    "string_shared": DAG + "{{ ([a] * 3000)|string|length }}",
    "print_shared": DAG + "{{ [a] * 3000 }}",
    "tilde_shared": DAG + "{{ ([a] * 3000) ~ '' }}",
    "join_shared": DAG + "{{ [[a] * 3000]|join }}",
    "escape_shared": DAG + "{{ ([a] * 3000)|e }}",
    "xmlattr_shared": DAG + "{{ {'k': [a] * 3000}|xmlattr }}",
    "format_repeated_field": "{{ ('{0}' * 30000).format('x' * 1000) }}",
    "percent_repeated_key": "{{ ('%(a)s' * 19000) % {'a': 'x' * 2000} }}",
    "format_filter_repeated_key": "{{ ('%(a)s' * 19000)|format(a='x' * 2000) }}",
    "format_precision": "{{ ('{:.99999f}' * 300).format(*([1.5] * 300)) }}",
    "expandtabs": "{{ ('\t' * 30000).expandtabs(1000) }}",
    "translate": "{{ ('a' * 30000).translate({97: 'x' * 1000}) }}",
    "wordwrap_wrapstring": "{{ ('a ' * 30000)|wordwrap(1, wrapstring='x' * 1000) }}",
    "indent_string_width": "{{ ('\n' * 30000)|indent('x' * 1000, true, true) }}",
    "urlize_target": "{{ ('www.a.com ' * 1000)|urlize(target='x' * 40000) }}",
    "block_set_doubling": "{% set ns = namespace(x='a' * 99999) %}{% for i in range(9) %}{% set ns.x %}{{ ns.x }}{{ ns.x }}{% endset %}{% endfor %}",
    "block_set_many_pieces": "{% set x %}{% for i in range(100) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}{% endset %}",
    "macro_many_literals": "{% macro m() %}{% for i in range(100000) %}{% for j in range(1000) %}ab{% endfor %}{% endfor %}{% endmacro %}{{ m() }}",
    "join_lazy_items": "{{ range(1000)|map('string')|join('x' * 99999) }}",
    "join_method_lazy_items": "{{ ('x' * 99999).join(range(1000)|map('string')) }}",
    "sum_of_lazy_lists": "{{ ([[0] * 2000] * 2000)|select|sum(start=[])|length }}",
    "bytes_repeat": "{{ (('x' * 1000).encode() * 40000)|length }}",
    "regex_backreferences": "{{ ('a' * 30000)|regex_replace('a', '\\\\g<0>' * 1000) }}",
    "upper_that_grows": "{{ ('ß' * 99999)|upper }}",
    "integer_squaring": "{% set ns = namespace(x=3) %}{% for i in range(25) %}{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x > 0 }}",
}


@pytest.mark.parametrize("source", BUILD_ATTACKS.values(), ids=BUILD_ATTACKS.keys())
def test_nothing_over_the_limits_is_built(source):
    """Refused before the big object exists: peak memory stays near the limits, not the attack's size."""
    template = sandbox().from_string(source)
    tracemalloc.start()
    try:
        with pytest.raises(RenderLimitError):
            render(template, {}, SMALL)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < SMALL.max_built + 4_000_000, f"peak {peak:,} bytes"


def test_chat_environment_tojson_is_bounded_too():
    """`tojson` replaced after the sandbox was built (transformers' version) is still bounded."""
    template = chat_environment().from_string("{{ messages|tojson(indent=3000000) }}")
    tracemalloc.start()
    try:
        with pytest.raises(RenderLimitError):
            render(template, {"messages": [[[{"a": 1}]]]}, SMALL)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000, f"peak {peak:,} bytes"


CONSTANT_FOLDING = {  # Jinja evaluates these while compiling (no render involved)
    "batch": "{{ 'ab'|batch(10000000, 'x')|list|length }}",
    "slice": "{{ 'ab'|slice(2000000)|list|length }}",
    "tojson_indent": "{{ [[[[1]]]]|tojson(indent=10000000) }}",
    "center": "{{ 'x'|center(50000000) }}",
    "string_repeat": "{{ 'a' * 10**9 }}",
}


@pytest.mark.parametrize("source", CONSTANT_FOLDING.values(), ids=CONSTANT_FOLDING.keys())
def test_compiling_is_bounded_and_the_render_refuses(source):
    tracemalloc.start()
    try:
        template = sandbox().from_string(source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000, f"compiling peaked at {peak:,} bytes"
    with pytest.raises(RenderLimitError):
        render(template, {})


# --- The time limit interrupts a render; it does not only check afterwards -----------------------


def _spin(seconds: float = 3.0) -> str:
    """A slow callable in the context: pure Python, no template loop or filter call inside."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "done"


@pytest.mark.parametrize("where", ["main thread", "worker thread"])
def test_the_time_limit_interrupts_a_running_render(where):
    template = sandbox().from_string("{{ spin() }}")

    def attempt() -> tuple[BaseException | None, float]:
        start = time.monotonic()
        try:
            render(template, {"spin": _spin}, SHORT)
        except RenderLimitError as exc:
            return exc, time.monotonic() - start
        return None, time.monotonic() - start

    if where == "main thread":
        error, elapsed = attempt()
    else:
        with ThreadPoolExecutor(1) as pool:
            error, elapsed = pool.submit(attempt).result()
    assert error is not None and "longer than 0.3 s" in str(error)
    assert elapsed < 1.5, f"stopped only after {elapsed:.2f} s"


def test_an_interrupt_never_arrives_after_the_render():
    """Renders that finish right at their deadline leave nothing pending for the code after them."""
    template = sandbox().from_string("{{ spin(0.05) }}")
    for seconds in [0.0, 0.05] * 10:  # 0 s: the deadline passes while the render is being set up
        with contextlib.suppress(RenderLimitError):
            render(template, {"spin": _spin}, Limits(seconds=seconds))
    _spin(0.3)  # an interrupt still queued for this thread would be raised here
    assert render(sandbox().from_string("{{ 1 + 1 }}"), {}) == "2"


def test_ordinary_filters_render_as_jinja_renders_them():
    """The wrappers change no result: the same templates in plain Jinja give the same text."""
    source = (
        "{{ xs|tojson }} {{ xs|tojson(indent=2) }} {{ d|pprint }} {{ xs|batch(2, 0)|list }} "
        "{{ xs|slice(2)|list }} {{ xs|map('string')|join('-') }} {{ xs|sum }} {{ 'a b c'|wordwrap(3) }} "
        "{{ 'x'|center(5) }}|{{ 'l1\nl2'|indent(2) }} {{ '%s=%d'|format('k', 3) }} {{ '{:>4}|{}'.format(1, d) }} "
        "{{ 'Hello World'|truncate(8, leeway=0) }} {{ d|xmlattr }} {{ '<&>'|e }} {{ 'é x'|urlencode }} "
        "{{ d|dictsort }} {{ xs|reverse|list }} {{ xs|unique|list }} {{ xs ~ '!' }} {{ xs }} {{ d.items()|list }}"
    )
    context = {"xs": [1, 2, 3, 2], "d": {"a": "x y", "b": [1, 2]}}
    plain = ImmutableSandboxedEnvironment().from_string(source).render(**context)
    assert render(sandbox().from_string(source), context) == plain
