"""What is trained: `sft` exactly on the labelled tokens, `pretrain` on every token (but never an
example's first); LoRA trains and saves adapters only, reloads, and merges; QLoRA refuses CPU."""

from __future__ import annotations

import json

import datasets
import pytest
import torch

from helpers.prepared import copy_dir
from instructkit.errors import InstructkitError
from instructkit.train.config import TrainConfig
from instructkit.train.run import train


def _trained_tokens(result) -> int:
    return sum(json.loads(line)["trainable_tokens"] for line in result.metrics_path.read_text().splitlines())


def _run(data, out, **kw):
    base = dict(
        data=data,
        output_dir=out,
        model="tiny:nano",
        epochs=1,
        gradient_accumulation_steps=3,
        logging_steps=1,
        save_steps=1000,
        progress=False,
    )
    return train(TrainConfig(**(base | kw)))


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tiny_tokenizer):
    return copy_dir(tmp_path_factory.mktemp("obj") / "packed", tiny_tokenizer, n=24, max_length=64)


@pytest.fixture(scope="module")
def padded(tmp_path_factory, tiny_tokenizer):
    return copy_dir(tmp_path_factory.mktemp("obj") / "padded", tiny_tokenizer, n=24, pack=False)


def test_sft_trains_exactly_the_labelled_tokens(packed, tmp_path):
    ds = datasets.load_from_disk(str(packed))
    expected = sum(sum(1 for x in row if x != -100) for row in ds["labels"])
    assert _trained_tokens(_run(packed, tmp_path / "o")) == expected


@pytest.mark.parametrize("which", ["packed", "padded"])
def test_pretrain_trains_every_token_but_each_example_start(which, packed, padded, tmp_path):
    path = packed if which == "packed" else padded
    ds = datasets.load_from_disk(str(path))
    tokens = sum(len(row) for row in ds["input_ids"])
    assert _trained_tokens(_run(path, tmp_path / "o", objective="pretrain")) == tokens - 24


def test_padded_sft_matches_packed_sft_token_count(packed, padded, tmp_path):
    a = _trained_tokens(_run(packed, tmp_path / "a"))
    b = _trained_tokens(_run(padded, tmp_path / "b", micro_batch_size=4))
    assert a == b


def _logits(model, tokenizer):
    ids = tokenizer("Repeat 1 2 3.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_saves_adapters_only_reloads_and_merges(packed, tmp_path, tiny_tokenizer):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from instructkit.models.tiny import build_tiny_model

    lora = dict(method="lora", learning_rate=1e-2, lora_r=4, lora_alpha=8, lora_dropout=0.0)
    adapters = _run(packed, tmp_path / "lora", **lora).output_dir
    files = {p.name for p in adapters.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= files
    assert "model.safetensors" not in files
    targets = {
        m.rsplit(".", 1)[-1]
        for m in json.loads((adapters / "adapter_config.json").read_text())["target_modules"]
    }
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

    base = build_tiny_model("tiny:nano", tiny_tokenizer, seed=0).eval()
    before = _logits(base, tiny_tokenizer)
    reloaded = PeftModel.from_pretrained(base, str(adapters)).eval()
    after = _logits(reloaded, tiny_tokenizer)
    assert not torch.allclose(before, after, atol=1e-4)  # the adapters learned something

    merged_dir = _run(packed, tmp_path / "merged", merge_lora=True, **lora).output_dir
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    assert torch.allclose(_logits(merged, tiny_tokenizer), after, atol=1e-4)


def test_lora_target_modules_by_name_with_gradient_checkpointing(packed, tmp_path):
    out = _run(
        packed,
        tmp_path / "o",
        method="lora",
        lora_target_modules=["q_proj", "v_proj"],
        max_steps=1,
        gradient_checkpointing=True,
    )
    config = json.loads((out.output_dir / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"q_proj", "v_proj"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_qlora_on_cpu_is_a_clear_error(packed, tmp_path):
    with pytest.raises(InstructkitError, match="QLoRA .*needs a CUDA GPU"):
        _run(packed, tmp_path / "o", method="qlora")


def test_padded_mode_groups_batches_by_length(padded):
    from instructkit.train.setup import training_arguments

    config = TrainConfig(data=padded, output_dir=".", progress=False)
    assert training_arguments(config, "fp32", packed=False).train_sampling_strategy == "group_by_length"
    assert training_arguments(config, "fp32", packed=True).train_sampling_strategy == "random"
