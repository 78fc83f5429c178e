"""GGUF sources, tokenizer identity (recorded at prepare, checked at train), load precision, limits.

All on tiny models and tokenizers built here (seconds); the real-model versions are in test_real_model.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers.paths import TOKENIZER_CORPUS
from instructkit.cli.app import app
from instructkit.data.prepare import PrepareConfig, prepare
from instructkit.errors import InstructkitError
from instructkit.models.gguf import gguf_location
from instructkit.models.identity import (
    IDENTITY_KEY,
    TokenizerMismatchError,
    check_same_tokenizer,
    tokenizer_identity,
)
from instructkit.models.loading import load_model_and_tokenizer, load_tokenizer
from instructkit.models.tiny import build_tiny_model, default_tokenizer, train_tiny_tokenizer
from instructkit.train.config import TrainConfig
from instructkit.train.lora import apply_lora
from instructkit.train.run import train
from instructkit.train.setup import describe_precision

CHATS = [
    {
        "messages": [
            {"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"The answer is {a + b}."},
        ]
    }
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]
]


def write_chats(path: Path) -> str:
    path.write_text("".join(json.dumps(c) + "\n" for c in CHATS))
    return str(path)


@pytest.fixture
def model_dir(tmp_path, tiny_tokenizer) -> Path:
    """A tiny Llama saved in bf16 with its own tokenizer, 64 positions: a stand-in for a hub checkpoint."""
    path = tmp_path / "model"
    model = build_tiny_model("tiny:nano", tiny_tokenizer, max_position_embeddings=64)
    model.to(torch.bfloat16).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def other_tokenizer():
    """A tokenizer with another vocabulary (trained on other text, smaller)."""
    return train_tiny_tokenizer([t.upper() for t in TOKENIZER_CORPUS], vocab_size=400)


def test_gguf_location_accepts_a_file_or_a_directory_holding_one(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert gguf_location(tmp_path / "m.gguf") == (str(tmp_path), "m.gguf")
    assert gguf_location(tmp_path) == (str(tmp_path), "m.gguf")
    (tmp_path / "config.json").write_text("{}")  # a transformers directory wins over a stray GGUF
    assert gguf_location(tmp_path) is None
    assert gguf_location("tiny:micro") is None and gguf_location(tmp_path / "config.json") is None


def test_a_directory_with_two_gguf_files_is_refused(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(InstructkitError, match=r"2 GGUF files \(a.gguf, b.gguf\)"):
        gguf_location(tmp_path)


def test_models_import_refuses_a_non_gguf_file_and_an_existing_output(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    result = CliRunner().invoke(
        app, ["models", "import", str(tmp_path / "weights.bin"), "--out", str(tmp_path)]
    )
    assert isinstance(result.exception, InstructkitError) and "not a GGUF file" in str(result.exception)
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    result = CliRunner().invoke(app, ["models", "import", str(tmp_path / "m.gguf"), "--out", str(tmp_path)])
    assert isinstance(result.exception, InstructkitError) and "--overwrite" in str(result.exception)


def test_identity_refuses_another_vocabulary_naming_both(tiny_tokenizer):
    with pytest.raises(TokenizerMismatchError) as err:
        check_same_tokenizer(
            tokenizer_identity(tiny_tokenizer), "data X", tokenizer_identity(other_tokenizer()), "model Y"
        )
    assert (
        "data X" in str(err.value) and "model Y" in str(err.value) and "vocabularies differ" in str(err.value)
    )


def test_identity_notes_a_chosen_chat_template_without_refusing(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    copy = load_tokenizer(str(tmp_path))
    copy.chat_template = "{{ messages[0]['content'] }}"
    ours, theirs = tokenizer_identity(tiny_tokenizer), tokenizer_identity(copy)
    notes = check_same_tokenizer(ours, "a", theirs, "b", template_chosen=True)
    assert notes == ["the chat template of a differs from that of b"]
    with pytest.raises(TokenizerMismatchError, match="chat template differs"):  # not chosen: refused
        check_same_tokenizer(ours, "a", theirs, "b")


def test_prepare_records_the_tokenizer_identity(tmp_path, model_dir):
    out = tmp_path / "data"
    prepare(
        PrepareConfig(
            sources=[write_chats(tmp_path / "c.jsonl")], tokenizer=str(model_dir), out=str(out), max_length=64
        ),
        False,
    )
    recorded = json.loads((out / "prepare.json").read_text())[IDENTITY_KEY]
    assert recorded == tokenizer_identity(load_tokenizer(str(out / "tokenizer")))
    assert recorded["vocab_sha256"] == tokenizer_identity(load_tokenizer(str(model_dir)))["vocab_sha256"]


def test_train_refuses_a_model_whose_tokenizer_differs_naming_both(tmp_path, model_dir):
    data = tmp_path / "data"
    prepare(
        PrepareConfig(
            sources=[write_chats(tmp_path / "c.jsonl")], tokenizer="tiny:nano", out=str(data), max_length=64
        ),
        False,
    )
    config = TrainConfig(data=data, output_dir=tmp_path / "out", model=str(model_dir), progress=False)
    with pytest.raises(TokenizerMismatchError) as err:
        train(config)
    assert "'tiny:nano'" in str(err.value) and str(model_dir) in str(err.value)


def test_a_bf16_checkpoint_trains_with_fp32_weights_and_says_so(tmp_path, model_dir):
    data = tmp_path / "data"
    prepare(
        PrepareConfig(
            sources=[write_chats(tmp_path / "c.jsonl")],
            tokenizer=str(model_dir),
            out=str(data),
            max_length=64,
        ),
        False,
    )
    model, _ = load_model_and_tokenizer(str(model_dir))
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the checkpoint itself is bf16
    out = tmp_path / "out"
    config = TrainConfig(
        data=data,
        output_dir=out,
        model=str(model_dir),
        max_steps=1,
        gradient_accumulation_steps=1,
        progress=False,
    )
    assert train(config).global_step == 1
    resolved = json.loads((out / "train_config.json").read_text())["resolved"]
    assert resolved["precision_ran"] == "fp32 compute, fp32 weights"


def test_bf16_precision_is_described_as_autocast_over_fp32_master_weights(tiny_tokenizer):
    lora = apply_lora(build_tiny_model("tiny:nano", tiny_tokenizer), r=2, alpha=4, target_modules=["q_proj"])
    assert describe_precision("bf16", lora) == "bf16 autocast, fp32 master weights"


def test_max_length_beyond_the_models_positions_is_refused_at_prepare_and_train(tmp_path, model_dir):
    source = write_chats(tmp_path / "c.jsonl")
    with pytest.raises(InstructkitError, match="64 positions"):
        prepare(
            PrepareConfig(
                sources=[source], tokenizer=str(model_dir), out=str(tmp_path / "refused"), max_length=128
            ),
            False,
        )
    tokenizer_only = tmp_path / "tok"
    load_tokenizer(str(model_dir)).save_pretrained(tokenizer_only)  # same tokenizer, no model config
    data = tmp_path / "data"
    prepare(
        PrepareConfig(sources=[source], tokenizer=str(tokenizer_only), out=str(data), max_length=128), False
    )
    config = TrainConfig(data=data, output_dir=tmp_path / "out", model=str(model_dir), progress=False)
    with pytest.raises(InstructkitError, match="--max-length 128 exceeds the 64 positions"):
        train(config)


def test_a_tokenizer_without_pad_token_pads_with_eos(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path)
    no_pad = load_tokenizer(str(tmp_path))
    no_pad.pad_token = None
    no_pad.save_pretrained(tmp_path)
    _, tokenizer = load_model_and_tokenizer("tiny:nano", str(tmp_path))
    assert tokenizer.pad_token_id == tokenizer.eos_token_id is not None


def test_default_tokenizer_is_the_models_own():
    assert default_tokenizer("org/model") == "org/model"
    assert default_tokenizer("org/model", "other/tok") == "other/tok"
    assert default_tokenizer("tiny:small") == "tiny:small" and default_tokenizer("tiny:") == "tiny:micro"
