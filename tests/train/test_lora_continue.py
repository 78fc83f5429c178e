"""Continuing a LoRA adapter on its base (issue #20): `train --model ADAPTER --method lora` trains that
adapter further (one adapter, its own settings, its saved weights as the start), refuses LoRA options
that differ from it, and `--method full` merges it into the base first, saying so.

Tiny model saved to a folder, four chats, one batch per step; seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.chats import prepare_chats
from instructkit.data.prepared import read_prepared
from instructkit.errors import InstructkitError
from instructkit.models.adapters import BASE_FILE
from instructkit.train.collators import PaddedCollator
from instructkit.train.config import TrainConfig
from instructkit.train.run import train
from instructkit.train.setup import build_model

ADAPTER = "adapter_model.safetensors"
SHAPE = {"lora_r": 4, "lora_alpha": 8, "lora_target_modules": ["q_proj", "v_proj"]}


def run_config(data: Path, out: Path, model: str, **settings) -> TrainConfig:
    """Two steps of one four-row batch each, every step logged; no LoRA dropout, so losses are exact."""
    fields = {"method": "lora", "max_steps": 2, "micro_batch_size": 4, "gradient_accumulation_steps": 1}
    fields |= {"logging_steps": 1, "progress": False, "learning_rate": 1e-2, **settings}
    return TrainConfig(data=data, output_dir=out, model=model, **fields)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, saved_tiny_model) -> tuple[Path, Path]:
    """(prepared data, adapter folder): a rank-4 LoRA on q/v trained two steps on a saved tiny base."""
    root = tmp_path_factory.mktemp("lora_continue")
    base = shutil.copytree(saved_tiny_model, root / "base")
    data = prepare_chats(root, str(base))
    train(run_config(data, root / "adapter", str(base), lora_dropout=0.0, **SHAPE))
    return data, root / "adapter"


def first_loss(out: Path) -> float:
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["loss"]


def loss_on_data(model, data: Path, pad_id: int) -> float:
    """The model's per-token loss on every prepared row in one batch (what one training step sees)."""
    rows = list(read_prepared(data).dataset)
    batch = PaddedCollator(pad_id, "sft")(rows)
    keys = ("input_ids", "attention_mask", "labels")
    model.eval()
    with torch.no_grad():
        return float(model(**{k: batch[k] for k in keys if k in batch}).loss)


def saved_adapter_loss(adapter: Path, data: Path) -> float:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((adapter / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"], dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter))
    return loss_on_data(model, data, AutoTokenizer.from_pretrained(str(adapter)).pad_token_id)


def test_continuing_trains_the_same_adapter_from_its_saved_weights(adapter, tmp_path):
    data, start = adapter
    config = run_config(data, tmp_path / "built", str(start))
    model, _ = build_model(config, read_prepared(data))
    assert list(model.peft_config) == ["default"]  # no second adapter on top
    saved = load_file(str(start / ADAPTER))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(trainable) == len(saved) and all(".lora_" in n for n in trainable)
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model)
    assert state.keys() == saved.keys()
    assert all(torch.equal(state[k].cpu(), saved[k]) for k in saved)  # starts where the adapter ended


def test_a_continued_adapter_is_again_one_adapter_on_the_same_base(adapter, tmp_path):
    data, start = adapter
    out = tmp_path / "more"
    train(run_config(data, out, str(start)))
    before, after = (json.loads((d / "adapter_config.json").read_text()) for d in (start, out))
    assert after["base_model_name_or_path"] == before["base_model_name_or_path"]
    assert (after["r"], after["lora_alpha"]) == (4, 8)
    assert sorted(after["target_modules"]) == ["q_proj", "v_proj"]
    assert json.loads((out / BASE_FILE).read_text()) == json.loads((start / BASE_FILE).read_text())
    ran = json.loads((out / "train_config.json").read_text())  # the record says what ran
    assert (ran["lora_r"], ran["lora_alpha"], ran["lora_target_modules"]) == (4, 8, ["q_proj", "v_proj"])
    assert first_loss(out) == pytest.approx(saved_adapter_loss(start, data), abs=1e-4)
    old, new = load_file(str(start / ADAPTER)), load_file(str(out / ADAPTER))
    assert old.keys() == new.keys() and any(not torch.equal(old[k], new[k]) for k in old)


def test_lora_settings_that_differ_from_the_adapter_are_refused(adapter, tmp_path):
    data, start = adapter
    with pytest.raises(InstructkitError, match="--lora-r 8 given, the adapter has 4") as err:
        train(run_config(data, tmp_path / "r8", str(start), lora_r=8))
    assert str(start) in str(err.value)
    with pytest.raises(InstructkitError, match=r"--lora-target-modules all-linear given, the adapter has"):
        train(run_config(data, tmp_path / "all", str(start), lora_target_modules="all-linear"))
    train(run_config(data, tmp_path / "same", str(start), max_steps=1, **SHAPE))  # matching: accepted


def test_full_fine_tuning_on_an_adapter_merges_it_first_and_says_so(adapter, tmp_path, capsys):
    data, start = adapter
    out = tmp_path / "full"
    train(run_config(data, out, str(start), method="full", learning_rate=1e-4))
    log = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "it is merged into its base" in log and "fp32 compute, fp32 weights" in log  # all of it trained
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert first_loss(out) == pytest.approx(saved_adapter_loss(start, data), abs=1e-4)
