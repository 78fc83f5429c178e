"""`instructkit run RECIPE`: mixture (or corpus) → prepare → train → evaluate (base and tuned) → report.

Each stage writes into `runs/<name>/<stage>/` and records in `stage.json` the hash of its settings,
of the outside inputs it reads (local files and folders by content, hub ids by the revision the
local HF cache holds: `pipeline_inputs`) and of the stages it reads. A rerun skips every stage whose
hash is unchanged, so changing a setting or an input file reruns exactly the stages downstream of
it, and `--dry-run` names what changed. A stage that did not finish has no `stage.json` and is
redone from scratch; training resumes from its last checkpoint only when that checkpoint was made
under the same stage key, and otherwise sets the old checkpoints aside (`Stage.resume` says which,
in the plan and the log). `name` cannot leave `runs_dir`.

Nothing finished is deleted: when a stage must rerun (a `--set`, a changed input) over a finished
result, that result moves aside to `<stage>.<its hash>/` beside it, and a later run whose hash
matches a kept folder moves it back instead of recomputing it. The plan says which folders a run
writes, keeps and reuses. A variant can also get a run folder of its own (`instructkit run
--run-name NAME` → `runs/<recipe>/NAME/`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_file, write_atomic
from ..errors import InstructkitError
from .recipe import Recipe, run_root
from .stage import (
    KEY_FILE,
    STAGE_FILE,
    Stage,
    cached,
    finished_record,
    hashed_inputs,
    key_record,
    stage_hash,
    unpinned,
    why_rerun,
)


@dataclass
class PlanRow:
    stage: str
    digest: str
    status: str  # cached | run
    estimate: str
    reasons: list[str] = field(default_factory=list)  # why it runs (empty when cached)
    notes: list[str] = field(default_factory=list)  # e.g. unpinned hub inputs
    folders: str = ""  # what happens on disk: which folder is written, kept aside or reused

    @property
    def why(self) -> str:
        """One line for the plan: the reasons it runs, then the notes, then what it does on disk."""
        notes = [f"unpinned, not in the local HF cache: {', '.join(self.notes)}"] if self.notes else []
        return "; ".join(self.reasons + notes + ([self.folders] if self.folders else []))


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
            kept = None if is_cached else reusable(stage_dir, digest)
            reasons = [] if is_cached else _why(stage, stage_dir, hashes)
            status = "cached" if is_cached else "reuse" if kept else "run"
            row = PlanRow(stage.name, digest, status, _safe_estimate(stage), reasons, unpinned(stage))
            row.folders = "" if is_cached else _folders(stage_dir, kept)
            rows.append(row)
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
            kept = None if record is not None else reusable(stage_dir, digest)
            if record is not None:
                log(f"[{stage.name}] cached ({digest})")
            elif kept is not None:
                log(f"[{stage.name}] reused ({digest}): {_folders(stage_dir, kept)}")
                set_aside(stage_dir)
                os.replace(kept, stage_dir)
                record = cached(stage_dir, digest)
            else:
                why = "; ".join(_why(stage, stage_dir, hashes) + [_folders(stage_dir, None)])
                log(f"[{stage.name}] running ({digest}): {why}")
                record = self._run_stage(stage, stage_dir, digest, hashes)
            hashes[stage.name] = digest
            records[stage.name] = record
        return records

    def _run_stage(
        self, stage: Stage, stage_dir: Path, digest: str, upstream: dict[str, str]
    ) -> dict[str, Any]:
        marker = stage_dir / STAGE_FILE
        set_aside(stage_dir)  # a finished result of other settings is kept, never deleted
        stage_dir.mkdir(parents=True, exist_ok=True)
        if stage.resume is not None:  # what the work it leaves unfinished was computed under
            with atomic_file(stage_dir / KEY_FILE) as f:
                json.dump(key_record(stage, upstream), f, indent=2, default=str)
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
        write_atomic(marker, json.dumps(record, indent=2, default=str))
        (stage_dir / KEY_FILE).unlink(missing_ok=True)  # stage.json holds the key now
        return record


def kept_name(stage_dir: Path, digest: str) -> Path:
    """Where a finished result of hash `digest` is kept once another one takes `stage_dir`."""
    return stage_dir.with_name(f"{stage_dir.name}.{digest}")


def reusable(stage_dir: Path, digest: str) -> Path | None:
    """A kept folder finished under exactly this hash, when it can take `stage_dir`'s place.

    Not over unfinished work in `stage_dir` (a training to resume): that is continued or set aside
    by the stage itself.
    """
    kept = kept_name(stage_dir, digest)
    if cached(kept, digest) is None:
        return None
    return kept if not stage_dir.exists() or (stage_dir / STAGE_FILE).is_file() else None


def set_aside(stage_dir: Path) -> Path | None:
    """Move a finished stage folder to `<stage>.<its hash>/` (returned); nothing when it is unfinished."""
    record = finished_record(stage_dir)
    if record is None:
        return None
    target = kept_name(stage_dir, str(record.get("hash")))
    n = 1
    while target.exists():  # the same result kept twice (e.g. copied back by hand): keep both
        target, n = kept_name(stage_dir, f"{record.get('hash')}-{n}"), n + 1
    os.replace(stage_dir, target)
    return target


def _folders(stage_dir: Path, kept: Path | None) -> str:
    """What a run does on disk for a stage that is not cached: writes, keeps aside, moves back."""
    name = stage_dir.name
    old = finished_record(stage_dir)
    aside = f"; the finished {name}/ is kept as {kept_name(stage_dir, old['hash']).name}/" if old else ""
    if kept is not None:
        return f"reuses {kept.name}/ (finished earlier with these settings) as {name}/{aside}"
    return f"writes {name}/{aside}"


def _why(stage: Stage, stage_dir: Path, upstream: dict[str, str]) -> list[str]:
    """Why a stage runs, and for an unfinished resumable one what it does with the work already there."""
    reasons = why_rerun(stage, stage_dir, upstream)
    if stage.resume is None or not stage_dir.is_dir() or (stage_dir / STAGE_FILE).exists():
        return reasons
    note = stage.resume(stage_dir, key_record(stage, upstream))
    return reasons + ([note] if note else [])


def _safe_estimate(stage: Stage) -> str:
    """A stage's size estimate; sources that cannot be read now (e.g. the hub, offline) say so."""
    try:
        return stage.estimate()
    except InstructkitError as exc:
        return f"size unknown: {str(exc).split(':')[0]} ({type(exc).__name__})"


def build_pipeline(recipe: Recipe) -> Pipeline:
    """The stages a recipe names, in order."""
    from . import stages as ps

    root = run_root(recipe)
    stages: list[Stage] = []
    upstream = "mixture" if recipe.mixture is not None else "corpus" if recipe.corpus is not None else None
    if recipe.pairs is not None:  # preference pairs sampled and checked by the pairs stage
        upstream = "pairs"
        stages.append(ps.pairs_stage(recipe))
    if recipe.mixture is not None:
        stages.append(ps.mixture_stage(recipe))
    if recipe.corpus is not None:
        if recipe.corpus.augment and recipe.corpus.synthesizer in ("default", "trained"):
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
    elif recipe.corpus is not None and recipe.corpus.synthesizer_training is not None:
        stages.append(ps.report_stage(recipe))  # the synthesizer's evaluation and the corpus it wrote
    return Pipeline(recipe, stages, root)
