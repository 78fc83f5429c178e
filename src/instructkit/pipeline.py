"""`instructkit run RECIPE`: mixture (or corpus) → prepare → train → evaluate (base and tuned) → report.

Each stage writes into `runs/<name>/<stage>/` and records in `stage.json` the hash of its settings,
of the outside inputs it reads (local files and folders by content, hub ids by the revision the
local HF cache holds: `pipeline_inputs`) and of the stages it reads. A rerun skips every stage whose
hash is unchanged, so changing a setting or an input file reruns exactly the stages downstream of
it, and `--dry-run` names what changed. A stage that did not finish has no `stage.json` and is
redone from scratch (training resumes from its last checkpoint). `name` cannot leave `runs_dir`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InstructkitError
from .recipe import Recipe, run_root
from .stage import STAGE_FILE, Stage, cached, hashed_inputs, stage_hash, unpinned, why_rerun


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
            **hashed_inputs(stage, upstream),
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
