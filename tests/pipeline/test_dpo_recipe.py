"""The shipped recipe `smollm2-dpo-cpu` end to end, shrunk by `--set` to a tiny model (pairs → prepare →
DPO → eval before/after: exact match, reward accuracy on held-out pairs, judge win rate, all in the report),
and the Tülu 3 GPU recipe's settings."""

from __future__ import annotations

import json

import pytest

from instructkit.errors import InstructkitError
from instructkit.pipeline.recipe import load_recipe
from instructkit.pipeline.runner import build_pipeline

TASK = "arithmetic_subtract"  # the shipped recipe's task (train split for pairs, eval split to score)


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


def test_a_judge_without_the_base_evaluated_is_refused_before_anything_runs():
    with pytest.raises(InstructkitError, match="judge"):
        load_recipe("smollm2-dpo-cpu", {"evaluate.compare_base": False})


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
        "evaluate.benchmarks": [
            f"catalog/{TASK}:templates=sub_1|sub_5,extractor=last_number,max_new_tokens=8"
        ],
        "evaluate.benchmark_limit": 3,
    }
    recipe, _ = load_recipe("smollm2-dpo-cpu", overrides)
    assert recipe.judge is not None and recipe.judge.task == f"{TASK}/sub_1"  # the shipped judge task
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
    # the judge saw every test prompt both models answered, each in both orders
    assert tuned["judged"] == 3 and 0 <= tuned["judge_win_rate"] <= 100
    run = tmp_path / "runs" / "smollm2-dpo-cpu"
    judge = json.loads((run / "eval-tuned" / "judge.json").read_text())
    assert judge["task"] == f"{TASK}/sub_1" and all(len(item["verdicts"]) == 2 for item in judge["items"])
    results = json.loads((run / "eval-tuned" / "results.json").read_text())
    assert {f"{TASK}/sub_1", f"{TASK}/sub_5"} <= set(
        results["tasks"]
    )  # test split, trained + held-out template
    assert "reward_accuracy" not in records["eval-base"]["summary"]
    report = (run / "report.md").read_text()
    section = report[report.index("## Preferences") :]
    assert "reward accuracy (held-out pairs)" in section and "1 pairs" in section
    assert f"judge win rate, tuned over base ({TASK}/sub_1)" in section and "3 prompts" in section
    split = sum(item["b_score"] == 0.5 for item in judge["items"])
    assert f"{split} of 3 prompts got a split verdict or none" in section
    task_table = report[report.index("## Evaluation by task") : report.index("## Preferences")]
    assert f"{TASK}/sub_5" in task_table and "base [95% CI]" in task_table  # exact match base vs tuned
    html = (run / "report.html").read_text()
    assert "Preferences" in html and "judge win rate" in html
