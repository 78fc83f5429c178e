"""What a model and a tokenizer *are*, by content, so nothing made with one is used with another.

Model digests (a folder's files, a cached hub snapshot's files, an in-memory state dict) key the eval
cache and the base an adapter records. File digests go through `fingerprint.file_digest` (memoized
by path, size and mtime), so re-identifying an unchanged 16 GB checkpoint costs a `stat` per file.

A tokenizer's identity (version 2) covers everything that changes the ids a text gets: the
vocabulary, the tokenization model (merges and options), normalizer, pre-tokenizer, post-processor,
added and special tokens, plus the decoder and the chat template. `data prepare` records it in
`prepare.json`; `train` refuses data whose tokenizer tokenizes differently from the model's own,
naming each component that differs. A different chat template is refused too unless the data chose
its template (`chat_template` set at prepare) or is plain text; a different decoder or pad token is
only noted (neither changes a trained id).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InstructkitError
from ..fingerprint import file_digest, path_digest, sha256_hex, text_digest
from ..hub import cached_revision

# ---------------------------------------------------------------- model digests (eval cache, adapters)

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
    """Content digest of a model source: a local folder's files, or a cached hub snapshot's files.

    `pretrained:<name>` is its fetched folder. A folder holding a PEFT adapter also covers the base
    model its adapter_config.json names. None when the source cannot be identified by content.
    """
    from .pretrained import resolve_model_ref

    path = Path(resolve_model_ref(str(name))).expanduser()
    if path.is_dir():
        parts = [f"dir:{model_dir_digest(path)}"]
        adapter = path / "adapter_config.json"
        if adapter.is_file():
            base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
            parts.append(f"base:{source_digest(base) if base else None}")
        return text_digest(*parts)
    if path.is_file():
        return text_digest(f"file:{file_digest(path)}")
    snapshot = cached_snapshot(str(name))  # what from_pretrained loads offline: its files, by content
    return text_digest(f"dir:{model_dir_digest(snapshot)}") if snapshot else None


def cached_snapshot(repo_id: str) -> Path | None:
    """The local HF cache folder a hub model id loads from (the `refs/main` snapshot), or None."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    commit = cached_revision(repo_id, repo_type="model")
    if commit is None:
        return None
    folder = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = folder / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def state_dict_digest(model: Any) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes): exact for in-memory models."""
    return sha256_hex(_state_dict_chunks(model))


def _state_dict_chunks(model: Any) -> Iterator[bytes]:
    """Each tensor's header (name, dtype, shape) then its bytes, one tensor in memory at a time."""
    import torch

    for name, tensor in model.state_dict().items():
        data = tensor.detach().to("cpu").contiguous()
        yield f"{name}:{data.dtype}:{tuple(data.shape)}\n".encode()
        yield data.reshape(-1).view(torch.uint8).numpy().tobytes()


def tokenizer_digest(tokenizer: Any) -> str:
    """One digest of a tokenizer's whole identity (every component, special tokens, chat template)."""
    identity = tokenizer_identity(tokenizer)
    return text_digest(type(tokenizer).__name__, json.dumps(identity, sort_keys=True))


# ---------------------------------------------------------------- tokenizer identity

IDENTITY_KEY = "tokenizer_identity"  # the key in prepare.json
IDENTITY_VERSION = 2  # 1 (no `version` field): vocabulary, BOS/EOS/UNK/pad and chat template only
REFUSED_SPECIALS = ("bos", "eos", "unk")  # special tokens that change what is trained
# The backend tokenizer's parts (tokenizer.json sections), as a refusal names them. All but the
# decoder change the ids a text gets; `padding`/`truncation` are call-time state and never count.
COMPONENTS = {
    "model": "tokenization model (merges or its options)",
    "normalizer": "normalizer",
    "pre_tokenizer": "pre-tokenizer",
    "post_processor": "post-processor",
    "added_tokens": "added tokens",
    "decoder": "decoder",
}
NOTED_COMPONENTS = ("decoder",)


class TokenizerMismatchError(InstructkitError):
    """Data tokenized with one tokenizer was about to meet a model built for another."""


def _sha256(text: str) -> str:
    return sha256_hex(text)


