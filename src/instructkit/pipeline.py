"""`instructkit run RECIPE`: mixture (or corpus) → prepare → train → evaluate (base and tuned) → report.

Each stage writes into `runs/<name>/<stage>/` and records the hash of its own settings plus the
hashes of the stages it reads (`stage.json`). A rerun skips every stage whose hash is unchanged,
so changing a setting reruns exactly the stages downstream of it. A stage that did not finish has
no `stage.json` and is redone from scratch (training resumes from its last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import __version__
from .data.mixture import MixtureConfig
from .errors import InstructkitError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
STAGE_FILE = "stage.json"


class PrepareSpec(BaseModel):
    """Settings of the prepare stage (see `instructkit data prepare --help`)."""

    model_config = ConfigDict(extra="forbid")

    tokenizer: str = Field(
        "tiny:micro", description="Tokenizer path or hub id; tiny[:preset] trains a BPE on the data."
    )
    max_length: int = Field(512, ge=8, description="Token limit of one example and of one pack.")
    pack: bool = Field(True, description="Pack with global best-fit decreasing.")
    chat_template: str | None = Field(
        None, description="Built-in name or Jinja; default the tokenizer's own."
    )
    loss_on: Literal["assistant", "last_assistant", "all"] = "assistant"
    overlong: Literal["truncate", "drop", "split"] = "truncate"
    num_proc: int = Field(1, ge=1)


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

    label: str
    set: dict[str, Any] = Field(default_factory=dict)


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

    name: str
    description: str = ""
    seed: int = 0
    runs_dir: str = "runs"
    mixture: MixtureConfig | None = None
    corpus: CorpusSpec | None = Field(None, description="A pretraining corpus instead of a mixture.")
    mixture_file: str | None = Field(None, description="A mixture YAML instead of an inline `mixture`.")
    sources: list[str] = Field(
        default_factory=list, description="Prepared-from-files data instead of a mixture."
    )
    prepare: PrepareSpec = Field(default_factory=PrepareSpec)
    train: dict[str, Any] = Field(
        default_factory=dict, description="TrainConfig fields (data/output_dir are set by the run)."
    )
    evaluate: EvaluateSpec | None = None
    commands: list[str] = Field(
        default_factory=list, description="The exact commands that run this recipe (documentation)."
    )
    sweep: SweepSpec | None = None


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
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InstructkitError(f"{path}: {problems}") from None
    if recipe.mixture_file:
        from .data.mixture import load_mixture_config

        recipe.mixture = load_mixture_config((path.parent / recipe.mixture_file).resolve())
    if recipe.mixture is None and not recipe.sources and recipe.corpus is None:
        raise InstructkitError(f"{path}: a recipe needs `mixture`, `mixture_file`, `sources` or `corpus`")
    if recipe.corpus is not None and (recipe.mixture is not None or recipe.sources):
        raise InstructkitError(f"{path}: `corpus` replaces `mixture` and `sources`; give only one")
    _check_corpus(recipe, path)
    return recipe


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
    """One cached step: its settings (hashed), the stages it reads, and the function that runs it."""

    name: str
    settings: dict[str, Any]
    needs: list[str]
    run: Callable[[Path, dict[str, Path]], dict[str, Any]]
    estimate: Callable[[], str] = field(default=lambda: "")


def stage_hash(stage: Stage, upstream: dict[str, str]) -> str:
    """Hash of the stage's settings and its inputs' hashes (and the toolkit version)."""
    payload = json.dumps(
        {"settings": stage.settings, "needs": {n: upstream[n] for n in stage.needs}, "version": __version__},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cached(stage_dir: Path, digest: str) -> dict[str, Any] | None:
    """The finished stage's record when its hash matches, else None."""
    marker = stage_dir / STAGE_FILE
    if not marker.is_file():
        return None
    record = json.loads(marker.read_text())
    return record if record.get("hash") == digest else None


@dataclass
class PlanRow:
    stage: str
    digest: str
    status: str  # cached | run
    estimate: str


class Pipeline:
    """Runs the stages of a recipe in order, skipping those whose hash is unchanged."""

    def __init__(self, recipe: Recipe, stages: list[Stage], root: Path):
        self.recipe, self.stages, self.root = recipe, stages, root

    def plan(self) -> list[PlanRow]:
        """What a run would do: each stage's hash and whether it is cached."""
        hashes: dict[str, str] = {}
        rows = []
        for stage in self.stages:
            digest = stage_hash(stage, hashes)
            hashes[stage.name] = digest
            status = "cached" if cached(self.root / stage.name, digest) else "run"
            rows.append(PlanRow(stage.name, digest, status, _safe_estimate(stage)))
        return rows

    def run(self, log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
        """Run every stage not cached; returns each stage's record (summary, seconds, hash)."""
        hashes: dict[str, str] = {}
        records: dict[str, dict[str, Any]] = {}
        for stage in self.stages:
            digest = stage_hash(stage, hashes)
            hashes[stage.name] = digest
            stage_dir = self.root / stage.name
            record = cached(stage_dir, digest)
            if record is not None:
                log(f"[{stage.name}] cached ({digest})")
            else:
                record = self._run_stage(stage, stage_dir, digest, log)
            records[stage.name] = record
        return records

    def _run_stage(
        self, stage: Stage, stage_dir: Path, digest: str, log: Callable[[str], None]
    ) -> dict[str, Any]:
        log(f"[{stage.name}] running ({digest})")
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
            "settings": stage.settings,
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

    root = Path(recipe.runs_dir) / recipe.name
    stages: list[Stage] = []
    upstream = "mixture" if recipe.mixture is not None else "corpus" if recipe.corpus is not None else None
    if recipe.mixture is not None:
        stages.append(ps.mixture_stage(recipe))
    if recipe.corpus is not None:
        if recipe.corpus.augment and recipe.corpus.synthesizer == "default":
            stages.append(ps.synthesizer_stage(recipe))
        stages.append(ps.corpus_stage(recipe))
    stages.append(ps.prepare_stage(recipe, upstream))
    if recipe.train:
        stages.append(ps.train_stage(recipe))
    if recipe.evaluate is not None and recipe.train:
        if recipe.evaluate.compare_base:
            stages.append(ps.eval_stage(recipe, "base"))
        stages.append(ps.eval_stage(recipe, "tuned"))
        stages.append(ps.report_stage(recipe))
    return Pipeline(recipe, stages, root)
