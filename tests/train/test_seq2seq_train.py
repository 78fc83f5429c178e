"""Training an encoder-decoder model with the same `train` and trainer: full and LoRA, packed and
padded rows, loss falling, exact resume, and the refusals (fp16 for T5, data of the other kind)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from helpers.seq2seq import pair_rows, prepare_pairs
from instructkit.errors import InstructkitError
from instructkit.train.config import TrainConfig
from instructkit.train.run import train


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    fields = dict(
        model="tiny:t5-nano",
        preset="flan-t5",
        learning_rate=3e-3,
        max_steps=12,
        micro_batch_size=4,
        gradient_accumulation_steps=1,
        logging_steps=1,
        save_steps=6,
        progress=False,
    )
    return TrainConfig(data=data, output_dir=out, **{**fields, **kw})


def _losses(out: Path) -> list[float]:
    rows = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    return [r["loss"] for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    return prepare_pairs(
        tmp_path_factory.mktemp("s2s-packed"), pair_rows(40), max_source_length=48, pack=True
    )[1]


@pytest.fixture(scope="module")
def padded(tmp_path_factory) -> Path:
    return prepare_pairs(tmp_path_factory.mktemp("s2s-padded"), pair_rows(40))[1]


def test_full_fine_tuning_on_packed_pairs_lowers_the_loss_and_says_which_model_ran(packed, tmp_path, capfd):
    result = train(_config(packed, tmp_path / "full"))
    losses = _losses(tmp_path / "full")
    assert len(losses) == 12 and sum(losses[-3:]) < 0.5 * sum(losses[:3])
    assert "model: encoder-decoder (T5ForConditionalGeneration)" in capfd.readouterr().err
    assert (result.output_dir / "config.json").is_file()


def test_lora_on_q_and_v_lowers_the_loss_and_saves_a_seq2seq_adapter(padded, tmp_path):
    out = tmp_path / "lora"
    train(_config(padded, out, method="lora", lora_target_modules="q,v", learning_rate=1e-2))
    losses = _losses(out)
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3])
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_2_SEQ_LM" and set(adapter["target_modules"]) == {"q", "v"}


def test_a_killed_run_resumed_ends_where_the_uninterrupted_one_ends(packed, tmp_path):
    finished = tmp_path / "finished"
    train(_config(packed, finished))
    unfinished = tmp_path / "unfinished"
    shutil.copytree(finished, unfinished)
    shutil.rmtree(unfinished / "checkpoint-12")
    resumed = train(_config(packed, unfinished, resume=True))
    assert resumed.resumed_from.name == "checkpoint-6"
    assert _losses(unfinished) == _losses(finished)
    a, b = (load_file(str(d / "model.safetensors")) for d in (finished, unfinished))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_fp16_is_refused_for_t5_with_the_reason(padded, tmp_path):
    with pytest.raises(InstructkitError, match="fp16 refused.*overflow"):
        train(_config(padded, tmp_path / "fp16", precision="fp16"))


def test_data_prepared_for_the_other_kind_of_model_is_refused(padded, tmp_path):
    causal = prepare_pairs(tmp_path / "causal", pair_rows(8), tokenizer="tiny:nano")[1]
    with pytest.raises(InstructkitError, match="prepared for a causal model.*is seq2seq"):
        train(_config(causal, tmp_path / "a"))
    with pytest.raises(InstructkitError, match="prepared for a seq2seq model.*is causal"):
        train(_config(padded, tmp_path / "b", model="tiny:nano"))
