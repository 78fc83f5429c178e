"""One limited Jinja sandbox for every user-supplied template: task templates and chat templates.

Jinja's `ImmutableSandboxedEnvironment` stops templates from reaching Python internals, but not from
hanging or exhausting memory. `LimitedSandbox` adds, per render (no filter runs while compiling:
Jinja's constant folding would evaluate `{{ 'ab'|batch(10000000, 'x')|list }}` outside any render's
limits, so it is left to the render):

- a **time limit that interrupts**: `instructkit.interrupt` raises `RenderLimitError` inside the
  rendering thread, whichever it is, when the deadline passes, besides a check on every loop
  iteration, call and filter;
- a **size limit checked before the work**: every operator, method call and filter (all of Jinja's
  built-ins, and any filter added later) has the size of what it would build estimated first, from
  its arguments (`center(10**9)`, `batch(10**9, 'x')`, `'%9999999s'`, `tojson(indent=10**6)`,
  `'{0}{0}{0}'.format(big)`, `'\t'.expandtabs(10**6)`); printing or stringifying a value (`{{ x }}`,
  `~`, `string`, `join`, `tojson`, `pprint`) first measures its text with a bounded walk, so a list
  that shares one big item a million times is refused without being printed; lazy results
  (`map`, `select`, `batch`, `slice`) are counted item by item;
- a **total budget** (`Limits.max_built`): the characters and items of everything built in one
  render, transient values included, so a list of a million strings of 999,999 characters each
  stops early; output collected by macros and `{% set %}` / `{% filter %}` blocks counts as it grows;
- a bounded `range` and `lipsum`, and integer `*` / `**` bounded in bits.

Limits hold inside `render()` / `limited()`; a template rendered without them gets the default
limits without a deadline. A limit that is hit raises `RenderLimitError` (a `jinja2.TemplateError`).
The interruption cannot stop a single C call that is already running (a regular expression in a
custom filter, for instance); every built-in operation is bounded in size, hence in time, before it
starts.
"""

from __future__ import annotations

import collections.abc as abc
import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from string import Formatter
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import generate_lorem_ipsum
from markupsafe import Markup

from .interrupt import deadline
from .sandbox_bounds import (
    BUDGET,
    COMPILING,
    DEFAULT_LIMITS,
    ESTIMATES,
    MAX_POWER_BITS,
    NO_TEXT,
    Budget,
    Limits,
    NotAtCompileTime,
    RenderLimitError,
    bind_arguments,
    case_bound,
    charge,
    check_built,
    check_size,
    check_text,
    check_time,
    current_budget,
    format_field_bound,
    int_width,
    printf_bound,
    replace_bound,
    signature_of,
    size_bound,
    time_message,
)

MAX_RANGE = 100_000  # items one `range()` may produce (Jinja's own sandbox bound)
MAX_LIPSUM_PARAGRAPHS = 20
MAX_LIPSUM_WORDS = 200


class _Interrupt(RenderLimitError):
    """Raised asynchronously in a rendering thread by the watchdog (no message: see `limited`)."""


class _BoundedFormatting:
    """`str.format` in the sandbox: each field measured before it is formatted, the total counted."""

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self._built = len(format_string)
        return super().vformat(format_string, args, kwargs)  # type: ignore[misc]

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_time()
        self._built += format_field_bound(value, format_spec)
        check_size(self._built, "str.format()")
        return super().format_field(value, format_spec)  # type: ignore[misc]


class _LimitedFormatter(_BoundedFormatting, SandboxedFormatter):
    pass


class _LimitedEscapeFormatter(_BoundedFormatting, SandboxedEscapeFormatter):
    pass


# --- filters -------------------------------------------------------------------------------------


def _is_lazy(value: Any) -> bool:
    """An iterable with no length (a generator, `map`, `select`): measured only once materialized."""
    return not isinstance(value, (abc.Sized, jinja2.Undefined)) and isinstance(value, abc.Iterable)


class _CountedIterator:
    """A lazy filter result: time checked, items counted and charged as they are produced."""

    def __init__(self, iterable: Any, what: str):
        self._iterator, self._what, self._count = iter(iterable), what, 0

    def __iter__(self) -> _CountedIterator:
        return self

    def __next__(self) -> Any:
        check_time()
        item = next(self._iterator)
        self._count += 1
        if self._count > current_budget().limits.max_items:
            raise RenderLimitError(f"{self._what} produced over {current_budget().limits.max_items:,} items")
        check_built(item, self._what)
        charge(1, self._what)
        return item


