"""Nothing happens to the data or a run without saying so: `data prepare` warns in one line when its
length policy drops or cuts rows (in the run report's words), Ctrl-C in training says where it
stopped and the command that resumes it, and a resumed tied-embedding model loads without a false
"missing keys: lm_head.weight" warning, its weights right."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from helpers.prepared import copy_dir
from instructkit.cli import data as data_cli
from instructkit.cli.app import app
from instructkit.data.prepare import STAT_LABELS
from instructkit.models.tiny import build_tiny_model
from instructkit.pipeline.report import DATA_ROWS
from instructkit.train import checkpoint as ckpt
from instructkit.train.config import TrainConfig
from instructkit.train.run import train

INSTRUCTKIT = str(Path(sys.executable).parent / "instructkit")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _chat(user: str, reply: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(data_cli.console, "width", 400)  # one table row, and the warning, per line


def _prepare(tokenizer_dir: str, tmp_path: Path, rows: list[dict], *flags: str) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["data", "prepare", str(src), "--tokenizer", tokenizer_dir, "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*args, "--max-length", "32", *flags], terminal_width=400)
    assert result.exit_code == 0, result.output
    return result.output


LONG_PROMPT = _chat("word " * 60, "ok")  # under truncate: the reply lies entirely past max_length
LONG_REPLY = _chat("hi", "word " * 60)  # under truncate: cut, its first tokens kept


def test_prepare_warns_in_one_line_how_many_rows_were_dropped_or_cut_why_and_which_option(
    tokenizer_dir, tmp_path
):
    output = _prepare(tokenizer_dir, tmp_path, [_chat("hi", "yo")] * 3 + [LONG_PROMPT, LONG_REPLY])
    warnings = [line for line in output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, output
    line = warnings[0]
    assert line.startswith("warning: 1 of 5 rows dropped (1 with the reply entirely past max_length")
    assert "and 1 truncated to max_length (--max-length 32)" in line
    assert "raise --max-length" in line and "--overlong (now truncate" in line
    # the summary table names each count as the run report does, with its stats.json key
    assert "dropped: reply entirely past max_length (dropped_truncated)" in output
    assert "examples trained on (examples_out)" in output


def test_prepare_warning_under_overlong_drop_and_none_for_clean_data(tokenizer_dir, tmp_path):
    output = _prepare(
        tokenizer_dir, tmp_path / "a", [_chat("hi", "yo"), LONG_PROMPT, LONG_REPLY], "--overlong", "drop"
    )
    assert (
        "warning: 2 of 3 rows dropped (2 longer than max_length (--max-length 32, --overlong drop))" in output
    )
    clean = _prepare(tokenizer_dir, tmp_path / "b", [_chat("hi", "yo")] * 3)
    assert not [line for line in clean.splitlines() if line.startswith("warning:")], clean


def test_console_and_run_report_use_the_same_words():
    for stage, key, label in DATA_ROWS:
        if stage == "prepare":
            assert STAT_LABELS[key] == label, key


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_tokenizer) -> Path:
    return copy_dir(tmp_path_factory.mktemp("interrupt") / "data", tiny_tokenizer, n=24, max_length=48)


def _interrupt(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    """Ctrl-C, then the process's output; one that does not stop in time is killed (never left running
    to slow the rest of the suite) and the test fails saying so."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        pytest.fail(f"still running {timeout} s after Ctrl-C; its stderr ends:\n{stderr[-2000:]}")


