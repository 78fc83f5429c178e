"""What makes two tokenizers the same, so data tokenized by one is never trained on a model of another.

A tokenizer's identity is its vocabulary (every token → id, added tokens included, hashed), its
special tokens, and its chat template (hashed). `data prepare` records it in `prepare.json`; `train`
compares it with the model's own tokenizer and refuses a different vocabulary or different
BOS/EOS/UNK, naming both. A different chat template is allowed (fine-tuning may teach a new
format) and only noted; so is a different pad token (padding is never trained on).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..errors import InstructkitError

IDENTITY_KEY = "tokenizer_identity"  # the key in prepare.json
REFUSED_SPECIALS = ("bos", "eos", "unk")  # special tokens that change what is trained


class TokenizerMismatchError(InstructkitError):
    """Data tokenized with one tokenizer was about to meet a model built for another."""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _chat_template(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: hash them all, in a stable order
        return json.dumps(template, sort_keys=True)
    return template


def tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """The identity of a transformers tokenizer: vocabulary hash and size, special tokens, template hash."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    specials = {name: getattr(tokenizer, f"{name}_token", None) for name in ("bos", "eos", "unk", "pad")}
    template = _chat_template(tokenizer)
    return {
        "vocab_sha256": _sha256(json.dumps(vocab, ensure_ascii=False)),
        "vocab_size": len(vocab),
        "special_tokens": {k: (str(v) if v is not None else None) for k, v in specials.items()},
        "chat_template_sha256": _sha256(template) if template else None,
    }


def identity_differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Why two identities cannot share data: a different vocabulary or different BOS/EOS/UNK (empty if none)."""
    problems = []
    if expected["vocab_sha256"] != actual["vocab_sha256"]:
        problems.append(
            f"vocabularies differ ({expected['vocab_size']:,} tokens, sha256 {expected['vocab_sha256'][:12]} "
            f"vs {actual['vocab_size']:,} tokens, sha256 {actual['vocab_sha256'][:12]})"
        )
    for name in REFUSED_SPECIALS:
        a, b = expected["special_tokens"].get(name), actual["special_tokens"].get(name)
        if a != b:
            problems.append(f"{name} token differs ({a!r} vs {b!r})")
    return problems


def check_same_tokenizer(
    expected: dict[str, Any], expected_name: str, actual: dict[str, Any], actual_name: str
) -> list[str]:
    """Raise `TokenizerMismatchError` naming both sides when the tokenizers differ; else return notes.

    The notes say what differs harmlessly (chat template, pad token) so the caller can log them.
    """
    problems = identity_differences(expected, actual)
    if problems:
        raise TokenizerMismatchError(
            f"tokenizer mismatch: {expected_name} and {actual_name} use different tokenizers: "
            + "; ".join(problems)
        )
    notes = []
    if expected.get("chat_template_sha256") != actual.get("chat_template_sha256"):
        notes.append(f"the chat template of {expected_name} differs from that of {actual_name}")
    if expected["special_tokens"].get("pad") != actual["special_tokens"].get("pad"):
        notes.append(
            f"the pad token of {expected_name} differs from that of {actual_name} (never trained on)"
        )
    return notes


def check_data_matches_model(
    data_dir: str,
    meta: dict[str, Any],
    tokenizer_dir: str | None,
    model: str,
    trust_remote_code: bool = False,
) -> list[str]:
    """Refuse prepared data whose tokenizer is not `model`'s own; return notes on harmless differences.

    A `tiny:` model is built for the data's tokenizer, so there is nothing to compare. Data prepared
    before identities were recorded is identified from its saved `tokenizer/` folder.
    """
    from .loading import load_tokenizer
    from .tiny import is_tiny

    if is_tiny(model) or tokenizer_dir is None:
        return []
    expected = meta.get(IDENTITY_KEY) or tokenizer_identity(load_tokenizer(str(tokenizer_dir)))
    try:
        own = load_tokenizer(model, trust_remote_code=trust_remote_code)
    except InstructkitError:  # weights without tokenizer files: the vocabulary-size check still runs
        return [f"model {model!r} has no tokenizer of its own to compare the data's tokenizer with"]
    data_name = f"the data in {data_dir} (prepared with tokenizer {meta.get('tokenizer', '?')!r})"
    return check_same_tokenizer(expected, data_name, tokenizer_identity(own), f"model {model!r}")


def check_vocab_fits(tokenizer: Any, model: Any, model_name: str) -> None:
    """Refuse a tokenizer with more ids than the model has embeddings (its tokens would index past them)."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise TokenizerMismatchError(
            f"tokenizer mismatch: the data's tokenizer has {len(tokenizer):,} tokens but model "
            f"{model_name!r} has only {rows:,} embedding rows"
        )
