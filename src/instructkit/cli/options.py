"""Typer options derived from a stage's pydantic config, so each setting is declared exactly once.

`options_from(Model)` turns a command `def cmd(fields: dict, *, extra...)` into a Typer command whose
options are the model's fields: the name (`--snake-case`), help (the field's description) and shown
default (the field's default) all come from the model. An option left out is absent from `fields`,
so the model's own default applies; nothing is re-declared in the CLI. This module imports only
typer, pydantic and `settings_io`, so `--help` stays fast.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .. import settings_io
from ..errors import InstructkitError

_SCALARS = (str, int, float, bool, Path)


def option_name(field: str) -> str:
    """`micro_batch_size` → `--micro-batch-size`."""
    return "--" + field.replace("_", "-")


Config = typing.TypeVar("Config", bound=BaseModel)


def _option_of(loc: settings_io.Loc) -> str:
    """A validation error's location as the option that set it: `('max_length',)` → `--max-length`."""
    return option_name(str(loc[0])) + "".join(f".{part}" for part in loc[1:])


def config_from(model: type[Config], fields: dict[str, Any]) -> Config:
    """The command's config from the options given; a bad value is a usage error naming its option."""
    try:
        return model(**fields)
    except ValidationError as exc:
        raise typer.BadParameter(settings_io.describe(model, exc, _option_of)) from None


def validate_options(model: type[Config], data: dict[str, Any], source: str | Path) -> Config:
    """`model` from a config file merged with the options given; required settings that neither set
    are named as options in one line (`missing --data, --output-dir`), other problems as `source: ...`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        missing = [e for e in errors if e["type"] == "missing" and len(e["loc"]) == 1]
        names = [str(e["loc"][0]) for e in missing]
        others = [settings_io.problem(model, e) for e in errors if e not in missing]
        parts = [f"{source}: {'; '.join(others)}"] if others else []
        if missing:
            flags, keys = ", ".join(map(option_name, names)), ", ".join(f"{n}:" for n in names)
            them = "it" if len(names) == 1 else "them"
            parts.insert(0, f"missing {flags}: pass {them}, or set {keys} in a --config YAML")
        raise InstructkitError("; ".join(parts)) from None


def parse_override(text: str) -> tuple[str, str]:
    """`--set KEY=VALUE` → (key, value): a dotted recipe field and its value as typed."""
    try:
        return settings_io.parse_override(text)
    except InstructkitError as exc:
        raise typer.BadParameter(str(exc), param_hint="--set") from None


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def cli_annotation(annotation: Any) -> Any:
    """The type Typer should parse for a field; anything richer is read as a string the model parses."""
    annotation = _strip_optional(annotation)
    origin = get_origin(annotation)
    if annotation in _SCALARS or origin is Literal:
        return annotation
    if origin in (list, tuple) and get_args(annotation) and get_args(annotation)[0] in _SCALARS:
        return list[get_args(annotation)[0]]
    return str


def _default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple) and not value:
        return "none"
    return str(value)


def field_help(field: FieldInfo) -> str:
    """The field's one-line description with its default, as the help text shows it.

    Square brackets are escaped: Typer renders help as rich markup, which would eat `[@SPLIT]`.
    """
    default = _default_text(field)
    suffix = "(required)" if default == "required" else f"(default: {default})"
    text = f"{field.description or ''} {suffix}".strip()
    return text.replace("[", "\\[")


def _parameter(
    name: str, field: FieldInfo, names: Iterable[str], argument: bool, required: bool
) -> inspect.Parameter:
    annotation = cli_annotation(field.annotation)
    unset = ... if required else None  # a required field is a required option too
    help_text = field_help(field)
    if argument:
        info = typer.Argument(unset, help=help_text, show_default=False)
    elif annotation is bool:
        dashed = option_name(name)
        info = typer.Option(unset, f"{dashed}/--no-{dashed[2:]}", *names, help=help_text, show_default=False)
    else:
        info = typer.Option(unset, option_name(name), *names, help=help_text, show_default=False)
    optional = annotation if required else annotation | None
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=optional)


def options_from(
    model: type[BaseModel],
    *also: type[BaseModel],
    exclude: Iterable[str] = (),
    aliases: dict[str, list[str]] | None = None,
    arguments: Iterable[str] = (),
    optional: Iterable[str] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate `cmd(fields: dict, *also_settings, **own_options)`: the models' fields become its options.

    `fields` holds the options of `model` that were given (the command validates them, perhaps after
    merging a config file); each model in `also` (e.g. `ExecutorSettings`, shared by several commands)
    is validated here and passed as an instance after `fields`. `exclude` names fields that have no
    option (set in code or a config file), `aliases` extra option names (e.g. `--lr`), `arguments`
    fields taken as positional arguments, `optional` required fields that may come from elsewhere (a
    `--config` file) instead of the command line.
    """
    skip, extra_names, positional, loose = set(exclude), aliases or {}, list(arguments), set(optional)
    groups = [(model, [n for n in model.model_fields if n not in skip])]
    groups += [(m, [n for n in m.model_fields if n not in skip]) for m in also]
    _refuse_shared_names(groups)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = list(inspect.signature(command, eval_str=True).parameters.values())[1 + len(also) :]
        hints = typing.get_type_hints(command)
        generated = [
            _parameter(
                n,
                m.model_fields[n],
                extra_names.get(n, []),
                n in positional,
                m.model_fields[n].is_required() and n not in loose,
            )
            for m, names in groups
            for n in names
        ]
        # Positional arguments first, in the order given; then the command's own options.
        generated.sort(
            key=lambda p: (p.name not in positional, positional.index(p.name) if p.name in positional else 0)
        )
        own_params = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
            for p in own
        ]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            given = []
            for _, names in groups:
                given.append({n: kwargs[n] for n in names if kwargs.get(n) not in (None, [])})
                for n in names:
                    kwargs.pop(n, None)
            settings = [config_from(m, values) for (m, _), values in zip(groups[1:], given[1:])]
            return command(given[0], *settings, **kwargs)

        wrapper.__signature__ = inspect.Signature(generated + own_params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in generated + own_params}
        del wrapper.__wrapped__  # typer must read the generated signature, not the original
        return wrapper

    return decorate


def _refuse_shared_names(groups: list[tuple[type[BaseModel], list[str]]]) -> None:
    """Two models of one command may not both declare a field: it would be one option for two settings."""
    seen: dict[str, str] = {}
    for model, names in groups:
        for name in names:
            if name in seen:
                raise TypeError(f"{model.__name__} and {seen[name]} both declare {name!r}")
            seen[name] = model.__name__
