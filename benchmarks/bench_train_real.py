"""Training throughput on real data with a real model: instructkit vs TRL SFTTrainer (issue #15).

Run: `python benchmarks/bench_train_real.py` (TRL from the `bench` extra; SmolLM2-135M-Instruct from
`instructkit models fetch`). Writes results/train_real.md and .json. At the defaults it takes about
20-25 minutes on an idle 2-core CPU (peak memory ~10 GB); `--steps 2 --max-length 256 --repeat 1`
checks the plumbing in a few minutes. For each method (full, LoRA) it trains the same packed token
stream with both tools and compares per-step loss and tokens/s:

- data: real instruction data from /work/shared/data (P3/T0 prompted tasks, FLAN-style, plus the
  GSM8K train split), prepared once with `instructkit data prepare --pack --max-length L` and the
  model's own tokenizer and chat template;
- instructkit: the real `train(config)` path (per-document attention `instructkit_docs` on CPU,
  logits only where a label is); a callback records step times, losses and the batches it saw;
- TRL: `SFTTrainer` with `packing=True, packing_strategy="bfd", padding_free=True`, given the same
  packed rows in TRL's packed layout (`seq_lengths`, `skip_prepare_dataset`), so both train on the
  same rows in the same order (checked: every micro-batch is hashed); sdpa attention, where
  transformers builds a block-diagonal mask from the packed `position_ids` (isolation checked);
- same weights, optimizer (AdamW, lr 2e-5, linear schedule, 3% warm-up), seed, fp32 on CPU,
  micro-batch 1 row, torch threads set by --threads for both.

Each run trains --steps optimizer steps; the first --warmup are excluded. tokens/s = tokens of the
steady-state steps / their wall time (data, forward, backward, optimizer, logging); the median over
--repeat runs (tools interleaved) is reported. A short torch.profiler pass per tool then splits self
CPU time into attention / projections / MLP / LM head + loss / data / optimizer / other
(benchmarks/profile_helper.py).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import torch
from transformers import set_seed

sys.path.insert(0, os.path.dirname(__file__))
from common import SHARED_DATA as DATA  # noqa: E402
from common import WORK_DIR  # noqa: E402
from profile_helper import StepProfiler, profile_table  # noqa: E402
from train_common import (  # noqa: E402
    MODEL,
    TOOLS,
    BaseRunRecord,
    StepRecorder,
    command_line,
    instructkit_fixed_args,
    interleaved,
    loss_table,
    parse_training,
    quiet_trainer,
    save,
    setup,
    training_parser,
    trl_fixed_args,
    trl_lora,
)

SOURCES = [*sorted(str(p) for p in (DATA / "p3_t0_subset").glob("*.jsonl")), str(DATA / "gsm8k/train.jsonl")]
LEARNING_RATE, SEED = 2e-5, 42
WORK = WORK_DIR / "train_real"


@dataclass
class RunRecord(BaseRunRecord):
    """What one training run measured."""

    batch_digests: list[str] = field(default_factory=list)  # one per micro-batch, in order
    tokens: list[int] = field(default_factory=list)  # per micro-batch
    trained: list[int] = field(default_factory=list)  # labelled next-token targets per micro-batch
    init_digest: str = ""
    profiled: bool = False  # a profiling run: not timed
    profile: dict[str, float] = field(default_factory=dict)  # category -> seconds per step
    profile_wall: float = 0.0  # wall seconds per profiled step


# --- data ---------------------------------------------------------------------------------------


def prepare_data(max_length: int) -> Path:
    """`instructkit data prepare --pack` on the real sources with the model's tokenizer (cached by command)."""
    out = WORK / f"data-{max_length}"
    command = [sys.executable, "-m", "instructkit", "data", "prepare", *SOURCES]
    command += ["--tokenizer", MODEL, "--pack", "--max-length", str(max_length), "--out", str(out)]
    stamp = out / "bench_command.txt"
    if stamp.is_file() and stamp.read_text() == shlex.join(command):
        return out
    subprocess.run(command, check=True)
    stamp.write_text(shlex.join(command))
    return out


def trl_rows(data_dir: Path):
    """The instructkit packs in TRL's packed layout: input_ids, labels and per-document `seq_lengths`."""
    import datasets

    packed = datasets.load_from_disk(str(data_dir))
    return packed.select_columns(["input_ids", "labels", "seq_lens"]).rename_column("seq_lens", "seq_lengths")


# --- recording ----------------------------------------------------------------------------------


def tensor_digest(tensors: Iterator[torch.Tensor]) -> str:
    """sha1 over the bytes of `tensors` (exact equality of weights or batches)."""
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def trainable_digest(model: torch.nn.Module) -> str:
    """Digest of the trainable parameters by name (same initial weights in both tools)."""
    named = sorted((n, p) for n, p in model.named_parameters() if p.requires_grad)
    return tensor_digest(p for _, p in named)


