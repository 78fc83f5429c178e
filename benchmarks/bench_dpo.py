"""DPO on CPU: instructkit `train --objective dpo` vs TRL `DPOTrainer`, SmolLM2-135M-Instruct (issue #25).

Run: `python benchmarks/bench_dpo.py` (TRL from the `bench` extra; the model from `instructkit models
fetch`). Writes results/dpo.md and .json. `--pairs 8 --steps 2 --repeat 1 --max-length 128` checks the
plumbing in a few minutes. For each method (full, LoRA) both tools train the same pairs in the same order:

- pairs: GSM8K train questions (../shared/data), chosen = the reference solution, rejected = the same
  solution with its final number changed (wrong answer, same style); `instructkit data prepare`
  with the model's tokenizer and chat template, unpacked (one pair per row) so a step is exactly
  --batch pairs in both tools;
- instructkit: the real `train(config)` path: the step's pairs as one padding-free row with
  per-document attention (`instructkit_docs`), logits only at labelled positions, the reference
  log-probabilities computed once before training (a fresh cache per run, so that pass is counted
  in the run's wall time but not in the per-step time);
- TRL: `DPOTrainer` fed the same token ids (prompt_ids/chosen_ids/rejected_ids from our rows; its own
  tokenization switched off), sdpa, padded batches, its defaults otherwise: a reference copy of the
  model run every step (full), the adapter disabled (LoRA);
- same weights, AdamW, constant lr, no warm-up, seed, fp32, dropout off (LoRA dropout 0 in both),
  torch threads set by --threads for both.

s/step: median over --repeat runs (tools interleaved) of the mean wall time of the steps after the
first --warmup. Per-step losses of the two tools are compared (they should agree to ~1e-5).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

from transformers import set_seed

sys.path.insert(0, os.path.dirname(__file__))
import train_common as tc  # noqa: E402
from common import SHARED_DATA, WORK_DIR  # noqa: E402

GSM8K = SHARED_DATA / "gsm8k" / "train.jsonl"
LEARNING_RATE, BETA, SEED = 5e-6, 0.1, 42
WORK = WORK_DIR / "dpo"


@dataclass
class RunRecord(tc.BaseRunRecord):
    """What one training run measured."""

    margins: list[float] = field(default_factory=list)
    wall_s: float = 0.0  # the whole call: model load, reference pass (instructkit), training


# --- data ---------------------------------------------------------------------------------------


def gsm8k_pairs(n: int, seed: int = 0) -> list[dict]:
    """{prompt, chosen, rejected}: a GSM8K solution, and the same solution with a wrong final number."""
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[: 4 * n]]
    rng = random.Random(seed)
    pairs = []
    for row in rows[:n]:
        answer = row["answer"]
        final = re.search(r"####\s*(-?[\d,]+)\s*$", answer)
        wrong = str(int(final.group(1).replace(",", "")) + rng.randint(1, 9)) if final else "0"
        rejected = answer[: final.start(1)] + wrong if final else answer + " 0"
        pairs.append({"prompt": row["question"], "chosen": answer, "rejected": rejected})
    return pairs


def prepare_data(pairs: int, max_length: int) -> Path:
    """`data prepare` of the pairs with the model's tokenizer, unpacked (one pair per row)."""
    from instructkit.data.prepare import PrepareConfig, prepare

    out = WORK / f"data-{pairs}-{max_length}"
    if (out / "prepare.json").is_file():
        return out
    src = WORK / f"pairs-{pairs}.jsonl"
    src.write_text("".join(json.dumps(row) + "\n" for row in gsm8k_pairs(pairs)))
    prepare(PrepareConfig(sources=[str(src)], out=str(out), tokenizer=tc.MODEL, max_length=max_length), False)
    return out


