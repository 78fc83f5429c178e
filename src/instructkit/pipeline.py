"""`instructkit run RECIPE`: mixture (or corpus) → prepare → train → evaluate (base and tuned) → report.

Each stage writes into `runs/<name>/<stage>/` and records in `stage.json` the hash of its settings,
of the outside inputs it reads (local files and folders by content, hub ids by the revision the
local HF cache holds: `pipeline_inputs`) and of the stages it reads. A rerun skips every stage whose
hash is unchanged, so changing a setting or an input file reruns exactly the stages downstream of
it, and `--dry-run` names what changed. A stage that did not finish has no `stage.json` and is
redone from scratch (training resumes from its last checkpoint). `name` cannot leave `runs_dir`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import __version__
from .data.mixture import MixtureConfig
from .data.prepare_config import PrepareSettings
from .errors import InstructkitError
from .pipeline_inputs import MISSING, UNPINNED
from .train.config import TrainSettings

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
STAGE_FILE = "stage.json"


class CorpusSpec(BaseModel):
    """The corpus stage: the same raw texts as a pretraining corpus, instruction-augmented or plain."""

    model_config = ConfigDict(extra="forbid")

    raw: str = Field(
        "generated", description="`generated` paragraphs (they carry gold questions) or a text file."
    )
    texts: int = Field(200, ge=2, description="Raw texts in the corpus, held-out ones included.")
    heldout: int = Field(
        40, ge=0, description="Texts never given pairs; their questions make the `heldout_qa` eval sets."
    )
    augment: bool = Field(
        True, description="Add synthesized instruction–response pairs (else raw texts only)."
    )
    synthesizer: str = Field(
        "default", description="`default`: train the tiny synthesizer (stage `synthesizer`); or a model path."
    )
    size: Literal["test", "small"] = Field("small", description="Size of the default synthesizer.")
    max_length: int = Field(512, ge=16, description="Tokens per corpus document (texts concatenated M-shot).")
    rounds: int = Field(2, ge=1, description="Texts per multi-round synthesizer chain.")


class EvalSetSpec(BaseModel):
    """One group of evaluations: catalog tasks (which templates, which shots), or held-out corpus QA."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Label in the report, e.g. heldout_rows.")
    kind: Literal["catalog", "heldout_qa"] = Field(
        "catalog", description="heldout_qa: zero-shot questions about the corpus's held-out texts."
    )
    tasks: list[str] = Field(
        default_factory=list, description="Task names; `@train` means the mixture's tasks."
    )
    clusters: list[str] = Field(default_factory=list, description="Every catalog task of these clusters.")
    templates: Literal["train", "heldout", "eval"] = Field(
        "eval",
        description="train: templates seen in training; heldout: the task's held-out ones; eval: the task's default.",
    )
    k_shot: list[int] = Field(default_factory=lambda: [0], description="Shots to evaluate (one run each).")
    cot: bool = False
    split: str | None = Field(None, description="Task split to evaluate (default: each task's eval split).")
    limit: int | None = Field(100, description="Rows per task and template (None: all).")


class EvaluateSpec(BaseModel):
    """Evaluation of the base and the tuned model on catalog sets and benchmarks."""

    model_config = ConfigDict(extra="forbid")

    sets: list[EvalSetSpec] = Field(default_factory=list)
    suite: str | None = Field(None, description="A benchmark suite: flan, tulu, or a suite YAML path.")
    benchmarks: list[str] = Field(
        default_factory=list, description="Benchmark specs, e.g. piqa, gsm8k:cot=true."
    )
    data_dir: str | None = Field(
        None, description="Local benchmark files (default: ../shared/data when present)."
    )
    benchmark_limit: int | None = Field(50, description="Documents per benchmark task (None: all).")
    compare_base: bool = Field(True, description="Also evaluate the untrained base model.")
    batch_size: int = Field(16, ge=1)
    prompt_style: Literal["chat", "base"] = Field(
        "chat", description="chat: prompts through the chat template."
    )


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
        None, description="`instructkit train` settings (data/output_dir set by the run); absent: no training."
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
        from .train.models import default_tokenizer

        if recipe.train is None:
            raise InstructkitError(f"{path}: prepare.tokenizer is needed when the recipe has no `train` section")
        tokenizer = default_tokenizer(recipe.train.model)
        recipe.prepare = recipe.prepare.model_copy(update={"tokenizer": tokenizer})
    if recipe.mixture_file:
        from .data.mixture import load_mixture_config

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


