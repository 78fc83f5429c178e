"""What a template operation would build, measured before it runs, and the budget of one render.

`instructkit.sandbox` calls these before every operator, method call, filter and print: the limits
(`Limits`), the budget of the render in progress (a context variable), the checks that raise
`RenderLimitError`, a bounded walk that measures the text of any value (`size_bound`: it stops as
soon as the text would pass the limit, so a list sharing one big item a million times costs no more
than the limit to measure), and, per built-in filter, an estimate of its output from its arguments.
"""

from __future__ import annotations

import collections.abc as abc
import functools
import inspect
import re
import time
from collections.abc import Callable
from contextlib import suppress
from contextvars import ContextVar
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

import jinja2
from jinja2.utils import Namespace

MAX_POWER_BITS = 100_000  # `a ** b` and `a * b` on integers: the result's size in bits


class RenderLimitError(jinja2.TemplateError):
    """A template went over a render limit (time, size, range); the message says which and how to fix it."""


@dataclass(frozen=True)
class Limits:
    """Bounds on one render. `max_chars` bounds every string (and `max_items` every list) it builds;
    `max_built` bounds the total of everything it builds, transient values included (64 × both)."""

    seconds: float = 10.0
    max_chars: int = 1_000_000
    max_items: int = 1_000_000

    @functools.cached_property
    def max_built(self) -> int:
        return 64 * (self.max_chars + self.max_items)

    def scaled_to(self, input_chars: int) -> Limits:
        """Limits that leave room for a template that repeats its input a few times (large rows)."""
        return Limits(self.seconds, max(self.max_chars, 4 * input_chars + 1_000_000), self.max_items)


DEFAULT_LIMITS = Limits()


@dataclass
class Budget:
    limits: Limits
    deadline: float
    built: int = 0


BUDGET: ContextVar[Budget | None] = ContextVar("instructkit_render_budget", default=None)
COMPILING: ContextVar[bool] = ContextVar("instructkit_compiling", default=False)


class NotAtCompileTime(Exception):
    """Raised to Jinja's constant folding, which then leaves the expression to the render."""


def current_budget() -> Budget:
    budget = BUDGET.get()
    return budget if budget is not None else Budget(DEFAULT_LIMITS, float("inf"))


def time_message(limits: Limits) -> str:
    return (
        f"rendering took longer than {limits.seconds:g} s (the time limit per render); "
        "the template loops too much"
    )


def check_time() -> None:
    budget = BUDGET.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise RenderLimitError(time_message(budget.limits))


def check_size(size: int, what: str) -> None:
    limits = current_budget().limits
    if size > limits.max_chars:
        raise RenderLimitError(
            f"{what} would build {size:,} characters or items, over the limit of {limits.max_chars:,} per render"
        )


def charge(size: int, what: str) -> None:
    """Count `size` characters or items built against the render's total budget."""
    budget = BUDGET.get()
    if budget is None:
        return
    budget.built += size
    if budget.built > budget.limits.max_built:
        raise RenderLimitError(
            f"{what}: the render built over {budget.limits.max_built:,} characters and items in all "
            "(the total limit per render)"
        )


# --- measuring text before it is built ---------------------------------------------------------


def _text_bound(s: str) -> int:
    """At most the length of `repr(s)`, `json.dumps(s)` (ASCII or not) or Jinja's `tojson(s)`."""
    special = s.count("'") + s.count("<") + s.count(">") + s.count("&")
    if s.isascii() and s.isprintable():
        return len(s) + 2 + s.count("\\") + s.count('"') + 5 * special
    total = 2 + 5 * special
    for i in range(0, len(s), 65_536):  # chunks keep the measuring copies small
        chunk = s[i : i + 65_536]
        total += max(len(repr(chunk)), len(encode_basestring_ascii(chunk)))
    return total


