"""One limited Jinja sandbox for every user-supplied template: task templates and chat templates.

Jinja's `ImmutableSandboxedEnvironment` stops templates from reaching Python internals, but not from
hanging or exhausting memory: nested `range(100000)` loops, `lipsum(10**6)` or `'a' * 10**9` all run.
`LimitedSandbox` adds, per render:

- a time limit, checked on every loop iteration and every call (macros, methods, recursion);
- a size limit on every string or list an operator or call produces (`*`, `+`, `~`, `%`, `**`,
  `str.format`, width arguments such as `center(10**9)`, `join`, `replace`, `indent`), checked
  *before* the work is done where the size can be known in advance, and on the rendered output;
- a bounded `range` and `lipsum`.

Limits hold only inside `render()` / `limited()`; a template rendered without them gets the default
limits. A limit that is hit raises `RenderLimitError` (a `jinja2.TemplateError`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

MAX_RANGE = 100_000  # items one `range()` may produce (Jinja's own sandbox bound)
MAX_LIPSUM_PARAGRAPHS = 20
MAX_LIPSUM_WORDS = 200
MAX_POWER_BITS = 100_000  # `a ** b` on integers: the result's size in bits


class RenderLimitError(jinja2.TemplateError):
    """A template went over a render limit (time, size, range); the message says which and how to fix it."""


@dataclass(frozen=True)
class Limits:
    """Bounds on one render. `max_chars` bounds every string (and `max_items` every list) it builds."""

    seconds: float = 10.0
    max_chars: int = 1_000_000
    max_items: int = 1_000_000

    def scaled_to(self, input_chars: int) -> Limits:
        """Limits that leave room for a template that repeats its input a few times (large rows)."""
        return Limits(self.seconds, max(self.max_chars, 4 * input_chars + 1_000_000), self.max_items)


DEFAULT_LIMITS = Limits()


@dataclass
class _Budget:
    limits: Limits
    deadline: float


_BUDGET: ContextVar[_Budget | None] = ContextVar("instructkit_render_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    return budget if budget is not None else _Budget(DEFAULT_LIMITS, float("inf"))


def _check_time() -> None:
    budget = _BUDGET.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise RenderLimitError(
            f"rendering took longer than {budget.limits.seconds:g} s (the time limit per render); "
            "the template loops too much"
        )


def _check_size(size: int, what: str) -> None:
    limits = _budget().limits
    if size > limits.max_chars:
        raise RenderLimitError(
            f"{what} would build {size:,} characters or items, over the limit of {limits.max_chars:,} per render"
        )


def _check_len(value: Any, what: str) -> Any:
    """Refuse a finished string or list that is over the size limit."""
    if isinstance(value, str):
        _check_size(len(value), what)
    elif isinstance(value, (list, tuple)) and len(value) > _budget().limits.max_items:
        raise RenderLimitError(
            f"{what} built a list of {len(value):,} items, over the limit of {_budget().limits.max_items:,}"
        )
    return value


def _check_int_args(args: tuple, kwargs: dict, what: str) -> None:
    """Widths and counts (`center(10**9)`, `zfill`, `'%*s'`) bound the size of what they build."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _budget().limits.max_chars:
            _check_size(abs(value), what)


_DIGITS = re.compile(r"\d{6,}")


def _check_format_widths(fmt: str, what: str) -> None:
    """A format string's own widths (`'%1000000000s'`, `'{:>1000000000}'`) bound its output."""
    for number in _DIGITS.findall(fmt):
        if int(number) > _budget().limits.max_chars:
            _check_size(int(number), what)


def _repeat_size(left: Any, right: Any) -> int | None:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
            return len(seq) * max(count, 0)
    return None


class _LimitedIterable:
    """Wraps a `for` loop's iterable: checks the time limit on every iteration, keeps `len()`."""

    def __init__(self, iterable: Any):
        self._iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        for item in self._iterable:
            _check_time()
            yield item

    def __len__(self) -> int:
        return len(self._iterable)


def _limited_iter(value: Any) -> Any:
    return value if isinstance(value, jinja2.Undefined) else _LimitedIterable(value)


def _limited_concat(values: tuple) -> str:
    """The `~` operator with a size check (Jinja compiles `~` to a join no hook can see)."""
    parts = [str(v) for v in values]
    _check_size(sum(map(len, parts)), "the `~` operator")
    return "".join(parts)


def _limited_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise RenderLimitError(f"range() of {len(rng):,} items is over the limit of {MAX_RANGE:,}")
    return rng


def _limited_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    if n > MAX_LIPSUM_PARAGRAPHS or max > MAX_LIPSUM_WORDS or min > MAX_LIPSUM_WORDS:
        raise RenderLimitError(
            f"lipsum() is limited to {MAX_LIPSUM_PARAGRAPHS} paragraphs of {MAX_LIPSUM_WORDS} words"
        )
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