# ---------------------------------------------------------------- stages


@dataclass
class Stage:
    """One cached step: its settings and outside inputs (hashed), the stages it reads, and its run function.

    `inputs` returns the stage's outside inputs (`pipeline_inputs`: label → content digest or hub
    revision). `section` and `aliases` name where each setting lives in the recipe, so a dry-run
    can say `setting train.epochs changed`.
    """

    name: str
    settings: dict[str, Any]
    needs: list[str]
    run: Callable[[Path, dict[str, Path]], dict[str, Any]]
    estimate: Callable[[], str] = field(default=lambda: "")
    inputs: Callable[[], dict[str, str]] = field(default=dict)
    section: str = ""
    aliases: dict[str, str] = field(default_factory=dict)
    _digests: dict[str, str] | None = field(default=None, init=False, repr=False)

    def input_digests(self) -> dict[str, str]:
        """The outside inputs' digests, computed once per stage object (one `stat` per unchanged file)."""
        if self._digests is None:
            try:
                self._digests = dict(self.inputs())
            except InstructkitError as exc:  # the stage itself will fail with the full message
                self._digests = {f"inputs unresolved ({str(exc).split(': ')[0]})": MISSING}
        return self._digests

    def setting_path(self, key: str) -> str:
        """Where a (dotted) settings key lives in the recipe, e.g. `epochs` → `train.epochs`."""
        head, _, rest = key.partition(".")
        base = self.aliases.get(head) or (f"{self.section}.{head}" if self.section else head)
        return f"{base}.{rest}" if rest else base