class Recorder(StepRecorder):
    """Step times, per-step losses and every collated micro-batch of one run; optionally a profile."""

    def __init__(self, record: RunRecord, profile_after: int = 0, profile_steps: int = 0):
        super().__init__(record)
        self.profiler = StepProfiler(profile_after, profile_steps)

    def attach(self, trainer) -> None:
        """Record the trainer's batches; in profiling runs also open category scopes around its parts."""
        inner = trainer.data_collator

        def collate(features):
            batch = inner(features)
            ids, labels = batch["input_ids"], batch["labels"]
            self.record.batch_digests.append(tensor_digest([ids, labels, batch["position_ids"]]))
            self.record.tokens.append(ids.numel())
            self.record.trained.append(int(labels[..., 1:].ne(-100).sum()))
            return batch

        trainer.data_collator = collate
        self.profiler.attach(trainer)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.record.init_digest = trainable_digest(model)
        torch.manual_seed(SEED)  # same dropout masks (LoRA) and data order in both tools
        super().on_train_begin(args, state, control, **kwargs)

    def on_step_end(self, args, state, control, **kwargs):
        super().on_step_end(args, state, control, **kwargs)
        if self.profiler.step_ended(state.global_step, self.record.step_seconds):
            self.record.profile, self.record.profile_wall = self.profiler.per_step, self.profiler.wall


# --- the two tools --------------------------------------------------------------------------------


def run_instructkit(data_dir: Path, method: str, opts, recorder: Recorder) -> None:
    """The real `instructkit train` path (train/run.py) with the recorder attached to its trainer."""
    from instructkit.train import run
    from instructkit.train.config import TrainConfig

    class RecordedTrainer(run.InstructTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(recorder)
            recorder.attach(self)

    config = TrainConfig(
        data=data_dir,
        output_dir=WORK / f"out-instructkit-{method}",
        model=MODEL,
        method=method,
        max_steps=opts.steps,
        micro_batch_size=1,
        gradient_accumulation_steps=opts.grad_accum,
        learning_rate=LEARNING_RATE,
        **instructkit_fixed_args(SEED),
    )
    set_seed(SEED)  # LoRA's initial weights: the same random draws in both tools
    with mock.patch.object(run, "InstructTrainer", RecordedTrainer):
        run.train(config)


def load_trl_model(method: str):
    """The model as a TRL user loads it: fp32, sdpa (transformers' default on CPU); a LoRA config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instructkit.models.pretrained import resolve_model_ref

    path = resolve_model_ref(MODEL)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer, trl_lora(method)


def trl_config(method: str, opts):
    """SFTConfig mirroring instructkit's run: packing bfd, padding-free, fp32, no checkpointing."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(WORK / f"out-trl-{method}"),
        max_steps=opts.steps,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=opts.grad_accum,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        warmup_steps=0.03,
        packing=True,
        packing_strategy="bfd",
        padding_free=True,
        max_length=opts.max_length,
        dataset_kwargs={"skip_prepare_dataset": True},  # rows are already packed (instructkit's packs)
        **trl_fixed_args(SEED),
    )


