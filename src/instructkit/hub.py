"""Loading from the Hugging Face hub or local paths, with one clear error when the hub is unreachable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import HubUnreachableError, InstructkitError

_OFFLINE_HINT = (
    "the Hugging Face hub cannot be reached from this machine (or HF_HUB_OFFLINE=1 is set). "
    "Point at local files instead: a directory saved with save_pretrained / save_to_disk, "
    "or JSONL / JSON / Parquet / CSV files."
)


def is_local(path_or_id: str) -> bool:
    """True when the string names something on disk (a hub id never exists as a local path)."""
    return Path(path_or_id).expanduser().exists()


def _is_connection_problem(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    needles = (
        "connection",
        "offline",
        "resolve",
        "timed out",
        "timeout",
        "network",
        "max retries",
        "couldn't reach",
        "cannot reach",
        "we couldn't connect",
        "localentrynotfound",
        "name or service",
    )
    return any(n in text for n in needles)


def hub_error(kind: str, name: str, exc: BaseException) -> InstructkitError:
    """Turn a loading failure into a clear error; connection failures get the offline hint."""
    if _is_connection_problem(exc) or os.environ.get("HF_HUB_OFFLINE") == "1":
        return HubUnreachableError(
            f"cannot load {kind} {name!r}: {_OFFLINE_HINT} (cause: {type(exc).__name__}: {exc})"
        )
    return InstructkitError(f"cannot load {kind} {name!r}: {type(exc).__name__}: {exc}")


def load_hub_dataset(name: str, config: str | None = None, split: str | None = None, **kwargs: Any) -> Any:
    """datasets.load_dataset for a hub id, with the offline hint on connection failures."""
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split, **kwargs)
    except Exception as exc:
        raise hub_error("dataset", name, exc) from exc


def cached_revision(repo_id: str, repo_type: str = "dataset") -> str | None:
    """The commit a hub id resolves to in the local HF cache (`refs/main`), or None when not cached.

    Read offline from the cache layout huggingface_hub writes, so a pipeline can pin a hub input
    without reaching the hub; None means the input is unpinned (its content cannot be checked).
    """
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    try:
        folder = repo_folder_name(repo_id=repo_id, repo_type=repo_type)
        revision = (
            (Path(constants.HF_HUB_CACHE) / folder / "refs" / "main").read_text(encoding="utf-8").strip()
        )
    except (OSError, ValueError):  # not cached, or not a hub id at all (huggingface_hub's HFValidationError)
        return None
    return revision or None
