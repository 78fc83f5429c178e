"""Typer options derived from a stage's pydantic config, so each setting is declared exactly once.

`options_from(Model)` turns a command `def cmd(fields: dict, *, extra...)` into a Typer command whose
options are the model's fields: the name (`--snake-case`), help (the field's description) and shown
default (the field's default) all come from the model. An option left out is absent from `fields`,
so the model's own default applies; nothing is re-declared in the CLI. This module imports only
typer and pydantic, so `--help` stays fast.
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

_SCALARS = (str, int, float, bool, Path)


def option_name(field: str) -> str:
    """`micro_batch_size` → `--micro-batch-size`."""
    return "--" + field.replace("_", "-")


Config = typing.TypeVar("Config", bound=BaseModel)


def config_from(model: type[Config], fields: dict[str, Any]) -> Config:
    """The command's config from the options given; a bad value is a usage error naming its option."""
    try:
        return model(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        raise typer.BadParameter(f"{option_name(field)}: {error['msg']}" if field else error["msg"]) from None


def parse_override(text: str) -> tuple[str, str]:
    """`--set KEY=VALUE` → (key, value): a dotted recipe field and its value as typed."""
    if "=" not in text:
        raise typer.BadParameter(f"{text!r}: expected KEY=VALUE", param_hint="--set")
    key, value = text.split("=", 1)
    return key.strip(), value


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
    *,
    exclude: Iterable[str] = (),
    aliases: dict[str, list[str]] | None = None,
    arguments: Iterable[str] = (),
    optional: Iterable[str] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate `cmd(fields: dict, **own_options)`: the model's fields become its Typer options.

    `exclude` names fields that have no option (set in code or a config file), `aliases` extra
    option names (e.g. `--lr`), `arguments` fields taken as positional arguments, `optional`
    required fields that may come from elsewhere (a `--config` file) instead of the command line.
    """
    skip, extra_names, positional, loose = set(exclude), aliases or {}, list(arguments), set(optional)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]
        hints = typing.get_type_hints(command)
        fields = [n for n in model.model_fields if n not in skip]
        generated = [
            _parameter(
                n,
                model.model_fields[n],
                extra_names.get(n, []),
                n in positional,
                model.model_fields[n].is_required() and n not in loose,
            )
            for n in fields
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
            values = {n: kwargs.pop(n) for n in fields if kwargs.get(n) not in (None, [])}
            for n in fields:
                kwargs.pop(n, None)
            return command(values, **kwargs)

        wrapper.__signature__ = inspect.Signature(generated + own_params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in generated + own_params}
        del wrapper.__wrapped__  # typer must read the generated signature, not the original
        return wrapper

    return decorate
