"""Training throughput: instructkit (packed, padding-free) vs TRL SFTTrainer (packing) vs a padded
`transformers.Trainer`, side by side in one run: same tiny model, data, optimizer and CPU.

Run: `python benchmarks/bench_train.py` (TRL from the `bench` extra; skipped, saying so, if absent).
Writes results/train.md. The measure is trained tokens per second: non-pad tokens that carry a label,
divided by the time inside the training loop (`train_runtime`); every run trains one epoch over the
same examples. Each final model is then scored on the same held-out examples (token-mean loss, one
example at a time), which must agree within noise.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import datasets
import pyarrow as pa
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import WORK_DIR, machine, synthetic_conversations, write_section  # noqa: E402
from instructkit.data.packing import pack_table  # noqa: E402
from instructkit.models.tiny import (
    build_tiny_model,
    train_tiny_tokenizer,  # noqa: E402
)

N = int(os.environ.get("BENCH_TRAIN_N", "1200"))
HELD_OUT = 100
MAX_LENGTH = 1024
PRESET = os.environ.get("BENCH_TRAIN_PRESET", "tiny:micro")
LR, ACCUM = 1e-3, 4
WORK = WORK_DIR / "train"


def tokenize(tokenizer, conversation: dict) -> dict:
    """Prompt via the chat template (no loss), reply + end-of-text (loss)."""
    user, reply = conversation["messages"][0]["content"], conversation["messages"][1]["content"]
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )
    p = tokenizer(text, add_special_tokens=False)["input_ids"]
    a = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": p + a, "labels": [-100] * len(p) + a}


def build_data():
    """Tokenizer trained on the texts, tokenized rows under MAX_LENGTH, and the held-out rows."""
    convs = synthetic_conversations(N + HELD_OUT, seed=0, median_words=60)
    texts = [m["content"] for c in convs for m in c["messages"]]
    tokenizer = train_tiny_tokenizer(texts, vocab_size=2048)
    rows = [r for r in (tokenize(tokenizer, c) for c in convs) if len(r["input_ids"]) <= MAX_LENGTH]
    return tokenizer, rows[:-HELD_OUT], rows[-HELD_OUT:]


def trained_tokens(rows) -> int:
    """Labelled tokens the model predicts (the first token of a row is never a target)."""
    return sum(sum(1 for x in r["labels"][1:] if x != -100) for r in rows)


def write_prepared_dir(tokenizer, rows) -> str:
    """The `data prepare` layout: packed dataset, prepare.json, tokenizer/."""
    path = WORK / "data"
    shutil.rmtree(path, ignore_errors=True)
    table = pa.table({"input_ids": [r["input_ids"] for r in rows], "labels": [r["labels"] for r in rows]})
    packed, stats = pack_table(table, MAX_LENGTH)
    datasets.Dataset(packed).save_to_disk(str(path))
    (path / "prepare.json").write_text(json.dumps({"max_length": MAX_LENGTH, "packed": True}))
    tokenizer.save_pretrained(str(path / "tokenizer"))
    return str(path), stats


def run_instructkit(data_dir: str, seed: int = 42):
    from instructkit.train.config import TrainConfig
    from instructkit.train.run import train

    out = WORK / f"instructkit-{seed}"
    config = TrainConfig(
        seed=seed,
        data=data_dir,
        output_dir=out,
        model=PRESET,
        epochs=1,
        micro_batch_size=1,
        gradient_accumulation_steps=ACCUM,
        learning_rate=LR,
        preset="tulu",
        logging_steps=10,
        save_steps=10**6,
        progress=False,
        overwrite=True,
    )
    result = train(config)
    from transformers import AutoModelForCausalLM

    return result.train_runtime, AutoModelForCausalLM.from_pretrained(str(out))


def _hf_args(out, batch: int, **kw) -> dict:
    """TrainingArguments fields shared by the TRL and padded baselines (same optimizer as instructkit)."""
    return dict(
        output_dir=str(out),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=ACCUM,
        num_train_epochs=1,
        learning_rate=LR,
        lr_scheduler_type="linear",
        warmup_steps=0.03,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=42,
        **kw,
    )


def run_trl(tokenizer, rows):
    from trl import SFTConfig, SFTTrainer

    ds = datasets.Dataset.from_list(
        [
            {"input_ids": r["input_ids"], "completion_mask": [int(x != -100) for x in r["labels"]]}
            for r in rows
        ]
    )
    model = build_tiny_model(PRESET, tokenizer, seed=0)
    args = SFTConfig(
        **_hf_args(WORK / "trl", 1), packing=True, max_length=MAX_LENGTH, completion_only_loss=True
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    return trainer.train().metrics["train_runtime"], model


def run_padded(tokenizer, rows, batch: int):
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    ds = datasets.Dataset.from_list(rows)
    model = build_tiny_model(PRESET, tokenizer, seed=0)
    args = TrainingArguments(**_hf_args(WORK / "padded", batch))
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collator)
    return trainer.train().metrics["train_runtime"], model


@torch.no_grad()
def held_out_loss(model, rows) -> float:
    """Token-mean next-token loss on the held-out rows, one row at a time (no padding, no packing)."""
    model.eval()
    total, count = 0.0, 0
    for r in rows:
        ids, labels = torch.tensor([r["input_ids"]]), torch.tensor([r["labels"]])
        n = int(labels[:, 1:].ne(-100).sum())
        total += model(input_ids=ids, labels=labels, use_cache=False).loss.item() * n
        count += n
    return total / count


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tokenizer, rows, held = build_data()
    data_dir, pstats = write_prepared_dir(tokenizer, rows)
    tokens = trained_tokens(rows)
    runs = {"instructkit (packed, padding-free)": lambda: run_instructkit(data_dir)}
    try:
        import trl

        runs[f"TRL {trl.__version__} SFTTrainer (packing=True)"] = lambda: run_trl(tokenizer, rows)
        trl_note = ""
    except ImportError:
        trl_note = "TRL is not installed here (`pip install 'instructkit[bench]'`), so its row is missing.\n"
        print(trl_note)
    batch = max(1, round(len(rows) / pstats.packs))  # as many examples per step as a packed micro-batch holds
    runs[f"transformers.Trainer (padded, batch {batch})"] = lambda: run_padded(tokenizer, rows, batch)
    runs["instructkit, another data-order seed (noise)"] = lambda: run_instructkit(data_dir, seed=7)
    results = {}
    for name, fn in runs.items():
        start = time.perf_counter()
        runtime, model = fn()
        results[name] = {
            "train_runtime_s": runtime,
            "trained_tokens_per_s": tokens / runtime,
            "held_out_loss": held_out_loss(model, held),
            "wall_s": time.perf_counter() - start,
        }
        print(name, results[name], flush=True)
    report(results, tokens, len(rows), pstats, trl_note)


def report(results: dict, tokens: int, n_rows: int, pstats, trl_note: str) -> None:
    ours = next(iter(results.values()))["trained_tokens_per_s"]
    lines = [
        "## Training throughput (CPU)",
        "",
        f"`python benchmarks/bench_train.py` — {machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads. Model `{PRESET}` (same init), {n_rows} synthetic conversations (heavy-tailed lengths, max "
        f"{MAX_LENGTH} tokens), one epoch, AdamW lr {LR}, linear schedule, {ACCUM} micro-batches per step "
        "(a packed row, or as many padded examples as a packed row holds on average). "
        f"{tokens:,} trained (labelled, non-pad) tokens per run; packing efficiency {pstats.efficiency:.3f} "
        f"({pstats.packs} rows).",
        "",
        "| trainer | train time (s) | trained tokens/s | vs instructkit | held-out loss |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['train_runtime_s']:.1f} | {r['trained_tokens_per_s']:,.0f} | "
            f"{r['trained_tokens_per_s'] / ours:.2f}× | {r['held_out_loss']:.4f} |"
        )
    lines += [
        "",
        trl_note + "Held-out loss: token mean over the same held-out conversations, run one at a time; "
        "the last row (same trainer, another data order) shows how much it moves by chance.",
    ]
    write_section("train", "\n".join(lines), {"tokens": tokens, "rows": n_rows, "results": results})


if __name__ == "__main__":
    main()
