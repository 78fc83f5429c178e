"""What the two training benchmarks share (bench_train_real: SFT vs TRL `SFTTrainer`; bench_dpo: DPO vs
TRL `DPOTrainer`): the model, the tools and their run order, options, step recording, TRL's fixed
arguments and LoRA config, and the report's header, per-step loss table and files."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from common import machine, write_section

MODEL = "pretrained:smollm2-135m-instruct"
TOOLS = ("instructkit", "TRL")


@dataclass
class BaseRunRecord:
    """What one training run measured (each benchmark adds its own fields)."""

    tool: str
    method: str
    step_seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def setup(opts: argparse.Namespace, work: Path) -> None:
    """Before the first run: torch threads for both tools, and the work folder."""
    torch.set_num_threads(opts.threads)
    work.mkdir(parents=True, exist_ok=True)


def instructkit_fixed_args(seed: int) -> dict[str, Any]:
    """The `TrainConfig` settings both benchmarks set alike: fp32, a log line every step, no checkpoint
    during the run, no progress bar, the output folder replaced."""
    return {
        "precision": "fp32",
        "seed": seed,
        "logging_steps": 1,
        "save_steps": 10**6,
        "progress": False,
        "overwrite": True,
    }


def interleaved(repeat: int) -> list[str]:
    """The tools in run order: `repeat` rounds, alternating which tool goes first."""
    return [tool for r in range(repeat) for tool in (TOOLS if r % 2 == 0 else TOOLS[::-1])]


# --- options ------------------------------------------------------------------------------------


def training_parser(description: str, warmup: int) -> argparse.ArgumentParser:
    """The options both benchmarks take: steps, warm-up steps (default `warmup`), repeats, threads, methods."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run")
    parser.add_argument(
        "--warmup", type=int, help=f"first steps excluded from the timing (default {warmup}, < steps)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool and method (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads for both tools")
    parser.add_argument("--methods", default="full,lora", help="comma-separated: full, lora")
    return parser


def parse_training(parser: argparse.ArgumentParser, argv: list[str], warmup: int) -> argparse.Namespace:
    """Parse `argv`: methods as a list, the command line kept (`argv`), warm-up defaulted and checked."""
    opts = parser.parse_args(argv)
    opts.methods = [m.strip() for m in opts.methods.split(",") if m.strip()]
    opts.argv = argv
    if opts.warmup is None:
        opts.warmup = max(0, min(warmup, opts.steps - 1))
    if opts.warmup >= opts.steps:
        parser.error("--warmup must be below --steps")
    return opts


# --- recording ----------------------------------------------------------------------------------


class StepRecorder(TrainerCallback):
    """Step times and per-step training losses of one run, into `record.step_seconds` and `record.losses`."""

    def __init__(self, record: Any):
        self.record, self.last = record, 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.record.step_seconds.append(now - self.last)
        self.last = now

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.record.losses.append(float(logs["loss"]))


# --- TRL ------------------------------------------------------------------------------------------


def trl_fixed_args(seed: int) -> dict[str, Any]:
    """The TRL arguments both benchmarks set alike, as instructkit runs: AdamW, no weight decay, clip 1.0,
    fp32, no activation checkpointing, a log line every step, nothing saved, CPU, no progress bar."""
    return {
        "weight_decay": 0.0,
        "optim": "adamw_torch",
        "max_grad_norm": 1.0,
        "bf16": False,  # TRL's default is bf16; both run fp32 here
        "gradient_checkpointing": False,  # TRL's default is on; instructkit's is off
        "seed": seed,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
    }


def lora_settings() -> dict:
    """instructkit's LoRA defaults (TrainSettings), used for both tools."""
    from instructkit.train.config import TrainSettings

    fields = TrainSettings.model_fields
    return {k: fields[f"lora_{k}"].default for k in ("r", "alpha", "dropout", "target_modules")}


def trl_lora(method: str, **overrides: Any) -> Any:
    """instructkit's LoRA defaults (with `overrides`) as TRL's `peft_config`; None for full fine-tuning."""
    from peft import LoraConfig

    if method != "lora":
        return None
    lora = lora_settings() | overrides
    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        task_type="CAUSAL_LM",
    )


def quiet_trainer(trainer_class: type, recorder: TrainerCallback, **kwargs: Any) -> Any:
    """A TRL trainer with the recorder attached and, as instructkit does, no per-step prints."""
    trainer = trainer_class(callbacks=[recorder], **kwargs)
    trainer.remove_callback(PrinterCallback)
    return trainer


# --- report -------------------------------------------------------------------------------------


def versions(*extra: str) -> str:
    """instructkit, torch, transformers, TRL and peft versions, then those of the `extra` modules."""
    import importlib

    import peft
    import transformers
    import trl

    import instructkit

    parts = [
        f"instructkit {instructkit.__version__}",
        f"torch {torch.__version__}",
        f"transformers {transformers.__version__}",
        f"TRL {trl.__version__}",
        f"peft {peft.__version__}",
    ]
    return ", ".join(parts + [f"{name} {importlib.import_module(name).__version__}" for name in extra])


def command_line(script: str, opts: argparse.Namespace, *extra: str) -> str:
    """The report's first line after its title: the command, the machine, threads and versions."""
    command = (f"python benchmarks/{script} " + " ".join(opts.argv)).strip()
    return f"`{command}` — {machine()}, {opts.threads} torch threads; {versions(*extra)}."


def loss_table(summary: dict, title: str) -> list[str]:
    """Markdown lines: each method's per-step loss of both tools and their difference."""
    lines = ["", title, "", "| method | step | instructkit | TRL | \\|Δ\\| |", "|---|---:|---:|---:|---:|"]
    for method, row in summary.items():
        for i, (a, b) in enumerate(zip(row["instructkit"]["losses"], row["TRL"]["losses"], strict=True)):
            lines.append(f"| {method} | {i + 1} | {a:.6f} | {b:.6f} | {abs(a - b):.1e} |")
    return lines


def save(name: str, lines: list[str], opts: argparse.Namespace, summary: dict, records: list) -> None:
    """results/<name>.md from `lines`, results/<name>.json with the options, summary and every run."""
    data = {"options": {k: v for k, v in vars(opts).items() if k != "argv"}, "summary": summary}
    data["runs"] = [asdict(r) for r in records]
    write_section(name, "\n".join(lines), data)
