"""A recipe: one experiment's stage configs composed (mixture or corpus, prepare, train, evaluate, sweep).

Each section is the stage's own config model (`MixtureConfig`, `PrepareSettings`, `TrainSettings`,
...), validated when the YAML loads: an unknown key names the closest valid one before anything
runs. `name` is the run folder under `runs_dir` and can never leave it.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path, PureWindowsPath
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .data.mixture_config import MixtureConfig
from .data.prepare_config import PrepareSettings
from .errors import InstructkitError
from .evaluate.config import EvaluateSpec
from .synth.config import CorpusSpec
from .train.config import TrainSettings

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


class SweepVariant(BaseModel):
    """One arm of a sweep: a label and the recipe fields it overrides (dotted keys)."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(description="Names the variant's run folder `<runs_dir>/<name>/<label>`.")
    set: dict[str, Any] = Field(default_factory=dict)

    @field_validator("label")
    @classmethod
    def _one_folder(cls, label: str) -> str:
        if "/" in label:
            raise ValueError(f"sweep label {label!r} must be one folder name (no '/')")
        return check_run_name(label, "sweep label")


class SweepSpec(BaseModel):
    """Run the recipe once per variant (each its own cached run) and chart the named metrics."""

    model_config = ConfigDict(extra="forbid")

    variants: list[SweepVariant]
    metrics: list[str] = Field(
        description="`eval:<set>/<k>-shot` (normalized score of an eval set, tuned model) or `train:<field>` "
        "(final_loss, global_step, seconds, tokens_per_second)."
    )
    x_label: str = "variant"


class Recipe(BaseModel):
    """A whole experiment. Every stage section is optional except the ones the run needs."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The run folder under `runs_dir` (`a/b` nests; never `..` or absolute).")
    description: str = ""
    seed: int = 0
    runs_dir: str = "runs"
    mixture: MixtureConfig | None = None
    corpus: CorpusSpec | None = Field(None, description="A pretraining corpus instead of a mixture.")
    mixture_file: str | None = Field(None, description="A mixture YAML instead of an inline `mixture`.")
    sources: list[str] = Field(
        default_factory=list, description="Prepared-from-files data instead of a mixture."
    )
    prepare: PrepareSettings = Field(
        default_factory=PrepareSettings,
        description="`instructkit data prepare` settings (sources/out set by the run).",
    )
    train: TrainSettings | None = Field(
        None,
        description="`instructkit train` settings (data/output_dir set by the run); absent: no training.",
    )
    evaluate: EvaluateSpec | None = None
    commands: list[str] = Field(
        default_factory=list, description="The exact commands that run this recipe (documentation)."
    )
    sweep: SweepSpec | None = None

    @field_validator("name")
    @classmethod
    def _inside_runs_dir(cls, name: str) -> str:
        return check_run_name(name, "recipe name")


def check_run_name(name: str, what: str) -> str:
    """A run folder name: relative parts only, none `.`/`..`/empty, so it stays inside `runs_dir`."""
    parts = name.replace("\\", "/").split("/")
    bad = (
        not name
        or "\0" in name
        or "\\" in name
        or PureWindowsPath(name).anchor
        or name.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
    )
    if bad:
        raise ValueError(
            f"{what} {name!r} is not a plain relative folder name (no absolute path, '..', '.', "
            "empty part or backslash): it names the run folder inside runs_dir"
        )
    return name


def run_root(recipe: Recipe) -> Path:
    """`runs_dir/name`, refused if it would not lie inside `runs_dir` (whatever built the name)."""
    runs = Path(recipe.runs_dir)
    try:  # a recipe built in code skips `load_recipe`'s validation
        root = runs / check_run_name(recipe.name, "recipe name")
    except ValueError as exc:
        raise InstructkitError(str(exc)) from None
    absolute, base = Path(os.path.abspath(root)), Path(os.path.abspath(runs))
    if absolute == base or not absolute.is_relative_to(base):
        raise InstructkitError(f"recipe name {recipe.name!r}: run folder {root} is outside {runs}")
    return root


def load_recipe(
    path_or_name: str | Path | None, overrides: dict[str, Any] | None = None
) -> tuple[Recipe, Path]:
    """A recipe from a YAML path or a shipped name (default: quickstart); errors name file and field."""
    path = _recipe_path(path_or_name or "quickstart")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InstructkitError(f"{path}: not valid YAML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    return _validate(raw, path), path


def _validate(raw: dict[str, Any], path: Path) -> Recipe:
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise InstructkitError(f"{path}: {problems}") from None
    if recipe.prepare.tokenizer is None:  # the data is tokenized for the model that trains on it
        from .models.tiny import default_tokenizer

        if recipe.train is None:
            raise InstructkitError(
                f"{path}: prepare.tokenizer is needed when the recipe has no `train` section"
            )
        tokenizer = default_tokenizer(recipe.train.model)
        recipe.prepare = recipe.prepare.model_copy(update={"tokenizer": tokenizer})
    if recipe.mixture_file:
        from .data.mixture_config import load_mixture_config

        recipe.mixture = load_mixture_config((path.parent / recipe.mixture_file).resolve())
    if recipe.mixture is None and not recipe.sources and recipe.corpus is None:
        raise InstructkitError(f"{path}: a recipe needs `mixture`, `mixture_file`, `sources` or `corpus`")
    if recipe.corpus is not None and (recipe.mixture is not None or recipe.sources):
        raise InstructkitError(f"{path}: `corpus` replaces `mixture` and `sources`; give only one")
    _check_corpus(recipe, path)
    return recipe


def _problem(error: dict[str, Any]) -> str:
    """One validation problem as `section.key: message`; an unknown key names the closest valid one."""
    where = ".".join(str(p) for p in error["loc"])
    if error["type"] != "extra_forbidden":
        return f"{where}: {error['msg']}"
    valid = _valid_keys(error["loc"][:-1])
    close = difflib.get_close_matches(str(error["loc"][-1]), valid, n=1, cutoff=0.6)
    hint = f"; did you mean `{close[0]}`?" if close else f"; valid keys: {', '.join(sorted(valid))}"
    return f"{where}: unknown key{hint}"


def _valid_keys(loc: tuple) -> list[str]:
    """The field names of the recipe model found at `loc` (list indices and union tags skipped)."""
    model: Any = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_of(field.annotation)
    return list(getattr(model, "model_fields", {}))


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside `X | None` or `list[X]`, else the annotation itself."""
    for inner in getattr(annotation, "__args__", ()) or ():
        found = _model_of(inner)
        if hasattr(found, "model_fields"):
            return found
    return annotation


