"""Prompt templates: Jinja in a sandbox, so user-supplied task YAMLs cannot run code or read secrets.

A template turns one task row (a dict of fields) into an `input` (the instruction the user sees) and a
`target` (the reply). Rendering uses the limited sandbox (`instructkit.sandbox`: Jinja's
`ImmutableSandboxedEnvironment` plus time and size limits) with `StrictUndefined`: a missing field, a
blocked attribute or a template over a limit raises `TemplateError` naming the task, the template and
the field.
Field mappings in task YAMLs use the same sandbox for *expressions* (`answer.split('####')[-1]`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SecurityError
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InstructkitError
from ..sandbox import DEFAULT_LIMITS, LimitedSandbox, RenderLimitError, input_chars, limited
from ..sandbox import render as render_limited


class TemplateError(InstructkitError):
    """A template or field expression failed; names task, template and the offending field."""

    def __init__(self, task: str, template: str, field: str, reason: str):
        self.task, self.template, self.field, self.reason = task, template, field, reason
        super().__init__(f"task {task!r}, template {template!r}: field {field!r}: {reason}")


class Template(BaseModel):
    """One way of phrasing a task: `input` and `target` are Jinja; `inverted` turns the task around."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="unique within the task; recorded in every rendered row")
    input: str = Field(description="Jinja for the user turn")
    target: str = Field(description="Jinja for the assistant turn")
    inverted: bool = Field(False, description="the task turned around (FLAN); never used for evaluation")


def _regex_replace(value: str, pattern: str, repl: str = "") -> str:
    return re.sub(pattern, repl, value)


def _options_list(options: list[Any]) -> str:
    """FLAN's OPTIONS block: one `- option` per line."""
    return "OPTIONS:\n" + "\n".join(f"- {o}" for o in options)


@lru_cache(maxsize=1)
def sandbox() -> LimitedSandbox:
    """The one shared sandboxed environment (no autoescape: outputs are plain text, not HTML)."""
    env = LimitedSandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
    env.filters["regex_replace"] = _regex_replace
    env.filters["options_list"] = _options_list
    return env


@lru_cache(maxsize=4096)
def _compile(source: str) -> jinja2.Template:
    return sandbox().from_string(source)


@lru_cache(maxsize=4096)
def _compile_expression(source: str):
    return sandbox().compile_expression(source, undefined_to_none=False)


def referenced_fields(source: str) -> set[str]:
    """Names a template reads from its context (used to check templates against a task's fields)."""
    return set(meta.find_undeclared_variables(sandbox().parse(source)))


def _missing_name(exc: jinja2.UndefinedError, context: dict[str, Any]) -> str:
    match = re.search(r"'([^']+)' is undefined", str(exc)) or re.search(
        r"has no attribute '([^']+)'", str(exc)
    )
    return match.group(1) if match else "<unknown>"


def render_text(source: str, context: dict[str, Any], *, task: str, template: str, part: str) -> str:
    """Render one Jinja string in the sandbox; every failure becomes a TemplateError."""
    try:
        return render_limited(_compile(source), context).strip()
    except RenderLimitError as exc:
        raise TemplateError(task, template, part, f"over a render limit: {exc}") from exc
    except jinja2.UndefinedError as exc:
        name = _missing_name(exc, context)
        raise TemplateError(
            task, template, name, f"{part} names a field this row does not have ({exc})"
        ) from exc
    except SecurityError as exc:
        raise TemplateError(task, template, part, f"refused by the sandbox: {exc}") from exc
    except jinja2.TemplateError as exc:
        raise TemplateError(task, template, part, f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # errors raised inside the template (e.g. a bad index) by user-written code
        raise TemplateError(task, template, part, f"{type(exc).__name__}: {exc}") from exc


def evaluate_expression(source: str, context: dict[str, Any], *, task: str, field: str) -> Any:
    """Evaluate a field-mapping expression in the sandbox (returns native Python values, lists included)."""
    try:
        with limited(DEFAULT_LIMITS.scaled_to(input_chars(context))):
            value = _compile_expression(source)(**context)
    except RenderLimitError as exc:
        raise TemplateError(
            task, "<fields>", field, f"expression {source!r}: over a render limit: {exc}"
        ) from exc
    except jinja2.UndefinedError as exc:
        raise TemplateError(task, "<fields>", field, f"expression {source!r}: {exc}") from exc
    except SecurityError as exc:
        raise TemplateError(task, "<fields>", field, f"refused by the sandbox: {exc}") from exc
    except Exception as exc:
        raise TemplateError(
            task, "<fields>", field, f"expression {source!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if isinstance(value, jinja2.Undefined):
        raise TemplateError(task, "<fields>", field, f"expression {source!r} is undefined for this row")
    return value


def check_syntax(task: str, template: Template) -> None:
    """Parse both parts now so a broken template fails when the catalog loads, not mid-build."""
    for part, source in (("input", template.input), ("target", template.target)):
        try:
            _compile(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                task, template.id, part, f"syntax error at line {exc.lineno}: {exc.message}"
            ) from exc
