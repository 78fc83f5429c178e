"""Checkpoints that survive SIGKILL and say what they were made under.

`output_dir/.staging/checkpoint-N` is where the Trainer writes; only when every file (weights,
optimizer, scheduler, RNG states, trainer state) is there does the folder move to
`output_dir/checkpoint-N` with `os.replace`. A run killed mid-write leaves only staging debris,
which resume deletes, so the last `checkpoint-N` in `output_dir` is always complete.

Each checkpoint also carries `provenance.json`: the identity of the run that wrote it (its settings
as resolved, minus where it writes and how it logs; its data and model by content; the pipeline's
stage key when a pipeline ran it). A resume compares it with the new run's identity, so a run is
never continued with other settings or data without the difference being named; checkpoints that
cannot be continued are moved to `output_dir/superseded/`, never deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from ..atomic import atomic_file
from ..fingerprint import path_digest
from ..jsonl import text_lines
from ..models.adapters import ADAPTER_CONFIG, BASE_FILE

STAGING = ".staging"
SUPERSEDED = "superseded"  # checkpoints of another run, set aside instead of deleted
PROVENANCE = "provenance.json"  # in each checkpoint: the identity of the run that wrote it
CURRENT = ".provenance.json"  # in output_dir: the running run's identity, copied into each checkpoint
# TrainConfig fields that do not change what a run computes: where it reads and writes (its data
# counts by content instead), what it is allowed to do, how it reports and how often it saves. The
# model counts by identity, the optimizer fields and the precision as resolved (a preset and the
# same values given explicitly are one run).
NOT_IDENTITY = frozenset(
    {
        "data",
        "output_dir",
        "resume",
        "overwrite",
        "force_resume",
        "allow_base_mismatch",
        "progress",
        "report_to",
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "dataloader_num_workers",
        "model",
        "preset",
        "optimizer",
        "learning_rate",
        "lr_scheduler",
        "warmup_ratio",
        "weight_decay",
        "precision",
    }
)
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
    """Move a fully written checkpoint folder into place atomically (same filesystem rename).

    The run's identity (`CURRENT` in the output folder) goes in first, so a published checkpoint
    always says what it was made under; so does a LoRA run's base record (`BASE_FILE`), so an adapter
    checkpoint loaded as a model is checked against its base like the final adapter.
    """
    current = final.parent / CURRENT
    if current.is_file():
        shutil.copyfile(current, staged / PROVENANCE)
    base = final.parent / BASE_FILE
    if base.is_file() and (staged / ADAPTER_CONFIG).is_file():
        shutil.copyfile(base, staged / BASE_FILE)
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
    keep = [line for line in text_lines(path) if line and json.loads(line).get("step", 0) <= max_step]
    with atomic_file(path) as f:
        f.write("".join(line + "\n" for line in keep))


def run_identity(config) -> dict[str, Any]:
    """What a run computes from: its settings (optimizer and precision resolved), its data and model by content.

    The run's length counts only where it shapes the steps: `epochs` not when `max_steps` is set
    (it is ignored), neither under a constant learning rate without warm-up (a longer run's first
    steps are this run's steps, so extending it resumes exactly).
    """
    from .setup import resolve_precision

    optimizer = config.optimizer_settings()
    settings = config.model_dump(mode="json", exclude=set(NOT_IDENTITY))
    settings.update(optimizer.model_dump(mode="json"))
    settings["precision"] = resolve_precision(config.precision)
    if config.max_steps > 0:
        settings.pop("epochs")
    if optimizer.lr_scheduler == "constant" and optimizer.warmup_ratio == 0:
        settings.pop("epochs", None)
        settings.pop("max_steps")
    return {"settings": settings, "data": data_identity(config.data), "model": model_identity(config.model)}


def data_identity(path: str | Path) -> str:
    """A prepared data folder by content (the `cache-*` files `datasets` may add beside it do not count)."""
    return "sha256:" + path_digest(path, keep=lambda relative: not Path(relative).name.startswith("cache-"))


def model_identity(ref: str) -> str:
    """A model by content, as the pipeline keys its inputs: a `tiny:` preset's name, a `pretrained:`
    model's fetched folder (`content_digest`), else what `source_digest` reads (a local folder's or
    file's content, an adapter's together with its base's, a cached hub snapshot's files); a hub id
    not in the local cache is `hub <id>@unpinned`."""
    from ..models.identity import source_digest
    from ..models.pretrained import content_digest, is_pretrained_ref
    from ..models.tiny import is_tiny

    if is_tiny(ref):
        return ref
    if is_pretrained_ref(ref):
        return content_digest(ref)
    digest = source_digest(ref)
    return f"sha256:{digest}" if digest else f"hub {ref}@unpinned"


def record_run(output_dir: str | Path, identity: dict[str, Any], **extra: Any) -> None:
    """Write the running run's identity (plus e.g. its stage key) where `publish` copies it from."""
    write_json_atomic(Path(output_dir) / CURRENT, {"train": identity, **extra})