def run_trl(data_dir: Path, method: str, opts, recorder: Recorder) -> None:
    """TRL SFTTrainer on the same packed rows, with the recorder attached."""
    from trl import SFTTrainer

    set_seed(SEED)
    model, tokenizer, peft_config = load_trl_model(method)
    trainer = quiet_trainer(
        SFTTrainer,
        recorder,
        model=model,
        args=trl_config(method, opts),
        train_dataset=trl_rows(data_dir),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    recorder.attach(trainer)
    trainer.train()


def run_once(tool: str, method: str, data_dir: Path, opts, profile_steps: int = 0) -> RunRecord:
    """One training run of `tool`; with profile_steps, the steps after the first are profiled."""
    record = RunRecord(tool, method, profiled=bool(profile_steps))
    recorder = Recorder(record, profile_after=1, profile_steps=profile_steps)
    run = run_instructkit if tool == "instructkit" else run_trl
    if profile_steps:
        opts = argparse.Namespace(**{**vars(opts), "steps": 1 + profile_steps})
    start = time.perf_counter()
    run(data_dir, method, opts, recorder)
    print(
        f"{tool} {method}: {time.perf_counter() - start:.1f}s, steps "
        f"{[round(s, 2) for s in record.step_seconds]}, losses {[round(x, 5) for x in record.losses]}",
        flush=True,
    )
    gc.collect()
    return record


@torch.no_grad()
def trl_cross_talk(length: int = 8) -> float:
    """Largest relative change in the second document's logits when only the first document of a
    TRL padding-free batch changes (0: isolated; order 1: documents attend to each other)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model, _, _ = load_trl_model("full")
    model.eval()
    collator = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    gen = torch.Generator().manual_seed(0)
    second = torch.randint(5, 1000, (length,), generator=gen).tolist()
    logits = []
    for _ in range(2):
        first = torch.randint(5, 1000, (length,), generator=gen).tolist()
        batch = collator([{"input_ids": first + second, "seq_lengths": [length, length]}])
        batch.pop("labels")
        logits.append(model(**batch, use_cache=False).logits[0, length:])
    return float((logits[0] - logits[1]).abs().max() / logits[0].abs().max())


# --- summary and report ---------------------------------------------------------------------------


def steady(record: RunRecord, warmup: int, accum: int) -> tuple[float, int, int]:
    """(seconds, tokens, trained tokens) of the steps after the warm-up."""
    first, last = warmup * accum, len(record.step_seconds) * accum
    return (
        sum(record.step_seconds[warmup:]),
        sum(record.tokens[first:last]),
        sum(record.trained[first:last]),
    )


def summarize(records: list[RunRecord], opts) -> dict:
    """Median steady-state tokens/s per (method, tool), per-step loss differences, same-stream checks."""
    out: dict = {}
    for method in opts.methods:
        by_tool = {
            t: [r for r in records if r.method == method and r.tool == t and not r.profiled] for t in TOOLS
        }
        row: dict = {}
        for tool, runs in by_tool.items():
            # Every run trains the same batches (checked below), so the median steady-state time sets
            # tokens/s, s/step and the speed-up consistently.
            seconds = statistics.median(steady(r, opts.warmup, opts.grad_accum)[0] for r in runs)
            _, tokens, trained = steady(runs[0], opts.warmup, opts.grad_accum)
            row[tool] = {
                "tokens_per_s": tokens / seconds,
                "trained_tokens_per_s": trained / seconds,
                "step_s": seconds / (opts.steps - opts.warmup),
                "runs_steady_s": [steady(r, opts.warmup, opts.grad_accum)[0] for r in runs],
                "losses": runs[0].losses,
            }
        ik, trl = by_tool["instructkit"], by_tool["TRL"]
        deltas = [abs(a - b) for a, b in zip(ik[0].losses, trl[0].losses, strict=True)]
        n = opts.steps * opts.grad_accum
        row["max_abs_delta_loss"] = max(deltas)
        row["delta_loss_per_step"] = deltas
        row["same_batches"] = all(r.batch_digests[:n] == ik[0].batch_digests[:n] for r in ik + trl)
        row["same_init"] = ik[0].init_digest == trl[0].init_digest
        row["noise_delta_loss"] = max(
            (abs(a - b) for r in ik[1:] for a, b in zip(r.losses, ik[0].losses, strict=True)), default=None
        )
        row["speedup"] = row["instructkit"]["tokens_per_s"] / row["TRL"]["tokens_per_s"]
        out[method] = row
    return out


def loss_verdict(summary: dict) -> str:
    """One sentence on whether the two tools computed the same per-step loss, and why they may differ."""
    worst = max(row["max_abs_delta_loss"] for row in summary.values())
    same = all(row["same_batches"] and row["same_init"] for row in summary.values())
    if worst < 1e-4 and same:
        return (
            f"The per-step losses agree to {worst:.1e}: fp32 rounding of different kernels computing the same "
            "function (instructkit: one causal sdpa call per document, cross-entropy on the labelled positions; "
            "TRL: one sdpa call with a block-diagonal mask, TRL's chunked log-softmax over every position)."
        )
    return (
        f"The per-step losses DIFFER by up to {worst:.1e} (same batches: {same}): not rounding; check the "
        "batches, the initial weights and document isolation before reading the speed-up."
    )


def data_line(data_dir: Path) -> str:
    """What the packed data holds (from the prepare stats)."""
    stats = json.loads((data_dir / "stats.json").read_text())
    get = stats.get
    return (
        f"{get('examples_out', 0):,} examples (P3/T0 subset, 81 prompted-task files, FLAN-style; GSM8K train), "
        f"{get('tokens', 0):,} tokens of which {get('trainable_tokens', 0):,} carry a label, "
        f"{get('packs', 0):,} packs, packing efficiency {get('packing_efficiency', 0):.3f}"
    )


def profiled_columns(
    records: list[RunRecord], methods: list[str]
) -> list[tuple[str, dict[str, float], float]]:
    """The profiling runs as profile_table columns, ordered by method then tool."""
    profiled = [
        r for m in methods for t in TOOLS for r in records if r.profiled and r.tool == t and r.method == m
    ]
    return [(f"{r.tool} {r.method}", r.profile, r.profile_wall) for r in profiled]


def report(records: list[RunRecord], summary: dict, opts, data_dir: Path, leak: float) -> None:
    """results/train_real.md and .json."""
    steady_steps = opts.steps - opts.warmup
    lines = [
        "## Training on real data (CPU): instructkit vs TRL SFTTrainer, SmolLM2-135M-Instruct",
        "",
        command_line("bench_train_real.py", opts, "accelerate"),
        "",
        f"Data: `instructkit data prepare --pack --max-length {opts.max_length}` with the model's tokenizer and "
        f"chat template: {data_line(data_dir)}. Both tools train the same rows in the same order "
        "(TRL gets instructkit's packs in its packed layout, `seq_lengths` per document, "
        "`skip_prepare_dataset`), from the same weights, with AdamW lr 2e-5, linear schedule, 3% warm-up, "
        f"seed {SEED}, fp32, micro-batch 1 row, {opts.grad_accum} micro-batch(es) per step, no activation "
        "checkpointing; LoRA r 16, alpha 32, dropout 0.05 on all linear layers. instructkit: `train(config)` "
        "(attention `instructkit_docs`, logits only at labelled positions). TRL: `SFTTrainer(packing=True, "
        "packing_strategy='bfd', padding_free=True)`, sdpa (transformers builds a block-diagonal mask from the "
        f"packed position_ids: TRL's padding-free batch measured cross-document logit change {leak:.1e}, i.e. "
        "isolated), TRL's fused chunked LM head.",
        "",
        f"{opts.steps} optimizer steps per run, the first {opts.warmup} excluded; tokens/s = tokens of the "
        f"{steady_steps} steady-state steps / their wall time, median of {opts.repeat} run(s) per tool "
        "(interleaved). Δloss: largest |instructkit − TRL| per-step training loss over all steps.",
        "",
        "| method | tool | s/step | tokens/s | trained tokens/s | speed-up | max \\|Δloss\\| | same batches | same init |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for method, row in summary.items():
        for tool in TOOLS:
            r = row[tool]
            ours = tool == "instructkit"
            lines.append(
                f"| {method} | {tool} | {r['step_s']:.2f} | {r['tokens_per_s']:,.0f} | "
                f"{r['trained_tokens_per_s']:,.0f} | {row['speedup'] if ours else 1.0:.2f}× | "
                + (
                    f"{row['max_abs_delta_loss']:.1e} | {'yes' if row['same_batches'] else 'NO'} | "
                    f"{'yes' if row['same_init'] else 'NO'} |"
                    if ours
                    else "| | |"
                )
            )
    lines += [*loss_table(summary, "Per-step training loss:"), "", loss_verdict(summary)]
    noise = {m: row["noise_delta_loss"] for m, row in summary.items() if row["noise_delta_loss"] is not None}
    if noise:
        lines += [
            "",
            "Run-to-run |Δloss| of instructkit against itself (same settings, another run): "
            + ", ".join(f"{m} {v:.1e}" for m, v in noise.items())
            + ".",
        ]
    table = profile_table(profiled_columns(records, opts.methods))
    if table:
        lines += [
            "",
            f"Where the time goes: torch.profiler, self CPU time per step by category, over {opts.profile_steps} "
            "step(s) after one warm-up step (separate runs). Backward ops count in the category of the forward "
            "op that recorded them; 'profiled op time' is the sum of self times, the rest of the wall time is "
            "Python outside any recorded op.",
            "",
            *table,
        ]
    save("train_real", lines, opts, summary, records)


# --- main ---------------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = training_parser(__doc__.splitlines()[0], warmup=2)
    parser.add_argument("--max-length", type=int, default=2048, help="pack length (prepare --max-length)")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches (rows) per optimizer step")
    parser.add_argument(
        "--profile-steps", type=int, default=1, help="profiled steps per tool (0: no profile)"
    )
    return parse_training(parser, argv, warmup=2)


def main(argv: list[str]) -> None:
    opts = parse(argv)
    setup(opts, WORK)
    data_dir = prepare_data(opts.max_length)
    leak = trl_cross_talk()
    records: list[RunRecord] = []
    for method in opts.methods:
        records += [run_once(tool, method, data_dir, opts) for tool in interleaved(opts.repeat)]
        if opts.profile_steps:
            for tool in TOOLS:
                records.append(run_once(tool, method, data_dir, opts, profile_steps=opts.profile_steps))
    report(records, summarize(records, opts), opts, data_dir, leak)


if __name__ == "__main__":
    main(sys.argv[1:])
