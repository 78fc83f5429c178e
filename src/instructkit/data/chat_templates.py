"""Chat templates: the built-in ones, and rendering any template in the limited sandbox.

Each built-in is a Jinja chat template in the Hugging Face convention (`messages`,
`add_generation_prompt`, `bos_token`, `eos_token`). The text a template emits right after an
assistant's content and before the next turn (the end-of-turn marker) is trained on; the separator
that opens the next turn is not.

`ChatTemplate` renders a template (built-in, the tokenizer's, or user-supplied: untrusted code) the
way transformers' `apply_chat_template` does, with the same context and helpers, but in
`instructkit.sandbox.LimitedSandbox`, so a template cannot hang or exhaust memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes

from ..sandbox import DEFAULT_LIMITS, LimitedSandbox, Limits, input_chars, render


class _GenerationTag(jinja2.ext.Extension):
    """Accept transformers' `{% generation %}...{% endgeneration %}` markers; they render their body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _Namespace(jinja2.utils.Namespace):
    """`namespace()` that refuses underscore attributes (as transformers' does)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - Jinja's signature trick
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        if any(isinstance(k, str) and k.startswith("_") for k in attrs):
            raise jinja2.exceptions.SecurityError("namespace attributes cannot start with '_'")
        jinja2.utils.Namespace.__init__(self, attrs)


@lru_cache(maxsize=1)
def chat_environment() -> LimitedSandbox:
    """The sandbox chat templates render in: transformers' settings, helpers and extensions, plus limits."""
    env = LimitedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals.update(
        raise_exception=_raise_exception, strftime_now=_strftime_now, dict=dict, namespace=_Namespace
    )
    return env


@lru_cache(maxsize=64)
def _compile(source: str) -> jinja2.Template:
    return chat_environment().from_string(source)


class ChatTemplate:
    """One chat template and the tokenizer's special tokens, rendered under limits."""

    def __init__(self, source: str, special_tokens: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS):
        self.source, self.limits = source, limits
        self.special_tokens = dict(special_tokens)
        self.template = _compile(source)  # a syntax error surfaces here, before any row is read

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> str:
        """The template's text for `messages`; template errors (`raise_exception`, limits) propagate."""
        context = {
            **self.special_tokens,
            "messages": [dict(m) for m in messages],
            "tools": None,
            "documents": None,
            "add_generation_prompt": add_generation_prompt,
        }
        return render(self.template, context, self.limits.scaled_to(input_chars(messages)))