def stage_hash(stage: Stage, upstream: dict[str, str]) -> str:
    """Hash of the stage's settings, its outside inputs' digests, its upstream hashes and the version."""
    payload = json.dumps(_hashed(stage, upstream), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _hashed(stage: Stage, upstream: dict[str, str]) -> dict[str, Any]:
    """Everything a stage's result depends on (recorded in stage.json to explain the next rerun)."""
    return {
        "settings": stage.settings,
        "inputs": stage.input_digests(),
        "needs": {n: upstream[n] for n in stage.needs},
        "version": __version__,
    }


def cached(stage_dir: Path, digest: str) -> dict[str, Any] | None:
    """The finished stage's record when its hash matches, else None."""
    record = _record(stage_dir)
    return record if record is not None and record.get("hash") == digest else None


def _record(stage_dir: Path) -> dict[str, Any] | None:
    marker = stage_dir / STAGE_FILE
    return json.loads(marker.read_text()) if marker.is_file() else None


def why_rerun(stage: Stage, stage_dir: Path, upstream: dict[str, str]) -> list[str]:
    """Why a stage whose hash changed must run: each changed input, setting and upstream stage."""
    record = _record(stage_dir)
    if record is None:
        return ["unfinished (no stage.json)" if stage_dir.exists() else "not run yet"]
    if "inputs" not in record:
        return ["recorded before inputs were fingerprinted"]
    now = _hashed(stage, upstream)
    reasons = _input_changes(record["inputs"], now["inputs"])
    old_settings, new_settings = _flatten(record.get("settings", {})), _flatten(now["settings"])
    for key in sorted(old_settings.keys() | new_settings.keys()):
        if old_settings.get(key, _ABSENT) != new_settings.get(key, _ABSENT):
            reasons.append(f"setting {stage.setting_path(key)} changed")
    old_needs = record.get("needs", {})
    reasons += [f"upstream {n} changed" for n in stage.needs if old_needs.get(n) != now["needs"][n]]
    if record.get("version") != __version__:
        reasons.append(f"toolkit version changed ({record.get('version')} → {__version__})")
    return reasons or ["hash changed"]


_ABSENT = object()


def _input_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    reasons = []
    for label in sorted(old.keys() | new.keys()):
        if label not in old:
            reasons.append(f"{label} added")
        elif label not in new:
            reasons.append(f"{label} removed")
        elif old[label] != new[label]:
            what = "revision" if new[label].startswith("hub:") else "content"
            reasons.append(f"{label} changed ({what})")
    return reasons


def _flatten(settings: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys (lists stay whole), so a reason names the one changed field."""
    if not isinstance(settings, dict) or (prefix and not settings):
        return {prefix: json.loads(json.dumps(settings, default=str))}
    out: dict[str, Any] = {}
    for key, value in settings.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def unpinned(stage: Stage) -> list[str]:
    """Labels of hub inputs the local HF cache cannot pin (their content is not checked)."""
    return [label for label, digest in stage.input_digests().items() if digest == UNPINNED]


@dataclass
class PlanRow:
    stage: str
    digest: str
    status: str  # cached | run
    estimate: str
    reasons: list[str] = field(default_factory=list)  # why it runs (empty when cached)
    notes: list[str] = field(default_factory=list)  # e.g. unpinned hub inputs

    @property
    def why(self) -> str:
        """One line for the plan: the reasons it runs, then the notes."""
        notes = [f"unpinned, not in the local HF cache: {', '.join(self.notes)}"] if self.notes else []
        return "; ".join(self.reasons + notes)


class Pipeline:
    """Runs the stages of a recipe in order, skipping those whose hash is unchanged."""

    def __init__(self, recipe: Recipe, stages: list[Stage], root: Path):
        self.recipe, self.stages, self.root = recipe, stages, root

    def plan(self) -> list[PlanRow]:
        """What a run would do: each stage's hash, whether it is cached, and why it would run."""
        hashes: dict[str, str] = {}
        rows = []
        for stage in self.stages:
            digest = stage_hash(stage, hashes)
            stage_dir = self.root / stage.name
            is_cached = cached(stage_dir, digest) is not None
            reasons = [] if is_cached else why_rerun(stage, stage_dir, hashes)
            status = "cached" if is_cached else "run"
            rows.append(PlanRow(stage.name, digest, status, _safe_estimate(stage), reasons, unpinned(stage)))
            hashes[stage.name] = digest
        return rows

    def run(self, log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
        """Run every stage not cached; returns each stage's record (summary, seconds, hash)."""
        hashes: dict[str, str] = {}
        records: dict[str, dict[str, Any]] = {}
        for stage in self.stages:
            digest = stage_hash(stage, hashes)
            stage_dir = self.root / stage.name
            record = cached(stage_dir, digest)
            if record is not None:
                log(f"[{stage.name}] cached ({digest})")
            else:
                why = "; ".join(why_rerun(stage, stage_dir, hashes))
                log(f"[{stage.name}] running ({digest}): {why}")
                record = self._run_stage(stage, stage_dir, digest, hashes)
            hashes[stage.name] = digest
            records[stage.name] = record
        return records

    def _run_stage(
        self, stage: Stage, stage_dir: Path, digest: str, upstream: dict[str, str]
    ) -> dict[str, Any]:
        marker = stage_dir / STAGE_FILE
        if marker.exists():  # settings changed: the old result is stale
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        inputs = {n: self.root / n for n in stage.needs}
        start = time.perf_counter()
        summary = stage.run(stage_dir, inputs)
        record = {
            "stage": stage.name,
            "hash": digest,
            "seconds": round(time.perf_counter() - start, 2),
            "summary": summary,
            **_hashed(stage, upstream),
        }
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str))
        tmp.replace(marker)
        return record


def _safe_estimate(stage: Stage) -> str:
    """A stage's size estimate; sources that cannot be read now (e.g. the hub, offline) say so."""
    try:
        return stage.estimate()
    except InstructkitError as exc:
        return f"size unknown: {str(exc).split(':')[0]} ({type(exc).__name__})"


def build_pipeline(recipe: Recipe) -> Pipeline:
    """The stages a recipe names, in order."""
    from . import pipeline_stages as ps

    root = run_root(recipe)
    stages: list[Stage] = []
    upstream = "mixture" if recipe.mixture is not None else "corpus" if recipe.corpus is not None else None
    if recipe.mixture is not None:
        stages.append(ps.mixture_stage(recipe))
    if recipe.corpus is not None:
        if recipe.corpus.augment and recipe.corpus.synthesizer == "default":
            stages.append(ps.synthesizer_stage(recipe))
        stages.append(ps.corpus_stage(recipe))
    stages.append(ps.prepare_stage(recipe, upstream))
    if recipe.train is not None:
        stages.append(ps.train_stage(recipe))
    if recipe.evaluate is not None and recipe.train is not None:
        if recipe.evaluate.compare_base:
            stages.append(ps.eval_stage(recipe, "base"))
        stages.append(ps.eval_stage(recipe, "tuned"))
        stages.append(ps.report_stage(recipe))
    return Pipeline(recipe, stages, root)
