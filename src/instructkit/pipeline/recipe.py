"""A recipe: one experiment's stage configs composed (mixture or corpus, prepare, train, evaluate, sweep).

Each section is the stage's own config model (`MixtureConfig`, `PrepareSettings`, `TrainSettings`,
...), validated when the YAML loads: an unknown key names the closest valid one before anything
runs. `name` is the run folder under `runs_dir` and can never leave it.
"""

from __future__ import annotations

import os
from pathlib import Path, PureWindowsPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..data.mixture_config import MixtureConfig
from ..data.prepare_config import PrepareSettings
from ..errors import InstructkitError
from ..evaluate.config import EvaluateSpec
from ..settings_io import apply_overrides, load_yaml, validate
from ..synth.config import CorpusSpec
from ..synth.pairs_config import PairsSpec
from ..train.config import TrainSettings

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"  # package data: src/instructkit/recipes


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


OURS_KINDS = ("delta", "tuned", "base")


class PaperClaim(BaseModel):
    """One finding of a paper, its number and setting, and the row of our report that measures it."""

    model_config = ConfigDict(extra="forbid")

    finding: str = Field(description="The paper's finding, one line.")
    cited: str = Field(description="Where the paper shows it, e.g. `Figure 7` or `Table 3`.")
    paper_value: str = Field(description="The paper's number (or sign, when read off a figure), as printed.")
    paper_setting: str = Field(description="The paper's model, data size and steps for that number.")
    ours: str = Field(
        description="`delta|tuned|base:<row>`: our number, a row of the report (`<set>/<k>-shot`, a "
        "benchmark group such as `bbh_cot`, or a task); delta is tuned − base."
    )
    scale: str = Field(description="One line on what the difference in scale means for the comparison.")
    arm: str | None = Field(None, description="Shown only in the sweep arm whose `paper.arm` is this.")

    @field_validator("ours")
    @classmethod
    def _row_reference(cls, ours: str) -> str:
        kind, _, row = ours.partition(":")
        if kind not in OURS_KINDS or not row:
            raise ValueError(f"ours {ours!r}: write `<kind>:<row>` with kind one of {', '.join(OURS_KINDS)}")
        return ours


class PaperSection(BaseModel):
    """The paper a reproduction recipe checks: its findings beside ours in the report's "Paper vs ours"."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(description="The paper, e.g. `Wei et al. (2021), Finetuned Language Models ...`.")
    arm: str | None = Field(None, description="This run's sweep arm (set by a variant): picks its claims.")
    claims: list[PaperClaim] = Field(min_length=1)

    def shown(self) -> list[PaperClaim]:
        """The claims of this run: those of no arm, and those of this run's arm."""
        return [c for c in self.claims if c.arm is None or c.arm == self.arm]


