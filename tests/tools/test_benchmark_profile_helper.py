"""benchmarks/profile_helper.py: a profiled step of a real (tiny) InstructTrainer run splits its self CPU
time into the model's categories, and the trainer is left as it was (scopes and patches removed)."""

from __future__ import annotations

import sys

from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from helpers.paths import REPO
from helpers.prepared import addition_dir
from instructkit.data.prepared import read_prepared
from instructkit.models.tiny import build_tiny_model
from instructkit.train.collators import PackedCollator
from instructkit.train.trainer import InstructTrainer

sys.path.insert(0, str(REPO / "benchmarks"))
from profile_helper import CATEGORIES, StepProfiler, profile_table  # noqa: E402


class _Steps(TrainerCallback):
    def __init__(self, profiler: StepProfiler):
        self.profiler, self.seconds, self.done = profiler, [], False

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(0.01)
        self.done |= self.profiler.step_ended(state.global_step, self.seconds)


def test_a_profiled_step_is_split_into_categories(tmp_path, tiny_tokenizer):
    data = read_prepared(addition_dir(tmp_path / "d", tiny_tokenizer, n=24, max_length=64))
    model = build_tiny_model("tiny:nano", tiny_tokenizer, seed=0)
    args = TrainingArguments(
        output_dir=str(tmp_path / "o"), max_steps=2, report_to="none", use_cpu=True, save_strategy="no"
    )
    trainer = InstructTrainer(
        model=model, args=args, train_dataset=data.dataset, data_collator=PackedCollator("sft"), packed=True
    )
    trainer.remove_callback(PrinterCallback)
    profiler = StepProfiler(after=1, steps=1)
    steps = _Steps(profiler)
    trainer.add_callback(steps)
    compute_loss = trainer.compute_loss
    profiler.attach(trainer)
    trainer.train()
    assert steps.done and profiler.wall == 0.01
    assert {"attention", "proj", "mlp", "head", "optim"} <= {k for k, v in profiler.per_step.items() if v > 0}
    assert set(profiler.per_step) <= set(CATEGORIES) | {"backbone"}
    assert trainer.compute_loss == compute_loss  # patches undone once the profile is complete
    assert not any(m._forward_pre_hooks for m in model.modules())
    table = profile_table([("tiny", profiler.per_step, profiler.wall)])
    assert len(table) == 2 + len(CATEGORIES) + 1 and "LM head + loss" in "".join(table)