def trl_rows(data_dir: Path):
    """Our prepared rows as TRL's tokenized columns: the prompt ids and each side's labelled span."""
    import datasets

    from instructkit.data.prepared import IGNORE_INDEX, read_prepared

    def split(ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
        marked = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
        return ids[: marked[0]], ids[marked[0] : marked[-1] + 1]

    rows = []
    for row in read_prepared(str(data_dir)).dataset:
        n = row["seq_lens"][0]
        prompt, chosen = split(row["input_ids"][:n], row["labels"][:n])
        _, rejected = split(row["input_ids"][n:], row["labels"][n:])
        rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return datasets.Dataset.from_list(rows)


# --- recording ----------------------------------------------------------------------------------


class Recorder(tc.StepRecorder):
    """Step times, per-step losses and reward margins of one run."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        super().on_log(args, state, control, logs=logs, **kwargs)
        if logs and "loss" in logs:
            self.record.margins.append(float(logs.get("rewards/margins", float("nan"))))


# --- the two tools --------------------------------------------------------------------------------


def our_config(data_dir: Path, method: str, opts):
    from instructkit.train.config import TrainConfig

    return TrainConfig(
        data=data_dir,
        output_dir=WORK / f"out-instructkit-{method}",
        model=tc.MODEL,
        objective="dpo",
        dpo_loss="sigmoid",
        beta=BETA,
        method=method,
        lora_dropout=0.0,
        max_steps=opts.steps,
        micro_batch_size=opts.batch,
        gradient_accumulation_steps=1,
        optimizer="adamw",
        learning_rate=LEARNING_RATE,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        weight_decay=0.0,
        **tc.instructkit_fixed_args(SEED),
    )


def run_instructkit(data_dir: Path, method: str, opts, recorder: Recorder) -> None:
    """The real `train --objective dpo` path with the recorder on its trainer; a fresh reference cache."""
    from instructkit.train import preference, run

    class RecordedTrainer(preference.PreferenceTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(recorder)

    set_seed(SEED)
    with (
        tempfile.TemporaryDirectory() as cache,
        mock.patch.dict(os.environ, {"INSTRUCTKIT_CACHE": cache}),
        mock.patch.object(preference, "PreferenceTrainer", RecordedTrainer),
    ):
        run.train(our_config(data_dir, method, opts))


def run_trl(data_dir: Path, method: str, opts, recorder: Recorder) -> None:
    """TRL's DPOTrainer on the same ids, same initial weights (loaded by the same code), sdpa."""
    from trl import DPOConfig, DPOTrainer

    from instructkit.data.prepared import read_prepared
    from instructkit.train.setup import build_model

    class TokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset  # already TRL's tokenized columns

    set_seed(SEED)
    full = our_config(data_dir, "full", opts)
    model, tokenizer = build_model(full, read_prepared(str(data_dir)))
    model.set_attn_implementation("sdpa")
    args = DPOConfig(
        output_dir=str(WORK / f"out-trl-{method}"),
        per_device_train_batch_size=opts.batch,
        gradient_accumulation_steps=1,
        max_steps=opts.steps,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=BETA,
        loss_type=["sigmoid"],
        max_length=None,
        **tc.trl_fixed_args(SEED),
    )
    tc.quiet_trainer(
        TokenizedDPOTrainer,
        recorder,
        model=model,
        ref_model=copy.deepcopy(model) if method == "full" else None,
        args=args,
        train_dataset=trl_rows(data_dir),
        processing_class=tokenizer,
        peft_config=tc.trl_lora(method, dropout=0.0),
    ).train()


def run_once(tool: str, method: str, data_dir: Path, opts) -> RunRecord:
    record = RunRecord(tool, method)
    start = time.perf_counter()
    (run_instructkit if tool == "instructkit" else run_trl)(data_dir, method, opts, Recorder(record))
    record.wall_s = time.perf_counter() - start
    print(
        f"{tool} {method}: {record.wall_s:.1f}s, steps {[round(s, 2) for s in record.step_seconds]}, "
        f"losses {[round(x, 6) for x in record.losses]}",
        flush=True,
    )
    return record


# --- summary and report ---------------------------------------------------------------------------


def summarize(records: list[RunRecord], opts) -> dict:
    """Median steady-state s/step per (method, tool), the speed-up and the per-step loss differences."""
    out: dict = {}
    for method in opts.methods:
        row: dict = {}
        for tool in tc.TOOLS:
            runs = [r for r in records if r.method == method and r.tool == tool]
            per_run = [statistics.mean(r.step_seconds[opts.warmup :]) for r in runs]
            row[tool] = {
                "step_s": statistics.median(per_run),
                "pairs_per_s": opts.batch / statistics.median(per_run),
                "wall_s": statistics.median(r.wall_s for r in runs),
                "runs_step_s": per_run,
                "losses": runs[0].losses,
                "margins": runs[0].margins,
            }
        a, b = row["instructkit"]["losses"], row["TRL"]["losses"]
        row["max_abs_delta_loss"] = max(abs(x - y) for x, y in zip(a, b, strict=True))
        row["speedup"] = row["TRL"]["step_s"] / row["instructkit"]["step_s"]
        out[method] = row
    return out


def report(records: list[RunRecord], summary: dict, opts, data_dir: Path) -> None:
    """results/dpo.md and .json."""
    stats = json.loads((data_dir / "stats.json").read_text())
    lines = [
        "## DPO (CPU): instructkit vs TRL DPOTrainer, SmolLM2-135M-Instruct",
        "",
        tc.command_line("bench_dpo.py", opts),
        "",
        f"Data: {opts.pairs} GSM8K train questions, chosen = the reference solution, rejected = the same "
        f"solution with a wrong final number; `data prepare --max-length {opts.max_length}` with the model's "
        f"chat template ({stats.get('tokens', 0):,} tokens). Both tools train the same token ids in the same "
        f"order, {opts.batch} pairs per step, from the same weights: sigmoid loss, β {BETA}, AdamW lr "
        f"{LEARNING_RATE}, constant, no warm-up, seed {SEED}, fp32, dropout off (LoRA r 16, alpha 32, "
        "dropout 0, all linear layers). instructkit: `train --objective dpo` (one padding-free row per step, "
        "per-document attention, logits only at labelled positions; reference log-probabilities computed once "
        "before training, counted in 'run s'). TRL: `DPOTrainer` on the same ids, sdpa, padded batch, its "
        "default reference (a model copy run every step for full; the adapter disabled for LoRA).",
        "",
        f"{opts.steps} steps per run, the first {opts.warmup} excluded from s/step; median of {opts.repeat} "
        "run(s) per tool, interleaved. run s: the whole call (load, reference pass, training; instructkit's "
        "`train` also writes the final model and its card, TRL saves nothing).",
        "",
        "| method | tool | s/step | pairs/s | run s | speed-up (s/step) | max \\|Δloss\\| |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for method, row in summary.items():
        for tool in tc.TOOLS:
            r, ours = row[tool], tool == "instructkit"
            lines.append(
                f"| {method} | {tool} | {r['step_s']:.2f} | {r['pairs_per_s']:.2f} | {r['wall_s']:.1f} | "
                + (f"{row['speedup']:.2f}× | {row['max_abs_delta_loss']:.1e} |" if ours else "1.00× | |")
            )
    lines += tc.loss_table(summary, "Per-step loss:")
    tc.save("dpo", lines, opts, summary, records)


# --- main ---------------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = tc.training_parser(__doc__.splitlines()[0], warmup=1)
    parser.add_argument("--pairs", type=int, default=64, help="GSM8K pairs prepared")
    parser.add_argument("--batch", type=int, default=4, help="pairs per optimizer step")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per side (prepare --max-length)")
    opts = tc.parse_training(parser, argv, warmup=1)
    if opts.pairs < opts.batch * opts.steps:
        parser.error("--pairs must cover --batch × --steps (one epoch at most, no pair seen twice)")
    return opts


def main(argv: list[str]) -> None:
    opts = parse(argv)
    tc.setup(opts, WORK)
    data_dir = prepare_data(opts.pairs, opts.max_length)
    records: list[RunRecord] = []
    for method in opts.methods:
        records += [run_once(tool, method, data_dir, opts) for tool in tc.interleaved(opts.repeat)]
    report(records, summarize(records, opts), opts, data_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
