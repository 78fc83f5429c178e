"""The shipped recipe `smollm2-dpo-cpu` end to end, shrunk by `--set` to a tiny model (pairs → prepare →
DPO → eval before/after with reward accuracy on held-out pairs), and the Tülu 3 GPU recipe's settings."""

from __future__ import annotations

import json

import pytest

from instructkit.pipeline.recipe import load_recipe
from instructkit.pipeline.runner import build_pipeline


def test_tulu3_dpo_recipe_has_the_published_settings():
    recipe, _ = load_recipe("tulu3-dpo")
    train = recipe.train
    assert (train.objective, train.dpo_loss, train.beta, train.learning_rate) == (
        "dpo",
        "dpo_norm",
        5.0,
        5e-7,
    )
    assert (train.lr_scheduler, train.warmup_ratio, train.epochs) == ("linear", 0.1, 1)
    assert train.micro_batch_size * train.gradient_accumulation_steps == 128
    assert recipe.prepare.max_length == 2048 and "split=train" in recipe.pairs.task


@pytest.mark.slow
def test_smollm2_dpo_recipe_tiny(saved_tiny_model, shared_data, tmp_path):
    questions = tmp_path / "sums.jsonl"
    rows = [{"question": f"What is {a} + {b}?", "answer": a + b} for a in range(8) for b in range(5)]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = {
        "runs_dir": str(tmp_path / "runs"),
        "pairs.task": str(questions),
        "pairs.limit": 40,
        "pairs.temperature": 1.0,
        "pairs.max_new_tokens": 8,
        "pairs.seed": 4,
        "pairs.holdout": 1,
        "prepare.max_length": 128,
        "train.model": str(saved_tiny_model),
        "train.max_steps": 2,
        "train.progress": False,
        "evaluate.benchmarks": ["gsm8k:num_fewshot=0,max_new_tokens=8"],
        "evaluate.benchmark_limit": 2,
    }
    recipe, _ = load_recipe("smollm2-dpo-cpu", overrides)
    records = build_pipeline(recipe).run(log=lambda _: None)
    assert list(records) == ["pairs", "prepare", "train", "eval-base", "eval-tuned", "report"]
    pairs = records["pairs"]["summary"]
    assert pairs["pairs"] >= 1 and pairs["heldout_pairs"] == 1
    assert records["prepare"]["summary"]["examples_out"] == pairs["pairs"]
    assert records["train"]["summary"]["global_step"] == 2
    tuned = records["eval-tuned"]["summary"]
    assert tuned["pairs"] == 1 and 0 <= tuned["reward_accuracy"] <= 100
    # LoRA moved the policy off the base, so the held-out pair's margin is no longer exactly 0
    assert tuned["reward_margin"] != 0
    results = json.loads((tmp_path / "runs" / "smollm2-dpo-cpu" / "eval-tuned" / "results.json").read_text())
    assert any(name.startswith("gsm8k") for name in results["tasks"])
    assert "reward_accuracy" not in records["eval-base"]["summary"]
