"""Why `smollm2-cpu` printed other numbers on every rerun: its new LoRA adapter was initialised from
torch's global generator before the Trainer seeds it, and torch starts that generator from a random
seed in every process. A new LoRA now starts from the run's seed, whatever ran before it."""

from __future__ import annotations

import copy
import subprocess
import sys

import torch

from instructkit.train.config import TrainConfig
from instructkit.train.lora import adapt_model


def _lora_weights(base, seed: int) -> dict[str, torch.Tensor]:
    config = TrainConfig(
        data="unused",
        output_dir="unused",
        method="lora",
        lora_r=4,
        lora_alpha=8,
        lora_target_modules=["q_proj", "v_proj"],
        seed=seed,
    )
    model = adapt_model(copy.deepcopy(base), config, None)
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}


def test_torch_starts_each_process_from_a_random_seed():
    """The premise: without a seed, two processes draw different numbers (so an unseeded init differs)."""
    draw = [sys.executable, "-c", "import torch; print(torch.rand(1).item())"]
    first, second = (subprocess.run(draw, capture_output=True, text=True, check=True).stdout for _ in "ab")
    assert first != second


def test_a_new_lora_starts_from_the_run_seed_whatever_the_generator_did_before(tiny_model):
    first = _lora_weights(tiny_model, seed=42)
    torch.rand(1000)  # another stage, or another process's random start, moved the global generator
    again = _lora_weights(tiny_model, seed=42)
    other = _lora_weights(tiny_model, seed=7)
    assert first and first.keys() == again.keys()
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first)
