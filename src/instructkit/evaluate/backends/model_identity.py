"""What a model *is*, as digests: the files of a model folder, a hub snapshot's commit, an in-memory
state dict, a tokenizer. Backends build their cache fingerprint from these, so a result cached for one
set of weights, adapter, tokenizer or chat template is never served for another.

File digests go through `instructkit.fingerprint.file_digest` (memoized by path, size and mtime), so
re-fingerprinting an unchanged 16 GB checkpoint costs a `stat` per file, not a re-read.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path
from typing import Any

from ...fingerprint import file_digest, path_digest, text_digest
from ...hub import cached_revision

# Folder entries that never change what a loaded model computes: training leftovers and notes.
# Everything else (weights, adapter files, configs, tokenizer files, chat templates, even unknown
# files) is hashed: a needless cache miss costs time, a missed change costs a wrong result.
IGNORED_DIRS = ("checkpoint-*", "runs", "logs", ".git", ".cache", "__pycache__")
IGNORED_FILES = ("README*", "*.md", "*.log", ".gitattributes", "trainer_state.json", "training_args.bin")


def is_behaviour_file(relative: str) -> bool:
    """False for the training leftovers and notes listed in IGNORED_DIRS / IGNORED_FILES."""
    parts = relative.split("/")
    if any(fnmatch.fnmatch(part, pattern) for part in parts[:-1] for pattern in IGNORED_DIRS):
        return False
    return not any(fnmatch.fnmatch(parts[-1], pattern) for pattern in IGNORED_FILES)


def model_dir_digest(path: str | Path) -> str:
    """sha256 over the relative name and content digest of every behaviour-defining file in a folder."""
    return path_digest(path, keep=is_behaviour_file)


def source_digest(name: str) -> str | None:
    """Content digest of a model source: a local folder's files, or a cached hub snapshot's commit.

    A folder holding a PEFT adapter also covers the base model its adapter_config.json names.
    Returns None when the source cannot be identified by content (the caller then hashes weights).
    """
    from ...models.pretrained import resolve_model_ref

    path = Path(resolve_model_ref(str(name))).expanduser()  # `pretrained:<name>` → its fetched folder
    if path.is_dir():
        parts = [f"dir:{model_dir_digest(path)}"]
        adapter = path / "adapter_config.json"
        if adapter.is_file():
            base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
            parts.append(f"base:{source_digest(base) if base else None}")
        return text_digest(*parts)
    if path.is_file():
        return text_digest(f"file:{file_digest(path)}")
    commit = cached_revision(name, repo_type="model")  # what from_pretrained loaded (refs/main)
    return text_digest(f"hub:{name}@{commit}") if commit else None


def state_dict_digest(model: Any) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes): exact for in-memory models."""
    import torch

    combined = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        data = tensor.detach().to("cpu").contiguous()
        combined.update(f"{name}:{data.dtype}:{tuple(data.shape)}\n".encode())
        combined.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return combined.hexdigest()


def tokenizer_digest(tokenizer: Any) -> str:
    """Digest of a tokenizer's vocabulary, merges, pre/post-processing, special tokens and chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        model_text = backend.to_str()
    else:
        model_text = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    special = getattr(tokenizer, "special_tokens_map", {}) or {}
    return text_digest(
        type(tokenizer).__name__,
        model_text,
        json.dumps(getattr(tokenizer, "chat_template", None), sort_keys=True, ensure_ascii=False),
        json.dumps(special, sort_keys=True, ensure_ascii=False, default=str),
    )
