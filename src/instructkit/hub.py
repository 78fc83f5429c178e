"""Loading from the Hugging Face hub or local paths: one rule telling a path from a hub id, and one
clear error, after one failed attempt, when the hub cannot be reached."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from .errors import HubUnreachableError, InstructkitError

_OFFLINE_HINT = (
    "the Hugging Face hub cannot be reached from this machine (or HF_HUB_OFFLINE=1 is set). "
    "Point at local files instead: a directory saved with save_pretrained / save_to_disk, "
    "or JSONL / JSON / Parquet / CSV files."
)

# Names ending in one of these are files, never hub ids (case-insensitive; `x.jsonl.gz` ends in `.gz`).
FILE_SUFFIXES = (
    ".jsonl", ".json", ".parquet", ".csv", ".tsv", ".txt", ".arrow",  # data
    ".gz", ".bz2", ".xz", ".zst",  # compressed data
    ".gguf", ".safetensors", ".bin", ".pt", ".pth", ".yaml", ".yml",  # models and settings
)  # fmt: skip


class NoSuchPathError(InstructkitError):
    """A reference that can only be a local path names nothing on disk."""


def is_local(path_or_id: str) -> bool:
    """True when the string names something on disk (a hub id never exists as a local path)."""
    return Path(path_or_id).expanduser().exists()


def path_reason(reference: str, dataset: bool = False) -> str | None:
    """Why a reference that is not on disk can only be a path, or None when it reads as a hub id.

    The one rule for every model, tokenizer and data argument (an existing file or folder always wins):
    it is a path when it starts with `.`, `~` or `/`, holds a `\\`, has more than one `/`, ends in
    a file suffix (FILE_SUFFIXES: `.jsonl`, `.gguf`, …), or is otherwise no hub repo id
    (huggingface_hub's `validate_repo_id`: `NAME` or `OWNER/NAME` of letters, digits, `-`, `_`, `.`).
    So `Qwen/Qwen2.5-0.5B` and `gpt2` are hub ids; `runs/sft/x`, `./runs`, `~/m` and `data/x.jsonl`
    are paths. For a `dataset` source its `:CONFIG` / `@SPLIT` tail is cut off before the suffix and
    repo-id checks (`OWNER/NAME:CONFIG@SPLIT` is a hub id, `data/x.jsonl@train` a path).
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if "\\" in reference:
        return "it holds a '\\'"
    if reference.startswith((".", "~", "/")):
        return f"it starts with {reference[:1]!r}"
    if reference.count("/") > 1:
        return "it has more than one '/', and a hub id is NAME or OWNER/NAME"
    repo_id = reference.partition("@")[0].partition(":")[0] if dataset else reference
    suffix = next((s for s in FILE_SUFFIXES if repo_id.lower().endswith(s)), None)
    if suffix:
        return f"it ends in {suffix}"
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return "it is no hub id, which is NAME or OWNER/NAME of letters, digits, '-', '_' and '.'"
    return None


def check_reference(reference: str, kind: str, dataset: bool = False) -> None:
    """Refuse at once a `kind` reference that can only be a path (`path_reason`) and is not on disk."""
    if is_local(reference):
        return
    reason = path_reason(reference, dataset)
    if reason is not None:
        raise NoSuchPathError(f"no such file or folder: {reference} (the {kind}; read as a path: {reason})")


def _offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get(v, "").upper() for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any(f in ("1", "ON", "YES", "TRUE") for f in flags)


@functools.cache
def _unreachable(endpoint: str) -> str | None:
    """Why `endpoint` cannot be reached (one request, no retries), or None when it answers at all."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=constants.HF_HUB_ETAG_TIMEOUT, follow_redirects=False)
    except Exception as exc:  # noqa: BLE001 - any failure to get a response: refused, DNS, TLS, timeout
        return f"{type(exc).__name__}: {exc}"
    return None


def check_hub_reachable(kind: str, name: str, repo_type: str = "model") -> None:
    """Refuse a hub `name` at once when the hub does not answer one request and it is not cached.

    huggingface_hub (2.4) retries an uncached file 5 times with 1-8 s backoff, per file (25-56 s
    measured against a refused port); one failed request to the endpoint says the same. Offline mode
    and ids in the local hub cache are left to the libraries, which fail at once or load the cache.
    """
    from huggingface_hub import constants

    if _offline() or cached_revision(name, repo_type) is not None:
        return
    cause = _unreachable(constants.ENDPOINT)
    if cause is not None:
        raise HubUnreachableError(
            f"cannot load {kind} {name!r}: {_OFFLINE_HINT} ({_hub_id_note(name)}{constants.ENDPOINT}: {cause})"
        )


def _hub_id_note(name: str) -> str:
    """Say that a name was read as a hub id only because it is not on disk (a mistyped path, maybe)."""
    return "" if is_local(name) else f"{name!r} is no file or folder here, so it was read as a hub id; "


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
            f"cannot load {kind} {name!r}: {_OFFLINE_HINT} "
            f"({_hub_id_note(name)}cause: {type(exc).__name__}: {exc})"
        )
    return InstructkitError(f"cannot load {kind} {name!r}: {type(exc).__name__}: {exc}")


def load_hub_dataset(name: str, config: str | None = None, split: str | None = None, **kwargs: Any) -> Any:
    """datasets.load_dataset for a hub id; an unreachable hub is refused after one request."""
    import datasets

    check_hub_reachable("dataset", name, repo_type="dataset")
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
