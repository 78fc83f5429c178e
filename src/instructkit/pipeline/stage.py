"""One cached pipeline step and how it is keyed: settings, outside inputs by content, upstream hashes.

`stage.json` records what a finished stage was computed from, so a rerun skips an unchanged stage
and `--dry-run` says exactly why a stage would run (which setting, input file or upstream changed).
A stage that continues unfinished work (training) keeps its key in `stage-key.json` while it runs
and may continue that work only under the same key (`Stage.resume`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import InstructkitError
from ..fingerprint import sha256_hex
from .inputs import MISSING, UNPINNED

STAGE_FILE = "stage.json"
KEY_FILE = "stage-key.json"  # the key an unfinished resumable stage is being computed under


@dataclass
class Stage:
    """One cached step: its settings and outside inputs (hashed), the stages it reads, and its run function.

    `inputs` returns the stage's outside inputs (`pipeline_inputs`: label → content digest or hub
    revision). `section` and `aliases` name where each setting lives in the recipe, so a dry-run
    can say `setting train.epochs changed`. `resume`, for a stage that continues unfinished work,
    says from its folder and current key (`key_record`) what a run would do with what is there
    (`resume from checkpoint-4`, `start over: … since checkpoint-4`; empty when nothing is there).
    """

    name: str
    settings: dict[str, Any]
    needs: list[str]
    run: Callable[[Path, dict[str, Path]], dict[str, Any]]
    estimate: Callable[[], str] = field(default=lambda: "")
    inputs: Callable[[], dict[str, str]] = field(default=dict)
    section: str = ""
    aliases: dict[str, str] = field(default_factory=dict)
    resume: Callable[[Path, dict[str, Any]], str] | None = None
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
    payload = json.dumps(hashed_inputs(stage, upstream), sort_keys=True, default=str)
    return sha256_hex(payload)[:16]


def hashed_inputs(stage: Stage, upstream: dict[str, str]) -> dict[str, Any]:
    """Everything a stage's result depends on (recorded in stage.json to explain the next rerun)."""
    return {
        "settings": stage.settings,
        "inputs": stage.input_digests(),
        "needs": {n: upstream[n] for n in stage.needs},
        "version": __version__,
    }


def key_record(stage: Stage, upstream: dict[str, str]) -> dict[str, Any]:
    """The stage's key (`hash`) with everything it hashes, as `stage.json` and `stage-key.json` hold it."""
    return {"hash": stage_hash(stage, upstream), **hashed_inputs(stage, upstream)}


def cached(stage_dir: Path, digest: str) -> dict[str, Any] | None:
    """The finished stage's record when its hash matches, else None."""
    record = finished_record(stage_dir)
    return record if record is not None and record.get("hash") == digest else None


def finished_record(stage_dir: Path) -> dict[str, Any] | None:
    """The `stage.json` of a finished stage folder, or None."""
    marker = stage_dir / STAGE_FILE
    return json.loads(marker.read_text()) if marker.is_file() else None


def why_rerun(stage: Stage, stage_dir: Path, upstream: dict[str, str]) -> list[str]:
    """Why a stage whose hash changed must run: each changed input, setting and upstream stage."""
    record = finished_record(stage_dir)
    if record is None:
        return ["unfinished (no stage.json)" if stage_dir.exists() else "not run yet"]
    if "inputs" not in record:
        return ["recorded before inputs were fingerprinted"]
    return key_changes(stage, record, hashed_inputs(stage, upstream)) or ["hash changed"]


def key_changes(stage: Stage, old: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Each outside input, setting and upstream stage that differs between a recorded key and `now`."""
    reasons = _input_changes(old.get("inputs", {}), now["inputs"])
    old_settings, new_settings = _flatten(old.get("settings", {})), _flatten(now["settings"])
    for key in sorted(old_settings.keys() | new_settings.keys()):
        if old_settings.get(key, _ABSENT) != new_settings.get(key, _ABSENT):
            reasons.append(f"setting {stage.setting_path(key)} changed")
    old_needs = old.get("needs", {})
    reasons += [f"upstream {n} changed" for n in stage.needs if old_needs.get(n) != now["needs"][n]]
    if old.get("version") != now["version"]:
        reasons.append(f"toolkit version changed ({old.get('version')} → {now['version']})")
    return reasons


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