def _size_checked_filter(name: str, original: Any) -> Any:
    """A built-in filter that may build large text, with its size checked before and after."""

    def estimate(value: Any, args: tuple) -> int:
        if name == "join" and isinstance(value, (list, tuple, range)) and args:
            return len(str(args[0])) * len(value)
        if name == "replace" and isinstance(value, str) and len(args) >= 2:
            return len(value) + value.count(str(args[0])) * len(str(args[1]))
        if name == "indent" and isinstance(value, str) and args and isinstance(args[0], int):
            return len(value) + args[0] * (value.count("\n") + 1)
        return 0

    def checked(*args: Any, **kwargs: Any) -> Any:
        # pass_eval_context / pass_environment filters get that object first; the value follows it
        offset = 1 if getattr(original, "jinja_pass_arg", None) is not None else 0
        value, rest = (args[offset] if len(args) > offset else None), args[offset + 1 :]
        what = f"the `{name}` filter"
        _check_time()
        _check_int_args(rest, kwargs, what)
        if name == "format" and isinstance(value, str):
            _check_format_widths(value, what)
        _check_size(estimate(value, rest), what)
        return _check_len(original(*args, **kwargs), what)

    checked.jinja_pass_arg = getattr(original, "jinja_pass_arg", None)  # type: ignore[attr-defined]
    checked.__name__ = getattr(original, "__name__", name)
    return checked


SIZE_CHECKED_FILTERS = ("center", "format", "indent", "join", "replace", "wordwrap", "truncate")


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """`ImmutableSandboxedEnvironment` with time and size limits (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.globals["range"] = _limited_range
        self.globals["lipsum"] = _limited_lipsum
        for name in SIZE_CHECKED_FILTERS:
            self.filters[name] = _size_checked_filter(name, self.filters[name])
        self.filters["_instructkit_limited_iter"] = _limited_iter
        self.filters["_instructkit_limited_concat"] = _limited_concat

    def _generate(self, source: nodes.Template, name, filename, defer_init: bool = False) -> str:
        """Every compiled template passes here: wrap loops and `~` so the limits see them."""
        return super()._generate(_limit_ast(source), name, filename, defer_init=defer_init)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        what = f"the `{operator}` operator"
        if operator == "*":
            size = _repeat_size(left, right)
            if size is not None:
                _check_size(size, what)
        elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, type(left)):
            _check_size(len(left) + len(right), what)
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right > 0 and abs(left).bit_length() * right > MAX_POWER_BITS:
                raise RenderLimitError(f"{what}: {left} ** {right} is too large to compute")
        elif operator == "%" and isinstance(left, str):
            _check_format_widths(left, what)
            _check_int_args(right if isinstance(right, tuple) else (right,), {}, what)
        return _check_len(super().call_binop(context, operator, left, right), what)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Calls from templates: time check, width arguments checked, result size checked."""
        _check_time()
        what = f"calling {getattr(__obj, '__name__', type(__obj).__name__)}()"
        bound = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(bound, "__self__", None)
        if isinstance(owner, (str, list, tuple)):  # widths and counts of sequence methods
            _check_int_args(args, kwargs, what)
        if isinstance(owner, str):
            name = getattr(bound, "__name__", "")
            if name in ("format", "format_map"):
                _check_format_widths(owner, what)
            elif name == "replace" and len(args) >= 2:
                _check_size(len(owner) + owner.count(str(args[0])) * len(str(args[1])), what)
            elif name == "join" and args and isinstance(args[0], (list, tuple, range)):
                _check_size(len(owner) * len(args[0]), what)
        return _check_len(super().call(__context, __obj, *args, **kwargs), what)


def _limit_ast(template: nodes.Template) -> nodes.Template:
    """Route every `for` iterable and every `~` through the limit-checking filters."""
    for loop in template.find_all(nodes.For):
        loop.iter = nodes.Filter(
            loop.iter, "_instructkit_limited_iter", [], [], None, None, lineno=loop.lineno
        )
    for concat in list(template.find_all(nodes.Concat)):
        wrapped = nodes.Tuple(list(concat.nodes), "load", lineno=concat.lineno)
        concat.nodes = [
            nodes.Filter(wrapped, "_instructkit_limited_concat", [], [], None, None, lineno=concat.lineno)
        ]
    return template


def input_chars(value: Any, depth: int = 0) -> int:
    """Characters of text in a render's inputs (strings inside dicts and lists too), to scale the limits."""
    if isinstance(value, str):
        return len(value)
    if depth > 8:
        return 0
    if isinstance(value, dict):
        return sum(input_chars(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(input_chars(v, depth + 1) for v in value)
    return 0


@contextmanager
def limited(limits: Limits = DEFAULT_LIMITS) -> Iterator[None]:
    """Apply `limits` to every sandboxed render (and expression) inside the block."""
    token = _BUDGET.set(_Budget(limits, time.monotonic() + limits.seconds))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def render(template: jinja2.Template, context: dict[str, Any], limits: Limits | None = None) -> str:
    """Render under `limits` (default: `DEFAULT_LIMITS` scaled to the context's text); the output is
    assembled chunk by chunk so its size is checked as it grows."""
    limits = limits or DEFAULT_LIMITS.scaled_to(input_chars(context))
    with limited(limits):
        out: list[str] = []
        size = 0
        for chunk in template.generate(**context):
            size += len(chunk)
            if size > limits.max_chars:
                _check_size(size, "the rendered output")
            out.append(chunk)
        _check_time()
        return "".join(out)
