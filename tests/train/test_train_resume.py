"""Runs survive: a run SIGKILLed while writing a checkpoint resumes from the previous complete one and
reproduces the uninterrupted run's loss sequence exactly (data order, RNG, optimizer, scheduler)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers.prepared import copy_dir
from instructkit.errors import InstructkitError
from instructkit.train import checkpoint as ckpt
from instructkit.train.config import TrainConfig
from instructkit.train.run import train

STEPS, SAVE_EVERY, KILL_AT = 8, 2, 6

# The child process runs the real `train`, but SIGKILLs itself halfway through writing checkpoint-6:
# after the weights and optimizer are on disk, before the RNG and trainer state are.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from instructkit.train.config import TrainConfig
    from instructkit.train.trainer import InstructTrainer
    from instructkit.train.run import train

    original = InstructTrainer._save_rng_state

    def dying_save_rng_state(self, output_dir):
        if self.state.global_step == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, output_dir)

    InstructTrainer._save_rng_state = dying_save_rng_state
    train(TrainConfig.model_validate_json(sys.argv[1]))
    """
)


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig(
        data=data,
        output_dir=out,
        model="tiny:nano",
        max_steps=STEPS,
        gradient_accumulation_steps=2,
        logging_steps=1,
        save_steps=SAVE_EVERY,
        save_total_limit=2,
        progress=False,
        **kw,
    )


def _losses(metrics: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, metrics.read_text().splitlines())]


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_tokenizer):
    return copy_dir(tmp_path_factory.mktemp("resume") / "data", tiny_tokenizer, n=40, max_length=48)


@pytest.mark.slow
def test_sigkill_mid_checkpoint_then_resume_reproduces_the_uninterrupted_run(data, tmp_path):
    reference = train(_config(data, tmp_path / "ref"))
    expected = _losses(reference.metrics_path)
    assert [s for s, _ in expected] == list(range(1, STEPS + 1))

    out = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD.format(kill_at=KILL_AT), _config(data, out).model_dump_json()],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -9, child.stderr[-2000:]
    assert (out / ckpt.STAGING / f"checkpoint-{KILL_AT}").is_dir()  # half-written, never published
    assert not (out / f"checkpoint-{KILL_AT}").exists()
    assert ckpt.last_good_checkpoint(out).name == f"checkpoint-{KILL_AT - SAVE_EVERY}"

    resumed = train(_config(data, out, resume=True))
    assert resumed.resumed_from.name == f"checkpoint-{KILL_AT - SAVE_EVERY}"
    assert _losses(resumed.metrics_path) == expected  # exactly, step by step
    assert resumed.final_loss == reference.final_loss
    assert [c.name for c in ckpt.checkpoints(out)] == ["checkpoint-6", "checkpoint-8"]  # last K=2 kept
    assert not (out / ckpt.STAGING).exists()


def test_existing_checkpoints_need_resume_or_overwrite(data, tmp_path):
    out = tmp_path / "run"
    train(_config(data, out).model_copy(update={"max_steps": 2}))
    with pytest.raises(InstructkitError, match="--resume"):
        train(_config(data, out).model_copy(update={"max_steps": 2}))
    again = train(_config(data, out, overwrite=True).model_copy(update={"max_steps": 2}))
    assert again.global_step == 2 and again.resumed_from is None


def test_incomplete_checkpoint_folders_are_never_chosen(tmp_path):
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}")
    assert ckpt.last_good_checkpoint(tmp_path).name == "checkpoint-2"
    ckpt.clean_incomplete(tmp_path)
    assert [c.name for c in ckpt.checkpoints(tmp_path)] == ["checkpoint-2"]


def test_metrics_rows_after_the_resumed_step_are_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 7)))
    ckpt.truncate_jsonl(path, 4)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3, 4]