def _chat_template(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: hash them all, in a stable order
        return json.dumps(template, sort_keys=True)
    return template


def _components(tokenizer: Any) -> dict[str, str | None]:
    """sha256 of each tokenizer.json section (None for each when there is no fast backend)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return dict.fromkeys(COMPONENTS)
    sections = json.loads(backend.to_str())
    # Whether special tokens written in text are split is an option outside tokenizer.json.
    sections["added_tokens"] = [
        sections.get("added_tokens"),
        bool(getattr(backend, "encode_special_tokens", 0)),
    ]
    return {
        name: _sha256(json.dumps(sections.get(name), sort_keys=True, ensure_ascii=False))
        for name in COMPONENTS
    }


def tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """The identity of a transformers tokenizer: vocabulary, each backend component, specials, template."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    specials = {name: getattr(tokenizer, f"{name}_token", None) for name in ("bos", "eos", "unk", "pad")}
    template = _chat_template(tokenizer)
    return {
        "version": IDENTITY_VERSION,
        "vocab_sha256": _sha256(json.dumps(vocab, ensure_ascii=False)),
        "vocab_size": len(vocab),
        "components": _components(tokenizer),
        "special_tokens": {k: (str(v) if v is not None else None) for k, v in specials.items()},
        "chat_template_sha256": _sha256(template) if template else None,
    }


def identity_differences(
    expected: dict[str, Any], actual: dict[str, Any], template_chosen: bool = False
) -> list[str]:
    """Why two identities cannot share data, one reason per differing part (empty if none).

    A different chat template counts unless `template_chosen` (the data's rows were rendered with a
    template the user picked, or with none): then either side's template is a deliberate choice.
    """
    problems = []
    if expected["vocab_sha256"] != actual["vocab_sha256"]:
        problems.append(
            f"vocabularies differ ({expected['vocab_size']:,} tokens, sha256 {expected['vocab_sha256'][:12]} "
            f"vs {actual['vocab_size']:,} tokens, sha256 {actual['vocab_sha256'][:12]})"
        )
    ours, theirs = expected.get("components") or {}, actual.get("components") or {}
    for name, label in COMPONENTS.items():
        if name in NOTED_COMPONENTS or ours.get(name) is None or theirs.get(name) is None:
            continue
        if ours[name] != theirs[name] and not (name == "model" and problems):
            problems.append(f"{label} {'differ' if label.endswith('tokens') else 'differs'}")
    for name in REFUSED_SPECIALS:
        a, b = expected["special_tokens"].get(name), actual["special_tokens"].get(name)
        if a != b:
            problems.append(f"{name} token differs ({a!r} vs {b!r})")
    if not template_chosen and _templates_conflict(expected, actual):
        problems.append("chat template differs")
    return problems


def _templates_conflict(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    """Two different templates; a side without one (a base model) conflicts with nothing."""
    a, b = expected.get("chat_template_sha256"), actual.get("chat_template_sha256")
    return a is not None and b is not None and a != b


def check_same_tokenizer(
    expected: dict[str, Any],
    expected_name: str,
    actual: dict[str, Any],
    actual_name: str,
    template_chosen: bool = False,
) -> list[str]:
    """Raise `TokenizerMismatchError` naming both sides and each difference; else return notes.

    The notes say what differs harmlessly (a chosen chat template, the decoder, the pad token) so
    the caller can log them.
    """
    problems = identity_differences(expected, actual, template_chosen)
    if problems:
        raise TokenizerMismatchError(
            f"tokenizer mismatch: {expected_name} and {actual_name} tokenize differently: "
            + "; ".join(problems)
        )
    notes = []
    if expected.get("chat_template_sha256") != actual.get("chat_template_sha256"):
        notes.append(f"the chat template of {expected_name} differs from that of {actual_name}")
    ours, theirs = expected.get("components") or {}, actual.get("components") or {}
    for name in NOTED_COMPONENTS:
        if ours.get(name) != theirs.get(name):
            notes.append(f"the {COMPONENTS[name]} of {expected_name} differs from that of {actual_name}")
    if expected["special_tokens"].get("pad") != actual["special_tokens"].get("pad"):
        notes.append(
            f"the pad token of {expected_name} differs from that of {actual_name} (never trained on)"
        )
    return notes


def template_was_chosen(meta: dict[str, Any]) -> bool:
    """True when a prepared folder's rows were not rendered with its tokenizer's own chat template."""
    if meta.get("chat_template") is not None:  # picked at prepare (a built-in name, a file, Jinja)
        return True
    return meta.get("input_format") == "text" or meta.get("format") == "synth"


def recorded_identity(data_dir: str, meta: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    """The identity a prepared folder was made with, checked against its saved `tokenizer/` (`saved`).

    A version-1 record (no components) is completed from the saved tokenizer when that still matches
    every part the record holds; a folder whose tokenizer changed since prepare is refused.
    """
    record = meta.get(IDENTITY_KEY)
    if record is None:  # prepared before identities were recorded: the saved tokenizer is all there is
        return saved
    version = record.get("version", 1)
    if version > IDENTITY_VERSION:
        raise TokenizerMismatchError(
            f"{data_dir}: prepare.json records tokenizer identity version {version}, newer than this "
            f"instructkit reads ({IDENTITY_VERSION}); update instructkit or prepare the data again"
        )
    compared = saved if version == IDENTITY_VERSION else {**saved, "components": None}
    ours, theirs = _parts(record), _parts(compared)
    changed = [part for part, value in ours.items() if theirs.get(part) != value]
    if changed:
        raise TokenizerMismatchError(
            f"{data_dir}: its tokenizer/ folder no longer matches the tokenizer the data was prepared "
            f"with ({', '.join(changed)} changed): prepare the data again"
        )
    return saved


def _parts(identity: dict[str, Any]) -> dict[str, Any]:
    """An identity flattened to named parts (components a version-1 record lacks are left out)."""
    parts = {"vocabulary": identity["vocab_sha256"], "chat template": identity.get("chat_template_sha256")}
    parts |= {f"{name} token": value for name, value in identity["special_tokens"].items()}
    parts |= {COMPONENTS[name]: value for name, value in (identity.get("components") or {}).items()}
    return parts


def check_data_matches_model(
    data_dir: str,
    meta: dict[str, Any],
    tokenizer_dir: str | None,
    model: str,
    trust_remote_code: bool = False,
) -> list[str]:
    """Refuse prepared data whose tokenizer tokenizes differently from `model`'s own; return notes.

    A `tiny:` model is built for the data's tokenizer, so there is nothing to compare it with.
    """
    from .loading import load_tokenizer
    from .tiny import is_tiny

    if tokenizer_dir is None:
        return []
    expected = recorded_identity(data_dir, meta, tokenizer_identity(load_tokenizer(str(tokenizer_dir))))
    if is_tiny(model):
        return []
    try:
        own = load_tokenizer(model, trust_remote_code=trust_remote_code)
    except InstructkitError:  # weights without tokenizer files: the vocabulary-size check still runs
        return [f"model {model!r} has no tokenizer of its own to compare the data's tokenizer with"]
    data_name = f"the data in {data_dir} (prepared with tokenizer {meta.get('tokenizer', '?')!r})"
    own_name = f"model {model!r}"
    return check_same_tokenizer(
        expected, data_name, tokenizer_identity(own), own_name, template_was_chosen(meta)
    )


def check_tokenizer_fits_model(
    tokenizer_ref: str, model_ref: str, template_chosen: bool = False, trust_remote_code: bool = False
) -> list[str]:
    """Before anything is prepared: refuse a tokenizer that tokenizes differently from the model's own.

    A `tiny:` model is built for whatever tokenizer prepares its data; a `tiny` tokenizer is trained
    on the data, so no pretrained model reads its ids. When either side cannot be loaded here (the
    hub offline, weights without tokenizer files) nothing is refused: `train` checks the prepared data.
    Returns notes on harmless differences.
    """
    from .loading import load_tokenizer
    from .tiny import is_tiny, is_tiny_tokenizer

    if is_tiny(model_ref) or tokenizer_ref == model_ref:
        return []
    tokenizer_name, model_name = f"tokenizer {tokenizer_ref!r}", f"model {model_ref!r}"
    if is_tiny_tokenizer(tokenizer_ref):
        raise TokenizerMismatchError(
            f"tokenizer mismatch: {tokenizer_name} is trained on the data, so {model_name} was never "
            "trained on its ids; prepare with the model's own tokenizer"
        )
    try:
        ours = tokenizer_identity(load_tokenizer(tokenizer_ref, trust_remote_code=trust_remote_code))
        theirs = tokenizer_identity(load_tokenizer(model_ref, trust_remote_code=trust_remote_code))
    except InstructkitError:
        return []
    return check_same_tokenizer(ours, tokenizer_name, theirs, model_name, template_chosen)


def check_vocab_fits(tokenizer: Any, model: Any, model_name: str) -> None:
    """Refuse a tokenizer with more ids than the model has embeddings (its tokens would index past them)."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise TokenizerMismatchError(
            f"tokenizer mismatch: the data's tokenizer has {len(tokenizer):,} tokens but model "
            f"{model_name!r} has only {rows:,} embedding rows"
        )
