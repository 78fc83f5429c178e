"""Checkpoints that survive SIGKILL: written in a staging folder, then renamed into place in one step.

`output_dir/.staging/checkpoint-N` is where the Trainer writes; only when every file (weights,
optimizer, scheduler, RNG states, trainer state) is there does the folder move to
`output_dir/checkpoint-N` with `os.replace`. A run killed mid-write leaves only staging debris,
which resume deletes, so the last `checkpoint-N` in `output_dir` is always complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ..atomic import atomic_file

STAGING = ".staging"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Files a complete Trainer checkpoint must hold (besides weights, whose name depends on the model).
REQUIRED = ("trainer_state.json",)


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoint folders in `output_dir`, oldest step first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def is_complete(checkpoint: Path) -> bool:
    """A checkpoint is usable when its trainer state is there (it is written last)."""
    return all((checkpoint / name).is_file() for name in REQUIRED)


def last_good_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    good = [c for c in checkpoints(output_dir) if is_complete(c)]
    return good[-1] if good else None


def checkpoint_step(checkpoint: Path) -> int:
    """The optimizer step a checkpoint folder was written at."""
    match = _CHECKPOINT.match(checkpoint.name)
    if match is None:
        raise ValueError(f"{checkpoint} is not a checkpoint-N folder")
    return int(match.group(1))


def clean_incomplete(output_dir: str | Path) -> None:
    """Remove staging debris and any checkpoint folder missing its trainer state."""
    root = Path(output_dir)
    shutil.rmtree(root / STAGING, ignore_errors=True)
    for c in checkpoints(root):
        if not is_complete(c):
            shutil.rmtree(c, ignore_errors=True)


def publish(staged: Path, final: Path) -> None:
    """Move a fully written checkpoint folder into place atomically (same filesystem rename)."""
    if final.exists():  # the same step saved again (e.g. final step after a resumed save)
        shutil.rmtree(final)
    os.replace(staged, final)
    _fsync_dir(final.parent)
    with contextlib.suppress(OSError):  # only when empty; resume removes any leftovers
        staged.parent.rmdir()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to a temporary file and rename it over `path`, so readers never see half a file."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)


def truncate_jsonl(path: str | Path, max_step: int) -> None:
    """Drop metrics rows logged after `max_step` (they belong to the part of a run that is redone on resume)."""
    path = Path(path)
    if not path.exists():
        return
    keep = [
        line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= max_step
    ]
    with atomic_file(path) as f:
        f.write("".join(line + "\n" for line in keep))