def _check_corpus(recipe: Recipe, path: Path) -> None:
    """A corpus is pretraining text: loss on every token; held-out QA sets need a corpus, zero-shot."""
    if recipe.corpus is not None and recipe.prepare.loss_on != "all":
        raise InstructkitError(f"{path}: prepare.loss_on must be `all` for a corpus (pretraining text)")
    for s in recipe.evaluate.sets if recipe.evaluate else []:
        if s.kind == "heldout_qa" and (recipe.corpus is None or s.k_shot != [0]):
            raise InstructkitError(f"{path}: eval set {s.name!r}: heldout_qa needs `corpus` and k_shot [0]")


def sweep_recipes(recipe: Recipe, path: Path) -> list[tuple[str, Recipe]]:
    """One recipe per sweep variant, named `<name>/<label>`, with the variant's overrides applied."""
    base = recipe.model_dump(mode="json", exclude={"sweep", "mixture_file"})
    out = []
    for variant in recipe.sweep.variants:
        raw = json.loads(json.dumps(base))
        for dotted, value in variant.set.items():
            _set_dotted(raw, dotted, value)
        raw["name"] = f"{recipe.name}/{variant.label}"
        out.append((variant.label, _validate(raw, path)))
    return out


def _recipe_path(name: str | Path) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
    raise InstructkitError(f"no recipe file {name!r} and no shipped recipe of that name (shipped: {known})")


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    """Apply a `--set a.b=value` override to the raw recipe dict."""
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if isinstance(node, list):
        node[int(keys[-1])] = yaml.safe_load(value) if isinstance(value, str) else value
        return
    node[keys[-1]] = yaml.safe_load(value) if isinstance(value, str) else value
