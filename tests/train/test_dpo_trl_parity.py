"""`train --objective dpo` against TRL on the same pairs in the same order: per-step loss and rewards
(chosen, rejected, margins, accuracies) within 1e-5, for `sigmoid` (TRL's `DPOTrainer`, reference copy)
and `simpo` (TRL's `CPOTrainer`, loss_type="simpo", cpo_alpha=0), on the tiny model and SmolLM2-135M.

Both trainers get the same token ids: TRL is fed the ids of our prepared rows (its own tokenization is
switched off by overriding its dataset preparation, nothing else), so what is compared is the training
itself: log-probabilities, losses, rewards, gradients and optimizer steps. Each step holds `BATCH` pairs
(our rows are prepared unpacked, one pair per row, so `micro_batch_size` rows are `BATCH` pairs), both
samplers are the Trainer's seeded random sampler over the same number of rows, fp32, constant lr, no
warm-up, no weight decay, dropout off.
"""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("trl", reason="TRL parity needs trl (pyproject's test extra)")

from helpers.files import write_jsonl  # noqa: E402
from instructkit.data.prepare import PrepareConfig, prepare  # noqa: E402
from instructkit.data.prepared import IGNORE_INDEX, read_prepared  # noqa: E402
from instructkit.train.config import TrainConfig  # noqa: E402
from instructkit.train.run import train  # noqa: E402
from instructkit.train.setup import build_model  # noqa: E402

TOL = 1e-5
BATCH = 2  # pairs per optimizer step
REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTKIT_CACHE", str(tmp_path / "cache"))


def parity_pairs(n: int, seed: int) -> list[dict]:
    """Short {prompt, chosen, rejected} pairs of varied lengths (so padding and ordering matter); the
    rejected reply is other digits, close enough that SmolLM2's loss is not saturated."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 6)))
        wrong = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 6)))
        rows.append({"prompt": f"Repeat {digits}.", "chosen": digits, "rejected": wrong})
    return rows


def prepare_pairs(root, tokenizer, pairs: list[dict], max_length: int = 64):
    """`data prepare` of the pairs, unpacked: one pair per row, rows in source order."""
    tokenizer.save_pretrained(root / "tok")
    src = write_jsonl(root / "pairs.jsonl", pairs)
    out = root / "data"
    prepare(
        PrepareConfig(
            sources=[src], out=str(out), tokenizer=str(root / "tok"), max_length=max_length, pack=False
        ),
        False,
    )
    return out


def split_side(ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of one side: the completion is exactly the labelled span (the reply and
    its end-of-turn token); anything the template writes after it is left out, as it does not change a
    labelled token's log-probability."""
    marked = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    start, end = marked[0], marked[-1] + 1
    assert marked == list(range(start, end)), "a pair's reply must be one labelled span"
    assert labels[start:end] == ids[start:end]
    return ids[:start], ids[start:end]


def trl_rows(data_dir) -> list[dict]:
    """Our prepared rows as TRL's tokenized columns (prompt_ids, chosen_ids, rejected_ids), in row order."""
    rows = []
    for row in read_prepared(str(data_dir)).dataset:
        assert list(row["sides"]) == [0, 1], "parity rows must hold one pair each"
        n = row["seq_lens"][0]
        prompt, chosen = split_side(row["input_ids"][:n], row["labels"][:n])
        prompt_r, rejected = split_side(row["input_ids"][n:], row["labels"][n:])
        assert prompt == prompt_r, "both sides share the prompt's ids"
        rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return rows


def our_config(data, out, model: str, loss: str, steps: int, **kw) -> TrainConfig:
    """The run both trainers repeat: fp32, constant lr, no warm-up or decay, `BATCH` pairs per step."""
    base = dict(
        data=str(data),
        output_dir=str(out),
        model=model,
        objective="dpo",
        dpo_loss=loss,
        max_steps=steps,
        micro_batch_size=BATCH,
        gradient_accumulation_steps=1,
        optimizer="adamw",
        learning_rate=1e-3,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        precision="fp32",
        seed=7,
        logging_steps=1,
        save_steps=1000,
        progress=False,
    )
    return TrainConfig(**{**base, **kw})


def ours(config: TrainConfig) -> list[dict]:
    """Per-step logs of `train --objective dpo`."""
    result = train(config)
    return [json.loads(line) for line in result.metrics_path.read_text().splitlines()]


def trl_model(config: TrainConfig):
    """The same initial weights as our run (built by the same code), with padded attention for TRL."""
    model, tokenizer = build_model(config, read_prepared(config.data))
    model.set_attn_implementation("sdpa")
    return model.float(), tokenizer


def trl_common(config: TrainConfig, out) -> dict:
    """TrainingArguments both TRL trainers share, equal to ours."""
    return dict(
        output_dir=str(out),
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=config.max_grad_norm,
        optim="adamw_torch",
        seed=config.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        bf16=False,
        fp16=False,
        beta=config.beta,
        max_length=None,
    )


