"""A real pretrained model (SmolLM2-135M-Instruct, from a PyPI wheel) through load, prepare and train.

Uses the session fixture `smollm2` (built once in the user cache; skipped, saying why, when it cannot
be had). Each test keeps to short texts: a 64-token forward of this model on CPU takes well under a
second; the GGUF test pays one dequantizing load.
"""

from __future__ import annotations

import json
import math

import datasets
import pytest
import torch

from helpers.files import write_jsonl
from instructkit.data.prepare import PrepareConfig, prepare
from instructkit.errors import InstructkitError
from instructkit.models.identity import IDENTITY_KEY, TokenizerMismatchError, tokenizer_identity
from instructkit.models.loading import check_max_length, load_model_and_tokenizer
from instructkit.train.config import TrainConfig
from instructkit.train.run import train

pytestmark = pytest.mark.slow

PLAIN_TEXT = (
    "The capital of France is Paris. It is a large city in Europe, famous for its museums, "
    "its cafés and the Eiffel Tower, which was built for the world's fair of 1889."
)
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
CONVERSATIONS = [
    {
        "messages": [
            {"role": "user", "content": "What is 2 plus 3?"},
            {"role": "assistant", "content": "2 plus 3 is 5."},
            {"role": "user", "content": "And times 4?"},
            {"role": "assistant", "content": "5 times 4 is 20."},
        ]
    },
    {
        "messages": [
            {"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": "Name a primary colour."},
            {"role": "assistant", "content": "Red."},
        ]
    },
]


@pytest.fixture(scope="module")
def smol(smollm2):
    """The converted model and its tokenizer, loaded once for this module (eval mode, fp32)."""
    model, tokenizer = load_model_and_tokenizer(str(smollm2.directory))
    return model.eval(), tokenizer


def plain_text_loss(model, tokenizer) -> float:
    ids = tokenizer(PLAIN_TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


@pytest.fixture(scope="module")
def prepared(smollm2, tmp_path_factory):
    """The two conversations prepared with the model's own tokenizer and chat template."""
    root = tmp_path_factory.mktemp("smol_prepare")
    source = write_jsonl(root / "chats.jsonl", CONVERSATIONS)
    out = root / "prepared"
    prepare(
        PrepareConfig(sources=[source], tokenizer=str(smollm2.directory), out=str(out), max_length=128),
        progress=False,
    )
    return out


def test_converted_directory_is_a_tied_llama_with_the_chatml_template(smol):
    model, tokenizer = smol
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.dtype == torch.float32
    assert len(tokenizer) == 49152
    assert "<|im_start|>" in tokenizer.chat_template and DEFAULT_SYSTEM in tokenizer.chat_template
    assert tokenizer.pad_token_id is not None


def test_plain_text_loss_is_far_below_uniform(smol):
    loss = plain_text_loss(*smol)
    assert 0.5 < loss < 5.0 < math.log(49152)


def trained_runs(tokenizer, row) -> list[str]:
    """The decoded runs of consecutive labelled tokens of a prepared row (labels must equal the ids)."""
    runs, current = [], []
    for token, label in zip(row["input_ids"], row["labels"]):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return [tokenizer.decode(run) for run in runs + ([current] if current else [])]


EXPECTED_REPLIES = [["2 plus 3 is 5.<|im_end|>", "5 times 4 is 20.<|im_end|>"], ["Red.<|im_end|>"]]


def test_prepare_trains_the_replies_only_and_injects_the_default_system_prompt(smol, prepared):
    _, tokenizer = smol
    rows = datasets.load_from_disk(str(prepared))
    assert len(rows) == 2
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    for row in rows:  # BOS comes from the template once; the tokenizer adds none on top
        assert row["input_ids"][0] == tokenizer.bos_token_id == im_start and row["input_ids"][1] != im_start
    trained = [[run.removesuffix("\n") for run in trained_runs(tokenizer, row)] for row in rows]
    assert sorted(trained) == sorted(EXPECTED_REPLIES)  # the template's newline after <|im_end|>: see below
    texts = [tokenizer.decode(r["input_ids"]) for r in rows]
    with_default = [t for t in texts if DEFAULT_SYSTEM in t]
    assert len(with_default) == 1 and "What is 2 plus 3?" in with_default[0]  # the one without a system turn
    meta = json.loads((prepared / "prepare.json").read_text())
    assert meta[IDENTITY_KEY]["vocab_sha256"] == tokenizer_identity(tokenizer)["vocab_sha256"]


def test_prepare_labels_end_exactly_at_im_end(smol, prepared):
    rows = datasets.load_from_disk(str(prepared))
    assert sorted(trained_runs(smol[1], row) for row in rows) == sorted(EXPECTED_REPLIES)


def test_two_lora_steps_on_the_real_model_start_from_a_low_loss(smollm2, prepared, tmp_path):
    config = TrainConfig(
        data=prepared,
        output_dir=tmp_path / "out",
        model=str(smollm2.directory),
        method="lora",
        lora_target_modules=["q_proj", "v_proj"],  # the classic LoRA pair: fewer adapters, a faster test
        max_steps=2,
        gradient_accumulation_steps=1,
        logging_steps=1,
        progress=False,
        precision="fp32",
    )
    result = train(config)
    rows = [json.loads(x) for x in result.metrics_path.read_text().splitlines()]
    assert result.global_step == 2 and rows[0]["loss"] < 5.0
    resolved = json.loads((tmp_path / "out" / "train_config.json").read_text())["resolved"]
    assert resolved["precision_ran"] == "fp32 compute, fp32 weights"
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_train_refuses_data_prepared_with_another_tokenizer(smollm2, tmp_path):
    source = write_jsonl(tmp_path / "chats.jsonl", CONVERSATIONS * 4)
    data = tmp_path / "tiny_data"
    prepare(
        PrepareConfig(sources=[source], tokenizer="tiny:micro", out=str(data), max_length=128), progress=False
    )
    config = TrainConfig(
        data=data, output_dir=tmp_path / "out", model=str(smollm2.directory), method="lora", progress=False
    )
    with pytest.raises(TokenizerMismatchError) as err:
        train(config)
    message = str(err.value)
    assert (
        "'tiny:micro'" in message and str(smollm2.directory) in message and "vocabularies differ" in message
    )
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


def test_max_length_beyond_the_models_positions_is_refused(smollm2):
    check_max_length(str(smollm2.directory), 8192)
    with pytest.raises(InstructkitError, match="8192 positions"):
        check_max_length(str(smollm2.directory), 8193)


def test_gguf_file_as_model_matches_the_imported_directory(smollm2, smol, capsys):
    model, tokenizer = load_model_and_tokenizer(str(smollm2.gguf))
    assert "dequantized" in capsys.readouterr().err
    assert model.hf_quantizer is None and not hasattr(model.config, "quantization_config")
    assert tokenizer_identity(tokenizer) == tokenizer_identity(smol[1])
    loss = plain_text_loss(model.eval(), tokenizer)
    assert loss == pytest.approx(plain_text_loss(*smol), abs=1e-5)  # the imported directory is the GGUF
    assert loss < 5.0