def limit_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """`original` with the limits: time check, input text measured, output estimated before the call
    (for the built-ins that can grow), then the result checked, charged, and counted if lazy."""
    if getattr(original, "_instructkit_limited", False):
        return original
    estimate = ESTIMATES.get(name)
    pass_arg = getattr(original, "jinja_pass_arg", None)
    signature = signature_of(original) if estimate is not None else None

    def limited_filter(*args: Any, **kwargs: Any) -> Any:
        if COMPILING.get():
            raise NotAtCompileTime
        check_time()
        what = f"the `{name}` filter"
        offset = 1 if pass_arg is not None else 0
        if name in ("join", "sum") and len(args) > offset and _is_lazy(args[offset]):
            args = (*args[:offset], list(_CountedIterator(args[offset], what)), *args[offset + 1 :])
        inputs = args[offset:]
        if name not in NO_TEXT:  # its arguments may become text: measure them first
            for value in (*inputs, *kwargs.values()):
                check_text(value, what)
        if estimate is not None:
            check_size(estimate(bind_arguments(signature, args, inputs, kwargs)), what)
        result = original(*args, **kwargs)
        if isinstance(result, abc.Iterator) or inspect.isgenerator(result):
            return _CountedIterator(result, what)
        return check_built(result, what)

    limited_filter.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    limited_filter._instructkit_limited = True  # type: ignore[attr-defined]
    limited_filter.__name__ = getattr(original, "__name__", name)
    limited_filter.__wrapped__ = original  # type: ignore[attr-defined]
    return limited_filter


class _LimitedFilters(dict):
    """The filter table: every filter put in it, now or later, is wrapped by `limit_filter`."""

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name, limit_filter(name, value))

    def update(self, *args: Any, **kwargs: Any) -> None:
        for name, value in dict(*args, **kwargs).items():
            self[name] = value

    def setdefault(self, name: str, value: Any = None) -> Any:
        if name not in self:
            self[name] = value
        return self[name]


# --- other building operations -----------------------------------------------------------------


def _repeat_size(left: Any, right: Any) -> int | None:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int):
            return len(seq) * max(count, 0)
    return None


def _limited_iter(value: Any) -> Any:
    """A `for` loop's iterable: the time limit checked on every iteration; `len()` kept."""
    return value if isinstance(value, jinja2.Undefined) else _LimitedIterable(value)


class _LimitedIterable:
    def __init__(self, iterable: Any):
        self._iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        for item in self._iterable:
            check_time()
            yield item

    def __len__(self) -> int:
        return len(self._iterable)


def _limited_concat(values: tuple) -> str:
    """The `~` operator, each part measured before it is turned into text."""
    size = 0
    for value in values:
        size += size_bound(value)
        check_size(size, "the `~` operator")
    return check_built("".join(str(v) for v in values), "the `~` operator")


class _Buffer(list):
    """The output of a macro, `{% set %}` block, `{% filter %}` or call block, collected before it is
    joined: its size is counted as it grows, so the joined text never passes the limit."""

    def __init__(self) -> None:
        super().__init__()
        self._size = 0

    def append(self, piece: Any) -> None:
        self._grow(len(piece) if isinstance(piece, str) else 100)
        super().append(piece)

    def extend(self, pieces: Any) -> None:
        for piece in pieces:
            self.append(piece)

    def _grow(self, size: int) -> None:
        check_time()
        self._size += size
        limits = current_budget().limits
        if self._size > limits.max_chars or len(self) >= limits.max_items:
            check_size(max(self._size, len(self) + 1), "collecting a block's output")
        charge(size + 1, "collecting a block's output")


def _limited_join(pieces: Any) -> str:
    """Jinja's `concat` (joins a buffer, or `Template.render`'s whole output) with the size counted."""
    if isinstance(pieces, _Buffer):
        return "".join(pieces)
    out, size, limit = [], 0, current_budget().limits.max_chars
    for piece in pieces:
        size += len(piece)
        if size > limit:
            check_size(size, "the rendered output")
        out.append(piece)
    return "".join(out)


class _LimitedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with output buffers that count their size (`_Buffer`)."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment._instructkit_buffer()")


def _finalize(value: Any) -> Any:
    """Every `{{ ... }}`: the value's text is measured before Jinja turns it into a string."""
    if COMPILING.get() and not isinstance(value, (str, int, float)):
        raise NotAtCompileTime
    check_text(value, "printing a value")
    return value


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