def trl_dpo(config: TrainConfig, rows: list[dict], out) -> list[dict]:
    """TRL's DPOTrainer (sigmoid) on our ids, with a reference copy of equal weights."""
    import copy

    import datasets
    from trl import DPOConfig, DPOTrainer

    class TokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset  # already TRL's tokenized columns (prompt_ids, chosen_ids, rejected_ids)

    model, tokenizer = trl_model(config)
    args = DPOConfig(**trl_common(config, out), loss_type=[config.dpo_loss], precompute_ref_log_probs=False)
    trainer = TokenizedDPOTrainer(
        model=model,
        ref_model=copy.deepcopy(model),
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.train()
    return [r for r in trainer.state.log_history if "loss" in r]


def trl_simpo(config: TrainConfig, rows: list[dict], out) -> list[dict]:
    """TRL's CPOTrainer with loss_type="simpo" and cpo_alpha=0 (SimPO) on our ids."""
    import datasets
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    def side(prompt: list[int], reply: list[int]) -> dict:
        ids = prompt + reply
        return {
            "input_ids": ids,
            "attention_mask": [1] * len(ids),
            "labels": [IGNORE_INDEX] * len(prompt) + reply,
        }

    class TokenizedCPOTrainer(CPOTrainer):
        def tokenize_row(self, feature, model=None):
            prompt = feature["prompt_ids"]
            out = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
            for name in ("chosen", "rejected"):
                out |= {f"{name}_{k}": v for k, v in side(prompt, feature[f"{name}_ids"]).items()}
            return out

    model, tokenizer = trl_model(config)
    args = CPOConfig(
        **trl_common(config, out),
        loss_type="simpo",
        cpo_alpha=0.0,
        simpo_gamma=config.simpo_gamma,
        label_smoothing=config.label_smoothing,
        remove_unused_columns=False,
    )
    text = {"prompt": "", "chosen": "", "rejected": ""}  # TRL's string columns; the ids above are used
    dataset = datasets.Dataset.from_list([{**r, **text} for r in rows])
    trainer = TokenizedCPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    return [r for r in trainer.state.log_history if "loss" in r]


def assert_same_steps(mine: list[dict], theirs: list[dict], steps: int, reference: bool) -> None:
    """Loss and rewards within TOL at every step. At step 1 of a reference loss the
    policy is the reference, so every margin is 0 up to float noise and accuracy is a coin toss: there the
    margins must be ~0 in both and accuracy is not compared."""
    assert [r["step"] for r in mine] == list(range(1, steps + 1))
    assert len(theirs) == steps
    off = []
    for step, (a, b) in enumerate(zip(mine, theirs), 1):
        keys = REWARD_KEYS
        if reference and step == 1:
            assert abs(a["rewards/margins"]) < TOL and abs(b["rewards/margins"]) < TOL
            keys = REWARD_KEYS[:-1]
        for key in ("loss", *keys):
            if abs(a[key] - b[key]) > TOL:
                off.append(f"step {step} {key}: ours {a[key]} TRL {b[key]} (|Δ| {abs(a[key] - b[key]):.1e})")
    assert not off, "\n".join(off)
    assert mine[-1]["loss"] != mine[0]["loss"], "the runs must train, or parity says little"


def run_parity(root, tokenizer, model: str, loss: str, pairs: list[dict], steps: int, **kw) -> None:
    data = prepare_pairs(root, tokenizer, pairs)
    config = our_config(data, root / "ours", model, loss, steps, **kw)
    mine = ours(config)
    rows = trl_rows(data)
    assert len(rows) == len(pairs)
    runner = trl_dpo if loss == "sigmoid" else trl_simpo
    theirs = runner(config, rows, root / "trl")
    assert_same_steps(mine, theirs, steps, reference=loss == "sigmoid")


# --- the tiny model ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss, kw", [("sigmoid", {"beta": 0.5}), ("simpo", {"beta": 2.0, "simpo_gamma": 0.5})]
)
def test_tiny_model_matches_trl_step_by_step(tmp_path, tiny_tokenizer, loss, kw):
    run_parity(
        tmp_path, tiny_tokenizer, "tiny:nano", loss, parity_pairs(8, 0), steps=4, learning_rate=3e-3, **kw
    )


# --- SmolLM2-135M -----------------------------------------------------------------------------------


# SimPO's rewards are β × the mean token log-prob, and fp32 puts ~1e-5 of noise on SmolLM2's mean
# log-prob in either tool (measured against a float64 forward: sdpa 0.4-1.0e-5, ours 0.7-1.3e-5 per
# token; ours vs TRL 1.3e-5): at β = 2 the chosen reward differs by 2.6e-5, so β = 0.5 keeps 1e-5.
@pytest.mark.slow
@pytest.mark.parametrize(
    "loss, kw", [("sigmoid", {"beta": 0.1}), ("simpo", {"beta": 0.5, "simpo_gamma": 0.5})]
)
def test_smollm2_matches_trl_step_by_step(tmp_path, smollm2, loss, kw):
    from instructkit.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(smollm2.directory))
    model = str(smollm2.directory)
    # Two steps hold all that three did: step 2 runs on weights one optimizer step from both sides' start
    # (and, for sigmoid, the first step where the policy differs from the reference); each step costs
    # SmolLM2 forward/backward passes in both tools, so a third step only repeats step 2's check.
    run_parity(tmp_path, tokenizer, model, loss, parity_pairs(4, 1), steps=2, learning_rate=1e-5, **kw)
