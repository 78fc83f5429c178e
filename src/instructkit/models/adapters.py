"""The base a LoRA adapter was trained on, recorded by content and checked wherever it is loaded again.

An adapter is a difference from one set of base weights; on other weights it computes something
nobody trained. `train` writes `instructkit_base.json` beside `adapter_config.json`:

    {"version": 1, "reference": "pretrained:smollm2-135m-instruct",   # the base as the user named it
     "path": "/…/models/smollm2-135m-instruct",                        # what adapter_config.json names
     "digest": "<source_digest of that base>"}

Loading the adapter for evaluation or further training compares that digest with the digest of the
base `adapter_config.json` points at now, and refuses a difference naming both, unless
`allow_base_mismatch` is set: then the mismatch is returned as a warning for the caller to show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InstructkitError
from .identity import source_digest, state_dict_digest

BASE_FILE = "instructkit_base.json"
ADAPTER_CONFIG = "adapter_config.json"
RECORD_VERSION = 1


class AdapterBaseMismatchError(InstructkitError):
    """An adapter was about to be loaded onto a base other than the one it was trained on."""


def adapter_folder(source: str | Path) -> Path | None:
    """The folder of a PEFT adapter (`pretrained:` references resolved), or None for anything else."""
    from .pretrained import resolve_model_ref

    path = Path(resolve_model_ref(str(source))).expanduser()
    return path if (path / ADAPTER_CONFIG).is_file() else None


def base_record(reference: str, model: Any) -> dict[str, Any]:
    """What a LoRA run's base is: `reference` as given, the path PEFT records for it, its content digest.

    A base built in memory (`tiny:`) has no path to reload; it is identified by its weights.
    """
    path = getattr(model, "name_or_path", None) or None
    digest = source_digest(path) if path else None
    if digest is None:
        digest = f"weights:{state_dict_digest(model)}"
    return {"version": RECORD_VERSION, "reference": reference, "path": path, "digest": digest}


def write_base_record(folder: str | Path, record: dict[str, Any]) -> Path:
    """Write `instructkit_base.json` into an adapter's output folder."""
    from ..atomic import atomic_file

    path = Path(folder) / BASE_FILE
    with atomic_file(path) as out:
        out.write(json.dumps(record, indent=2))
    return path


def read_base_record(folder: Path) -> dict[str, Any] | None:
    """The base record of an adapter folder, or None when it has none (an adapter made elsewhere)."""
    path = folder / BASE_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise AdapterBaseMismatchError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("version", 0) > RECORD_VERSION or "digest" not in record:
        raise AdapterBaseMismatchError(f"{path}: not a base record this instructkit reads")
    return record


def check_adapter_base(source: str | Path, allow_base_mismatch: bool = False) -> list[str]:
    """Refuse loading the adapter at `source` onto a base whose content differs from its training base.

    Returns warnings: an adapter without a record, or a base that cannot be identified here (both
    loaded unchecked), or an allowed mismatch. Not an adapter: nothing to check, no warnings.
    """
    folder = adapter_folder(source)
    if folder is None:
        return []
    config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    record = read_base_record(folder)
    if record is None:
        return [f"adapter {folder} records no base identity ({BASE_FILE}): base {base!r} is used unchecked"]
    if not base:
        return []  # nothing will be loaded under it (a base built in memory)
    now = source_digest(base)
    if now == record["digest"]:
        return []
    if now is None:  # e.g. a hub id not in the local cache: it is downloaded as it loads
        return [f"adapter {folder}: its base {base!r} cannot be identified here (not cached): unchecked"]
    trained_on = f"{record.get('reference')!r} (content {str(record['digest'])[:16]})"
    message = (
        f"adapter {folder} was trained on base {trained_on}, but the base it loads onto, {base!r}, "
        f"now has content {now[:16]}"
    )
    if allow_base_mismatch:
        return [f"{message}; used anyway (allow_base_mismatch)"]
    raise AdapterBaseMismatchError(
        f"{message}: the adapter would compute something nobody trained. Restore that base, or set "
        "allow_base_mismatch to use it anyway"
    )
