"""Shards of a large corpus: planned on whole chains, written atomically, skipped when already finished.

A shard's final file appears only through `os.replace` of a fully written temporary file, so a
crash leaves either nothing or a complete shard; a rerun treats every existing final file as done.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_file
from ..errors import InstructkitError


@dataclass(frozen=True)
class Shard:
    """Shard `index` covers chains[first_chain:last_chain] (whole chains, so rounds never cross shards)."""

    index: int
    first_chain: int
    last_chain: int


def plan_shards(chains: list[list[int]], shard_size: int) -> list[Shard]:
    """Group consecutive chains into shards of at least `shard_size` texts (the last may be smaller)."""
    shards: list[Shard] = []
    first, texts = 0, 0
    for i, chain in enumerate(chains):
        texts += len(chain)
        if texts >= shard_size:
            shards.append(Shard(len(shards), first, i + 1))
            first, texts = i + 1, 0
    if first < len(chains):
        shards.append(Shard(len(shards), first, len(chains)))
    return shards


def shard_path(out: Path, index: int) -> Path:
    return out / "shards" / f"shard-{index:05d}.jsonl"


def is_done(out: Path, index: int) -> bool:
    """A shard is finished exactly when its final file exists (it only ever appears complete)."""
    return shard_path(out, index).is_file()


def write_atomic(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write JSON lines to a temporary file in the same directory, fsync, then rename into place."""
    with atomic_file(path) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def finished_records(out: Path) -> list[dict[str, Any]]:
    """Every record of every finished shard, in shard order."""
    return [r for p in sorted((out / "shards").glob("shard-*.jsonl")) for r in read_jsonl(p)]


def check_plan(out: Path, plan: dict[str, Any], run: dict[str, Any], made: str) -> None:
    """Write `out/config.json` on the first run; refuse a rerun whose plan settings differ, naming them
    (shards made under other settings must never be mixed with new ones)."""
    path = out / "config.json"
    if path.is_file():
        old = json.loads(path.read_text()).get("plan", {})
        changed = sorted(k for k in plan if old.get(k) != plan[k])
        if changed:
            raise InstructkitError(
                f"{out} holds {made} made with other settings ({', '.join(changed)} differ); use a new --out folder"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"plan": plan, "run": run}, indent=2))