class JudgeSpec(BaseModel):
    """The pairwise judge of tuned vs base answers (`eval judge`), run by the eval-tuned stage."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="The judge model; unset: train.model (the base judges).")
    task: str = Field(
        description="The evaluated task whose answers are compared (e.g. gsm8k, NAME/TEMPLATE)."
    )
    chat: bool = Field(True, description="Render the judge prompt with the judge's chat template.")
    batch_size: int = Field(8, ge=1, description="Judge prompts per backend batch.")


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
    pairs: PairsSpec | None = Field(
        None,
        description="Preference pairs sampled from a model and checked by exact answers (`synth pairs`).",
    )
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
    judge: JudgeSpec | None = Field(
        None, description="Judge the tuned model's answers against the base's (needs evaluate.compare_base)."
    )
    commands: list[str] = Field(
        default_factory=list, description="The exact commands that run this recipe (documentation)."
    )
    sweep: SweepSpec | None = None
    paper: PaperSection | None = Field(
        None, description="A reproduction's paper: its numbers and settings, set beside ours in the report."
    )

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
    raw = apply_overrides(load_yaml(path, "recipe"), overrides or {})
    return _validate(raw, path), path


def _validate(raw: dict[str, Any], path: Path) -> Recipe:
    recipe = validate(Recipe, raw, path)
    if recipe.prepare.tokenizer is None:  # the data is tokenized for the model that trains on it
        from ..models.tiny import default_tokenizer

        if recipe.train is None:
            raise InstructkitError(
                f"{path}: prepare.tokenizer is needed when the recipe has no `train` section"
            )
        tokenizer = default_tokenizer(recipe.train.model)
        recipe.prepare = recipe.prepare.model_copy(update={"tokenizer": tokenizer})
    if recipe.mixture_file:
        from ..data.mixture_config import load_mixture_config

        recipe.mixture = load_mixture_config((path.parent / recipe.mixture_file).resolve())
    if recipe.mixture is None and not recipe.sources and recipe.corpus is None and recipe.pairs is None:
        raise InstructkitError(
            f"{path}: a recipe needs `mixture`, `mixture_file`, `sources`, `corpus` or `pairs`"
        )
    if recipe.pairs is not None and (
        recipe.mixture is not None or recipe.sources or recipe.corpus is not None
    ):
        raise InstructkitError(f"{path}: `pairs` replaces `mixture`, `sources` and `corpus`; give only one")
    if recipe.corpus is not None and (recipe.mixture is not None or recipe.sources):
        raise InstructkitError(f"{path}: `corpus` replaces `mixture` and `sources`; give only one")
    _check_corpus(recipe, path)
    _check_prepare_tokenizer(recipe, path)
    _check_paper(recipe, path)
    if recipe.judge is not None and not (recipe.train and recipe.evaluate and recipe.evaluate.compare_base):
        raise InstructkitError(
            f"{path}: `judge` compares tuned with base: it needs `train` and evaluate.compare_base"
        )
    return recipe


def _check_paper(recipe: Recipe, path: Path) -> None:
    """A paper claim must name a row this run can measure: an eval set's shot count, and a base for Δ."""
    if recipe.paper is None:
        return
    arms = sorted({c.arm for c in recipe.paper.claims if c.arm})
    arm = recipe.paper.arm
    if (arm is not None and arm not in arms) or (arm is None and arms and recipe.sweep is None):
        raise InstructkitError(  # else the arm's claims would silently drop out of the report
            f"{path}: paper.arm {arm!r}: give one of the claims' arms ({', '.join(arms) or 'none'})"
        )
    if recipe.train is None and recipe.corpus is not None and recipe.corpus.synthesizer_training is not None:
        return  # rows of the synthesizer's evaluation: datasets, `seen`, `unseen`, `all` (base vs tuned)
    spec = recipe.evaluate
    sets = {f"{s.name}/{k}-shot" for s in (spec.sets if spec else []) for k in s.k_shot}
    names = {s.name for s in (spec.sets if spec else [])}
    for i, claim in enumerate(recipe.paper.shown()):
        kind, _, row = claim.ours.partition(":")
        where = f"{path}: paper.claims[{i}].ours {claim.ours!r}"
        if spec is None or recipe.train is None:
            raise InstructkitError(f"{where}: the recipe needs `train` and `evaluate` to measure it")
        if kind != "tuned" and not spec.compare_base:
            raise InstructkitError(f"{where}: needs the base model evaluated (evaluate.compare_base: true)")
        if row.split("/")[0] in names and row not in sets:
            raise InstructkitError(f"{where}: no such eval row (the sets give {', '.join(sorted(sets))})")


def _check_prepare_tokenizer(recipe: Recipe, path: Path) -> None:
    """Refuse, before any stage runs, a prepare.tokenizer that tokenizes differently from train.model's."""
    from ..models.identity import TokenizerMismatchError, check_tokenizer_fits_model

    if recipe.train is None or recipe.prepare.tokenizer is None:
        return
    chosen = recipe.prepare.chat_template is not None or recipe.corpus is not None  # else the tokenizer's own
    try:
        check_tokenizer_fits_model(
            recipe.prepare.tokenizer, recipe.train.model, chosen, recipe.train.trust_remote_code
        )
    except TokenizerMismatchError as exc:
        raise TokenizerMismatchError(f"{path}: prepare.tokenizer and train.model disagree: {exc}") from None


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
        raw = apply_overrides(base, variant.set)
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