def size_bound(value: Any, *, serialized: bool = False, indent: int = 0, separator: int = 2) -> int:
    """An upper bound on the characters of `str(value)` (or, `serialized`, of its repr / JSON with
    `indent`), found by a walk that stops, raising `RenderLimitError`, once it passes the limit."""
    if isinstance(value, str):
        return _text_bound(value) if serialized else len(value)
    limit = current_budget().limits.max_chars
    total, steps = 0, 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        steps += 1
        if steps % 4096 == 0:
            check_time()
        if isinstance(item, str):
            total += _text_bound(item) if serialized or depth else len(item)
        elif item is None or isinstance(item, (bool, float, complex)):
            total += 24
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, jinja2.Undefined):
            total += 0
        elif isinstance(item, Namespace):
            total += 13
            stack.append((dict(item._Namespace__attrs), depth))  # type: ignore[attr-defined]
        elif isinstance(item, (abc.Mapping, abc.Collection)) and not isinstance(item, (range, bytes)):
            per_item = separator + (1 + indent * (depth + 1) if indent else 0)
            total += 2 + len(item) * (per_item + (separator if isinstance(item, abc.Mapping) else 0))
            if total <= limit:
                pairs = item.items() if isinstance(item, abc.Mapping) else ((x, None) for x in item)
                for key, val in pairs:
                    stack.append((key, depth + 1))
                    if isinstance(item, abc.Mapping):
                        stack.append((val, depth + 1))
        else:  # range, bytes, generators, macros, loop objects: their text does not grow with content
            total += 100 if not isinstance(item, bytes) else 4 * len(item) + 3
        if total > limit:
            check_size(total, "printing a value")
    return total


def check_text(value: Any, what: str) -> None:
    if not isinstance(value, (str, int, float, bool)) and value is not None:
        check_size(size_bound(value), what)


def check_built(value: Any, what: str) -> Any:
    """Refuse a finished string or list that is over the size limit; charge it to the total."""
    if isinstance(value, (str, bytes)):
        size, items = len(value), False
    elif isinstance(value, (list, tuple, dict, set, frozenset)):
        size, items = len(value), True
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_POWER_BITS:
        raise RenderLimitError(f"{what} built an integer of {value.bit_length():,} bits")
    else:
        return value
    budget = BUDGET.get()
    limits = budget.limits if budget is not None else DEFAULT_LIMITS
    if size > (limits.max_items if items else limits.max_chars):
        kind = "items" if items else "characters"
        limit = limits.max_items if items else limits.max_chars
        raise RenderLimitError(f"{what} built {size:,} {kind}, over the limit of {limit:,} per render")
    if budget is not None:
        budget.built += size
        if budget.built > limits.max_built:
            charge(0, what)
    return value


