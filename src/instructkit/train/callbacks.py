"""Trainer callbacks: `metrics.jsonl` (one JSON object per log step) and a rich progress bar."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

# Keys copied from the Trainer's log dict into metrics.jsonl, renamed to stable names.
METRIC_KEYS = {
    "loss": "loss",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "tokens_per_second": "tokens_per_second",
    "trained_tokens_per_second": "trained_tokens_per_second",
    "tokens": "tokens",
    "trainable_tokens": "trainable_tokens",
    "epoch": "epoch",
    # preference tuning (train/preference.py), as TRL names them
    "rewards/chosen": "rewards/chosen",
    "rewards/rejected": "rewards/rejected",
    "rewards/margins": "rewards/margins",
    "rewards/accuracies": "rewards/accuracies",
}


class MetricsJsonlCallback(TrainerCallback):
    """Appends loss, learning rate, grad norm, tokens/s and trainable tokens to `metrics.jsonl` (rank 0)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Write one row per training log (skips the end-of-training summary, which has no 'loss')."""
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        row = {"step": state.global_step} | {v: logs[k] for k, v in METRIC_KEYS.items() if k in logs}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


class RichProgressCallback(TrainerCallback):
    """Training progress on the main process: a live bar on a terminal, periodic lines in a log file."""

    def __init__(self):
        self.progress = None

    def on_train_begin(self, args, state, control, **kwargs):
        """Start at the (possibly resumed) step."""
        if not state.is_world_process_zero:
            return
        from ..progress import Progress

        self.progress = Progress("train", total=state.max_steps, unit="step", completed=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        """Advance to the current optimizer step."""
        if self.progress is not None:
            self.progress.update(completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Show the latest loss and throughput."""
        if self.progress is None or not logs or "loss" not in logs:
            return
        self.progress.update(loss=round(float(logs["loss"]), 4), tok_s=logs.get("tokens_per_second"))

    def on_train_end(self, args, state, control, **kwargs):
        """Close the bar or write the last line."""
        if self.progress is not None:
            self.progress.close()
            self.progress = None