def read_provenance(checkpoint: Path) -> dict[str, Any] | None:
    """What a checkpoint records it was made under, or None (written before this record existed)."""
    try:
        record = json.loads((checkpoint / PROVENANCE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def resume_changes(checkpoint: Path, identity: dict[str, Any]) -> list[str]:
    """Why `checkpoint` cannot be continued by a run with `identity`, in words; empty when it can."""
    record = read_provenance(checkpoint)
    if record is None or not isinstance(record.get("train"), dict):
        return [
            f"{checkpoint.name} has no record of the settings, data and model it was made with (unknown provenance)"
        ]
    return identity_changes(record["train"], identity, checkpoint.name)


def identity_changes(old: dict[str, Any], new: dict[str, Any], since: str) -> list[str]:
    """Each setting, the data and the model that differ between two run identities, named."""
    changes = []
    before, after = old.get("settings", {}), new["settings"]
    for key in sorted(before.keys() | after.keys()):
        if before.get(key, _ABSENT) != after.get(key, _ABSENT):
            shown = f"{_show(before.get(key, _ABSENT))} → {_show(after.get(key, _ABSENT))}"
            changes.append(f"{key} changed since {since} ({shown})")
    if old.get("data") != new["data"]:
        changes.append(f"training data changed since {since} (content)")
    if old.get("model") != new["model"]:
        changes.append(f"model changed since {since} ({_show(old.get('model'))} → {_show(new['model'])})")
    return changes


_ABSENT = object()


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "not recorded"
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def set_aside(output_dir: str | Path) -> list[Path]:
    """Move every checkpoint (and the metrics log) of `output_dir` to `superseded/`, named with the time."""
    root = Path(output_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    shutil.rmtree(root / STAGING, ignore_errors=True)
    for item in [*checkpoints(root), root / "metrics.jsonl"]:
        if not item.exists():
            continue
        target = _free_name(root / SUPERSEDED, f"{item.stem}-{stamp}{item.suffix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(item, target)
        moved.append(target)
    return moved


def _free_name(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/name.1`, `.2`, … when taken (two set-asides within one second)."""
    candidate, n = folder / name, 0
    while candidate.exists():
        n += 1
        candidate = folder / f"{name}.{n}"
    return candidate


def without_tied_keys(model, load_result):
    """`load_state_dict`'s result minus missing keys that name a tied copy of a loaded weight.

    A checkpoint of a model with tied embeddings stores the shared tensor once (e.g. under
    `model.embed_tokens.weight`), so loading it with `strict=False` reports `lm_head.weight` missing
    although it is the very same Parameter, filled when its twin loads. A missing key stays only when
    no other name of that Parameter was loaded: a weight really absent is still reported.
    """
    missing = set(load_result.missing_keys)
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    tied = {n for group in names.values() if any(g not in missing for g in group) for n in group}
    return load_result._replace(missing_keys=[k for k in load_result.missing_keys if k not in tied])