def int_width(value: Any) -> int:
    """A width or count argument: an int, or (Jinja's `indent`, `json.dumps`) a string used as-is."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, str):
        return len(value)
    return 0


_SPEC_NUMBERS = re.compile(r"\d+")
_PRINTF = re.compile(r"%(?:\(([^)]*)\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([diouxXeEfFgGcrsa%])")


def printf_bound(fmt: str, args: Any) -> int:
    """Upper bound on `fmt % args`: every conversion counts its width, precision and value."""
    values = list(args) if isinstance(args, tuple) else [args]
    mapping = args if isinstance(args, abc.Mapping) else {}
    total, position = len(fmt), 0

    def take() -> Any:
        nonlocal position
        position += 1
        return values[position - 1] if position <= len(values) else None

    for key, width, precision, conversion in _PRINTF.findall(fmt):
        if conversion == "%":
            continue
        numbers = [int_width(take()) if part == "*" else int(part or 0) for part in (width, precision)]
        value = mapping.get(key) if key else take()
        total += sum(numbers) + 30 + size_bound(value, serialized=conversion in "ra")
    return total


def format_field_bound(value: Any, spec: str) -> int:
    return sum(int(n) for n in _SPEC_NUMBERS.findall(spec)) + 30 + size_bound(value)


def signature_of(function: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):
        return None


def bind_arguments(
    signature: inspect.Signature | None, args: tuple, inputs: tuple, kwargs: dict
) -> dict[str, Any]:
    """The filter's arguments by parameter name; where that fails, `_0`, `_1`, ... by position
    (after the context / environment argument) and the keywords as given."""
    if signature is not None:
        with suppress(TypeError):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return dict(bound.arguments)
    return {**{f"_{i}": v for i, v in enumerate(inputs)}, **kwargs}


def _arg(a: dict[str, Any], name: str, index: int = 0, default: Any = "") -> Any:
    return a[name] if name in a else a.get(f"_{index}", default)


def case_bound(s: Any) -> int:
    return len(s) if isinstance(s, str) and s.isascii() else 3 * len(str(s))


def _tojson_bound(a: dict[str, Any]) -> int:
    value = a.get("value", a.get("x", a.get("obj")))
    separators = a.get("separators") or (", ", ": ")
    return size_bound(
        value,
        serialized=True,
        indent=int_width(a.get("indent")),
        separator=max(map(len, map(str, separators))),
    )


def _wordwrap_bound(a: dict[str, Any]) -> int:
    s = str(a.get("s", ""))
    return len(s) + (len(s) + 1) * max(1, len(a.get("wrapstring") or "\n"))


def replace_bound(a: dict[str, Any]) -> int:
    s, old, new = (str(a.get(k, "")) for k in ("s", "old", "new"))
    hits = s.count(old) if old else len(s) + 1
    count = a.get("count")
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * len(new)


def _join_bound(a: dict[str, Any]) -> int:
    value = a.get("value")
    if not isinstance(value, abc.Sized):
        return 0  # a lazy value: its items are counted as they come
    return size_bound(list(value) if not isinstance(value, (list, tuple)) else value) + len(
        str(a.get("d", ""))
    ) * len(value)


def _sum_bound(a: dict[str, Any]) -> int:
    value = a.get("iterable")
    if not isinstance(value, (list, tuple)):
        return 0
    items = sum(len(x) for x in value if isinstance(x, (list, tuple, str)))
    return items * max(1, len(value) // 8)  # `sum` of lists copies the running total at every step


def _regex_replace_bound(value: str, repl: str) -> int:
    """`re.sub`: at most one replacement per position; matches do not overlap, so each
    backreference adds at most the whole input over all of them."""
    return len(value) + (len(value) + 1) * len(repl) + repl.count("\\") * len(value)


def _item_bound(count: Any) -> int:
    return int_width(count) if isinstance(count, int) else 0


# Estimates of what a built-in filter would build, from its bound arguments (before it runs).
ESTIMATES: dict[str, Callable[[dict[str, Any]], int]] = {
    "center": lambda a: max(size_bound(_arg(a, "value")), int_width(_arg(a, "width", 1, 80))),
    "indent": lambda a: (
        size_bound(_arg(a, "s")) + int_width(_arg(a, "width", 1, 4)) * (str(_arg(a, "s")).count("\n") + 1)
    ),
    "wordwrap": _wordwrap_bound,
    "replace": replace_bound,
    "join": _join_bound,
    "format": lambda a: printf_bound(str(_arg(a, "value")), a.get("kwargs") or tuple(a.get("args") or ())),
    "truncate": lambda a: size_bound(_arg(a, "s")) + size_bound(a.get("end", "")),
    "batch": lambda a: _item_bound(a.get("linecount")) if a.get("fill_with") is not None else 0,
    "slice": lambda a: _item_bound(a.get("slices")),
    "tojson": _tojson_bound,
    "pprint": lambda a: size_bound(a.get("value"), serialized=True, indent=1),
    "sum": _sum_bound,
    "upper": lambda a: case_bound(_arg(a, "s")),
    "lower": lambda a: case_bound(_arg(a, "s")),
    "title": lambda a: case_bound(_arg(a, "s")),
    "capitalize": lambda a: case_bound(_arg(a, "s")),
    "escape": lambda a: 6 * size_bound(_arg(a, "s")),
    "e": lambda a: 6 * size_bound(_arg(a, "s")),
    "forceescape": lambda a: 6 * size_bound(_arg(a, "value")),
    "xmlattr": lambda a: 6 * size_bound(_arg(a, "d"), serialized=True),
    "urlencode": lambda a: 12 * size_bound(_arg(a, "value"), serialized=True),
    "regex_replace": lambda a: _regex_replace_bound(str(_arg(a, "value")), str(_arg(a, "repl", 2))),
    "urlize": lambda a: (
        size_bound(_arg(a, "value"))
        * (16 + sum(len(str(a.get(k) or "")) for k in ("target", "rel")) + int_width(a.get("trim_url_limit")))
    ),
}
# Filters that never turn their arguments into text: no walk over their input.
NO_TEXT = frozenset(
    {"length", "count", "first", "last", "list", "default", "d", "attr", "select", "reject", "selectattr",
      "rejectattr", "map", "items", "dictsort", "sort", "unique", "reverse", "groupby", "max", "min", "random",
     "abs", "round", "int", "float", "batch", "slice", "safe", "sum", "_instructkit_limited_iter",
     "_instructkit_limited_concat"}
)  # fmt: skip
