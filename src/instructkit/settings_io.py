"""The one config front door: a YAML file in, a validated settings model out, `KEY=VALUE` overrides on top.

Every config file and command line goes through here, so they all fail the same way:
- `load_yaml` reads a file with `parse_yaml` (a safe load); a missing file, bad YAML or a non-mapping names it;
- `validate` builds a pydantic model and reports every problem on one line as `where: message`,
  an unknown key naming the closest valid one (`did you mean ...?`);
- `apply_overrides` sets dotted keys (`train.max_steps`, `sweep.variants.0.label`) with values read as
  YAML, so `--set train.max_steps=50` sets the int 50 and `--set x=[a, b]` a list;
- `merge` puts the values a command line gave over a config file's, and `load_settings` does it all.
Imports only yaml and pydantic (a foundation module: `--help` stays fast).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import InstructkitError

Settings = TypeVar("Settings", bound=BaseModel)
Loc = tuple[str | int, ...]


# libyaml's C parser where PyYAML was built with it (about 8x faster on the task catalog): the same safe
# constructors either way.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> Any:
    """`yaml.safe_load`, through the C parser when there is one (raises yaml.YAMLError the same way)."""
    return yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 (a safe loader)


def load_yaml(path: str | Path, what: str = "file") -> dict[str, Any]:
    """The mapping a YAML file holds (an empty file is `{}`); every failure names the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InstructkitError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise InstructkitError(f"{path}: cannot read this {what}: {exc.strerror or exc}") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise InstructkitError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InstructkitError(
            f"{path}: expected a mapping of settings (key: value), got a {type(data).__name__}"
        )
    return data


def dotted(loc: Loc) -> str:
    """pydantic's error location as a dotted key: `('train', 'lora_r')` → `train.lora_r`."""
    return ".".join(str(part) for part in loc)


def problem(model: type[BaseModel], error: Mapping[str, Any], where: Callable[[Loc], str] = dotted) -> str:
    """One validation error as `where: message`; an unknown key names the closest valid one."""
    loc = tuple(error["loc"])
    place = where(loc) if loc else f"<{model.__name__}>"
    if error["type"] != "extra_forbidden":
        return f"{place}: {error['msg']}"
    valid = field_names(model, loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`?" if close else f"valid keys: {', '.join(sorted(valid))}"
    return f"{place}: unknown key; {hint}"


def describe(model: type[BaseModel], exc: ValidationError, where: Callable[[Loc], str] = dotted) -> str:
    """Every problem of a failed validation of `model`, `; `-separated, in pydantic's order."""
    return "; ".join(problem(model, error, where) for error in exc.errors())


def field_names(model: type[BaseModel], loc: Loc) -> list[str]:
    """The field names of the model found at `loc` inside `model` (list indices and union tags skipped)."""
    found: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(found, "model_fields", {}).get(part)
        if field is None:
            return []
        found = _model_of(field.annotation)
    return list(getattr(found, "model_fields", {}))


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside `X | None`, `list[X]` or `dict[str, X]`, else the annotation itself."""
    for inner in getattr(annotation, "__args__", ()) or ():
        found = _model_of(inner)
        if hasattr(found, "model_fields"):
            return found
    return annotation


def validate(
    model: type[Settings], data: Any, source: str | Path, where: Callable[[Loc], str] = dotted
) -> Settings:
    """`model` from `data`, or one error `source: where: message; ...` naming every bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InstructkitError(f"{source}: {describe(model, exc, where)}") from None


def parse_override(text: str) -> tuple[str, str]:
    """`KEY=VALUE` → (KEY, VALUE): a dotted key and its value as typed (read as YAML when applied)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InstructkitError(f"{text!r}: expected KEY=VALUE (e.g. train.max_steps=50)")
    return key.strip(), value


def yaml_value(value: Any) -> Any:
    """A value typed on a command line read as YAML (`50` → 50, `[a, b]` → a list); others as they are."""
    if not isinstance(value, str):
        return value
    try:
        return parse_yaml(value)
    except yaml.YAMLError as exc:
        raise InstructkitError(f"{value!r}: not a YAML value: {exc}") from None


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `raw` with each dotted key of `overrides` set (missing sections are created)."""
    out = copy.deepcopy(dict(raw))
    for key, value in overrides.items():
        _set(out, key, yaml_value(value))
    return out


def _set(root: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = root
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = ".".join(parts[:depth]) or "the top level"
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise InstructkitError(
                    f"{key}: {here} is a list of {len(node)}; {part!r} is not an index in it"
                )
            index: Any = int(part)
        elif isinstance(node, dict):
            index = part
            if not last and node.get(part) is None:
                node[part] = {}
        else:
            raise InstructkitError(f"{key}: {here} is a {type(node).__name__}, not a section")
        if last:
            node[index] = value
        else:
            node = node[index]


def merge(base: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """A config file's settings with the values a command line gave on top (a given value wins)."""
    return {**base, **given}


def load_settings(
    model: type[Settings],
    path: str | Path,
    *,
    given: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    what: str = "config file",
) -> Settings:
    """`model` from the YAML at `path`, dotted `overrides` applied, the command line's `given` on top."""
    raw = apply_overrides(load_yaml(path, what), overrides or {})
    return validate(model, merge(raw, given or {}), path)