def _last_checkpoint_wait(out: Path, proc: subprocess.Popen, at_least: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = ckpt.last_good_checkpoint(out)
        if last is not None and ckpt.checkpoint_step(last) >= at_least:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no checkpoint-{at_least} in {out} after {timeout} s")


@pytest.mark.slow
def test_ctrl_c_says_where_training_stopped_and_the_printed_command_resumes_it(data, tmp_path):
    out = tmp_path / "out"
    # a constant rate without warm-up: the run's length is not part of its identity, so the resume
    # may be given fewer steps (the test's own `--max-steps`, appended: the last value counts)
    options = ["--data", str(data), "-o", str(out), "--model", "tiny:nano", "--max-steps", "100000"]
    options += ["--save-steps", "2", "--logging-steps", "1", "--no-progress"]
    options += ["--lr-scheduler", "constant", "--warmup-ratio", "0"]
    proc = subprocess.Popen(
        [INSTRUCTKIT, "train", *options], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _last_checkpoint_wait(out, proc, at_least=4)
    _, stderr = _interrupt(proc)
    assert proc.returncode == 130, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("stopped at step")]
    assert len(lines) == 1, stderr[-3000:]
    where, _, command = lines[0].partition("; resume with: ")
    last = ckpt.last_good_checkpoint(out)
    step = int(where.split()[3])
    assert where == f"stopped at step {step} (last checkpoint: {last.name})"
    assert step >= ckpt.checkpoint_step(last) >= 4
    argv = shlex.split(command)
    assert argv[:2] == ["instructkit", "train"] and argv[-1] == "--resume" and "--overwrite" not in argv

    target = ckpt.checkpoint_step(last) + 2
    resumed = subprocess.run(
        [INSTRUCTKIT, *argv[1:], "--max-steps", str(target)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {last.name}" in resumed.stderr.replace("\n", " ")
    assert f"trained {target} steps" in resumed.stdout, resumed.stdout


def test_tied_lm_head_is_not_reported_missing_but_a_really_missing_weight_is(tiny_tokenizer):
    saved = build_tiny_model("tiny:nano", tiny_tokenizer, seed=0)
    assert saved.config.tie_word_embeddings
    state = {k: v for k, v in saved.state_dict().items() if k != "lm_head.weight"}  # as a checkpoint holds it
    fresh = build_tiny_model("tiny:nano", tiny_tokenizer, seed=1)
    loaded = fresh.load_state_dict(state, strict=False)
    assert loaded.missing_keys == ["lm_head.weight"]  # what transformers warns about on resume
    assert ckpt.without_tied_keys(fresh, loaded).missing_keys == []
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight  # one Parameter: loading one loads both
    assert torch.equal(fresh.lm_head.weight, saved.model.embed_tokens.weight)

    del state["model.norm.weight"]
    partial = build_tiny_model("tiny:nano", tiny_tokenizer, seed=1).load_state_dict(state, strict=False)
    assert ckpt.without_tied_keys(fresh, partial).missing_keys == ["model.norm.weight"]


@pytest.mark.slow
def test_resuming_a_tied_model_prints_no_missing_keys_and_continues_the_saved_weights(data, tmp_path, capfd):
    fields = dict(data=data, output_dir=tmp_path / "out", model="tiny:nano", max_steps=2, save_steps=2)
    fields.update(progress=False, lr_scheduler="constant", warmup_ratio=0.0)
    train(TrainConfig(**fields))
    checkpoint = load_file(str(tmp_path / "out" / "checkpoint-2" / "model.safetensors"))
    assert "lm_head.weight" not in checkpoint  # tied: stored once, as the embeddings
    capfd.readouterr()

    result = train(
        TrainConfig(**{**fields, "resume": True})
    )  # nothing left to do: the weights stay as loaded
    err = capfd.readouterr().err
    assert result.resumed_from.name == "checkpoint-2", err
    assert "missing keys" not in err, err
    final = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert torch.equal(final["model.embed_tokens.weight"], checkpoint["model.embed_tokens.weight"])


PIPELINE_RECIPE = """\
name: stopped
runs_dir: runs
sources: [train.jsonl]
prepare: {tokenizer: "tiny:nano", max_length: 64, pack: false}
train: {model: "tiny:nano", max_steps: 100000, save_steps: 2, micro_batch_size: 2, progress: false}
"""


@pytest.mark.slow
def test_ctrl_c_in_a_pipeline_prints_the_run_command_and_its_plan_resumes_the_checkpoint(tmp_path):
    chats = [_chat(f"{i} plus one?", f"{i + 1}.") for i in range(8)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    (tmp_path / "recipe.yaml").write_text(PIPELINE_RECIPE)
    env = {**ENV, "INSTRUCTKIT_CACHE": str(tmp_path / "cache")}
    run = [INSTRUCTKIT, "run", "recipe.yaml", "--set", "train.seed=1"]
    proc = subprocess.Popen(
        run, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _last_checkpoint_wait(tmp_path / "runs" / "stopped" / "train", proc, at_least=4)
    stdout, stderr = _interrupt(proc)
    assert proc.returncode == 130, stdout[-2000:] + stderr[-2000:]
    lines = [line for line in stdout.splitlines() if line.startswith("interrupted: stopped at step")]
    assert len(lines) == 1, stdout[-3000:]
    last = ckpt.last_good_checkpoint(tmp_path / "runs" / "stopped" / "train")
    assert (
        f"(last checkpoint: {last.name}); resume with: instructkit run recipe.yaml --set train.seed=1"
        in lines[0]
    )

    command = shlex.split(lines[0].partition("resume with: ")[2])
    plan = subprocess.run(
        [INSTRUCTKIT, *command[1:], "--dry-run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert f"resume from {last.name}" in plan.stdout, plan.stdout