def _method_bound(owner: Any, name: str, args: tuple, kwargs: dict) -> int:
    """What a `str` / `bytes` method called from a template would build, before it runs."""
    if not isinstance(owner, (str, bytes)):
        return 0
    values = (*args, *kwargs.values())
    if name in ("center", "ljust", "rjust", "zfill"):
        return max(len(owner), int_width(values[0]) if values else 0)
    if name == "expandtabs":
        tab = "\t" if isinstance(owner, str) else b"\t"
        return len(owner) + owner.count(tab) * (int_width(values[0]) if values else 8)  # type: ignore[arg-type]
    if name == "replace" and len(args) >= 2:
        return replace_bound(
            {"s": owner, "old": args[0], "new": args[1], "count": args[2] if len(args) > 2 else None}
        )
    if name == "join" and values:
        items = values[0]
        if isinstance(items, abc.Sized):
            return len(owner) * len(items) + size_bound(list(items))
    if name == "translate" and values and isinstance(values[0], abc.Mapping):
        longest = max((len(v) for v in values[0].values() if isinstance(v, str)), default=1)
        return len(owner) * max(longest, 1)
    if name in ("upper", "lower", "title", "capitalize", "swapcase", "casefold"):
        return case_bound(owner)
    if name in ("encode", "decode"):  # utf-32 with its mark; `backslashreplace` writes 4 per byte
        return 4 * len(owner) + 4
    return 0


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """`ImmutableSandboxedEnvironment` with time and size limits (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _LimitedCodeGenerator
    concat = staticmethod(_limited_join)  # type: ignore[assignment]
    _instructkit_buffer = _Buffer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        user_finalize = kwargs.pop("finalize", None)
        super().__init__(*args, **kwargs)
        self.finalize = _finalize if user_finalize is None else (lambda v: user_finalize(_finalize(v)))
        existing, self.filters = self.filters, _LimitedFilters()  # type: ignore[assignment]
        self.filters.update(existing)
        self.globals["range"] = _limited_range
        self.globals["lipsum"] = _limited_lipsum
        self.filters["_instructkit_limited_iter"] = _limited_iter
        self.filters["_instructkit_limited_concat"] = _limited_concat

    def _generate(self, source: nodes.Template, name: Any, filename: Any, defer_init: bool = False) -> str:
        """Every compiled template passes here: wrap loops and `~` so the limits see them. No filter
        runs while compiling: Jinja's constant folding would do its work outside any render's limits."""
        token = COMPILING.set(True)
        try:
            return super()._generate(_limit_ast(source), name, filename, defer_init=defer_init)
        finally:
            COMPILING.reset(token)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "+" and type(left) is str and type(right) is str:  # the common case, kept fast
            check_time()
            check_size(len(left) + len(right), "the `+` operator")
            return check_built(left + right, "the `+` operator")
        check_time()
        what = f"the `{operator}` operator"
        if operator == "*":
            size = _repeat_size(left, right)
            if size is not None:
                check_size(size, what)
            elif (
                isinstance(left, int)
                and isinstance(right, int)
                and abs(left).bit_length() + abs(right).bit_length() > MAX_POWER_BITS
            ):
                raise RenderLimitError(f"{what}: the product is too large to compute")
        elif (
            operator == "+" and isinstance(left, (str, bytes, list, tuple)) and isinstance(right, type(left))
        ):
            check_size(len(left) + len(right), what)
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right > 0 and abs(left).bit_length() * right > MAX_POWER_BITS:
                raise RenderLimitError(f"{what}: {left} ** {right} is too large to compute")
        elif operator == "%" and isinstance(left, (str, bytes)):
            check_size(printf_bound(left if isinstance(left, str) else left.decode("latin-1"), right), what)
        return check_built(super().call_binop(context, operator, left, right), what)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` / `format_map` with each field measured (Jinja's wrapper, our formatter)."""
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        owner: str = value.__self__
        formatter: Formatter = (
            _LimitedEscapeFormatter(self, escape=owner.escape)
            if isinstance(owner, Markup)
            else _LimitedFormatter(self)
        )
        is_map = value.__name__ == "format_map"

        def limited_format(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            return check_built(type(owner)(formatter.vformat(owner, args, kwargs)), "str.format()")

        limited_format.__wrapped__ = value  # type: ignore[attr-defined]
        limited_format.__name__ = value.__name__
        return limited_format

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Calls from templates: time check, what a method would build estimated, result checked."""
        check_time()
        what = f"calling {getattr(__obj, '__name__', type(__obj).__name__)}()"
        bound = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(bound, "__self__", None)
        if isinstance(owner, (str, bytes)):
            name = getattr(bound, "__name__", "")
            if name == "join" and args and _is_lazy(args[0]):  # measure the items before joining
                args = (list(_CountedIterator(args[0], what)), *args[1:])
            check_size(_method_bound(owner, name, args, kwargs), what)
        result = super().call(__context, __obj, *args, **kwargs)
        if inspect.isgenerator(result):
            return _CountedIterator(result, what)
        return check_built(result, what)


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
    """Apply `limits` to every sandboxed render (and expression) inside the block; the block is
    interrupted when its time is up (`instructkit.interrupt`)."""
    budget = Budget(limits, time.monotonic() + limits.seconds)
    token = BUDGET.set(budget)
    try:
        with deadline(budget.deadline, _Interrupt):
            yield
    except _Interrupt:
        raise RenderLimitError(time_message(limits)) from None
    finally:
        BUDGET.reset(token)


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
                check_size(size, "the rendered output")
            out.append(chunk)
        check_time()
        return "".join(out)
