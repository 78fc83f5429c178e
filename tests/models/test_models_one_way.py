"""One way to resolve and load a model, one to get a tokenizer, one backend factory, one sha256.

`models.loading` resolves every reference (path, GGUF, `pretrained:`, tiny) and builds or loads the
model; `evaluate.backends.load.load_backend` is the only place a backend is constructed from a name.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from instructkit.errors import InstructkitError
from instructkit.evaluate.backends.load import load_backend
from instructkit.evaluate.requests import LoglikelihoodRequest
from instructkit.fingerprint import file_digest, sha256_hex, text_digest
from instructkit.models.loading import (
    load_model,
    load_or_train_tokenizer,
    model_max_positions,
    resolve_source,
)
from instructkit.models.tiny import TINY_PRESETS, build_tiny_model


def test_sha256_hex_takes_text_bytes_or_chunks_alike(tmp_path):
    expected = hashlib.sha256("héllo".encode()).hexdigest()
    assert sha256_hex("héllo") == sha256_hex("héllo".encode()) == expected
    assert sha256_hex([b"h", "éllo".encode()]) == expected
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 50_000)  # several read blocks
    assert file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    parts = ["a", "bc"]
    framed = b"".join(len(p).to_bytes(8, "little") + p.encode() for p in parts)
    assert text_digest(*parts) == hashlib.sha256(framed).hexdigest() != text_digest("ab", "c")


def test_resolve_source_finds_the_gguf_in_a_folder_and_leaves_other_names(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert resolve_source(str(tmp_path)) == (str(tmp_path), {"gguf_file": "m.gguf"})
    assert resolve_source("org/some-model") == ("org/some-model", {})
    with pytest.raises(InstructkitError, match="unknown pretrained model"):
        resolve_source("pretrained:no-such-model")
    assert model_max_positions("tiny:nano") is None  # nothing on disk to read positions from


def test_a_tiny_model_is_built_for_the_tokenizer_exactly_as_training_builds_it(tiny_tokenizer):
    built = build_tiny_model("tiny:nano", tiny_tokenizer, seed=3)
    loaded = load_model("tiny:nano", tiny_tokenizer, tiny_seed=3, dtype=torch.float64)
    assert loaded.dtype == torch.float64
    assert all(
        torch.equal(a.double(), b) for a, b in zip(built.state_dict().values(), loaded.state_dict().values())
    )
    with pytest.raises(InstructkitError, match="needs a tokenizer"):
        load_model("tiny:nano")


def test_load_model_loads_a_saved_folder(saved_tiny_model, tiny_model):
    model = load_model(str(saved_tiny_model), dtype=torch.float32)
    assert torch.equal(model.lm_head.weight, tiny_model.lm_head.weight)


def test_a_tiny_tokenizer_is_trained_and_a_named_one_loaded_without_reading_the_texts(tmp_path):
    texts = ["one two three 123"] * 30
    bare = load_or_train_tokenizer("tiny", lambda: texts)  # bare `tiny` is `tiny:micro`
    assert bare.chat_template and bare.encode("123") == [bare.convert_tokens_to_ids(d) for d in "123"]
    nano = load_or_train_tokenizer("tiny:nano", lambda: texts, chat_template="plain")
    assert len(nano) <= TINY_PRESETS["nano"].vocab_size
    nano.save_pretrained(str(tmp_path))

    def unread():
        raise AssertionError("a named tokenizer must not read the data")

    loaded = load_or_train_tokenizer(str(tmp_path), unread)
    assert loaded.get_vocab() == nano.get_vocab()


@pytest.mark.parametrize("kind", ["vllm", "openai"])
def test_the_factory_refuses_hf_only_settings_for_other_backends(kind):
    with pytest.raises(InstructkitError, match="--deterministic is supported by --backend hf only"):
        load_backend(kind, "http://localhost:1", deterministic=True)
    with pytest.raises(InstructkitError, match="--max-batch-tokens is supported by --backend hf only"):
        load_backend(kind, "http://localhost:1", max_batch_tokens=64)


def test_the_factory_wraps_a_loaded_model_and_loads_a_folder_alike(
    saved_tiny_model, tiny_model, tiny_tokenizer
):
    with pytest.raises(InstructkitError, match="unknown backend 'tpu'"):
        load_backend("tpu", "m")
    wrapped = load_backend("hf", tiny_model, tokenizer=tiny_tokenizer, batch_size=2, deterministic=True)
    loaded = load_backend("hf", saved_tiny_model, dtype="float32", batch_size=2, deterministic=True)
    assert type(wrapped) is type(loaded) and wrapped.deterministic and loaded.source == str(saved_tiny_model)
    reqs = [LoglikelihoodRequest("What is 12 plus 35?", " 47")]
    assert wrapped.loglikelihood(reqs)[0].logprob == pytest.approx(loaded.loglikelihood(reqs)[0].logprob)
