"""Progress where no terminal is: plain lines (or JSON objects) a log file can show, and quiet mode."""

from __future__ import annotations

import io
import json
import re

import pytest
from typer.testing import CliRunner

from helpers.paths import FIXTURES_ROOT
from helpers.prepared import copy_dir
from instructkit import progress
from instructkit.cli.app import app, hoist_global_options


@pytest.fixture(autouse=True)
def _restore_settings():
    saved = progress.LogSettings(**progress.SETTINGS.__dict__)
    yield
    progress.SETTINGS.__dict__.update(saved.__dict__)


def _capture(**settings) -> io.StringIO:
    stream = io.StringIO()
    progress.SETTINGS.__dict__.update({"quiet": False, "log_format": "text", "interval": 0.0, **settings})
    progress.SETTINGS.stream = stream
    return stream


def test_plain_lines_carry_position_fields_and_eta():
    stream = _capture()
    with progress.Progress("eval", total=4, unit="request") as bar:
        bar.update(advance=2, acc=0.5)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[eval] request 0/4")
    assert any(line.startswith("[eval] request 2/4 (50%) acc 0.5") and "eta" in line for line in lines)
    assert lines[-1].startswith("[eval] request 2/4")


def test_lines_are_rate_limited_by_the_interval():
    stream = _capture(interval=3600.0)
    with progress.Progress("synth", total=100, unit="text") as bar:
        for _ in range(100):
            bar.update(advance=1)
    assert len(stream.getvalue().splitlines()) == 2  # started + done, nothing in between


def test_json_lines_and_quiet():
    stream = _capture(log_format="json")
    with progress.Progress("train", total=2, unit="step") as bar:
        bar.update(completed=1, loss=2.5)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert records[-1]["stage"] == "train" and records[-1]["completed"] == 1 and records[-1]["loss"] == 2.5
    quiet = _capture(quiet=True)
    with progress.Progress("train", total=2) as bar:
        bar.update(completed=2)
    progress.log_event("train", "done")
    assert quiet.getvalue() == ""


def test_global_options_are_accepted_after_the_subcommand():
    argv = ["train", "--data", "d", "--quiet", "--log-format", "json", "--log-interval=5"]
    assert hoist_global_options(argv) == [
        "--quiet",
        "--log-format",
        "json",
        "--log-interval=5",
        "train",
        "--data",
        "d",
    ]


def test_training_without_a_terminal_logs_step_loss_and_throughput(tmp_path, tiny_tokenizer):
    data = copy_dir(tmp_path / "data", tiny_tokenizer, n=8, max_length=48)
    args = ["--log-interval", "0", "train", "--data", str(data), "--model", "tiny:nano"]
    args += [
        "--output-dir",
        str(tmp_path / "out"),
        "--max-steps",
        "2",
        "--grad-accum",
        "1",
        "--logging-steps",
        "1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("[train] step")]
    assert lines, result.stderr
    assert any(" 2/2 " in line and "loss" in line and "tok_s" in line for line in lines)
    final = re.search(r"final loss ([0-9.]+);", result.stdout)  # 4 significant digits, not 5.692911148071289
    assert final and len(final.group(1).replace(".", "").lstrip("0")) <= 4, result.stdout


def test_evaluation_without_a_terminal_logs_documents_done_per_task(tiny_model, tiny_tokenizer, tmp_path):

    from instructkit.evaluate.config import EvalConfig
    from instructkit.evaluate.runner import evaluate

    stream = _capture()
    fixtures = FIXTURES_ROOT / "eval"
    config = EvalConfig(tasks=["boolq", "arc"], data_dir=str(fixtures))
    evaluate(tiny_model, tiny_tokenizer, config=config, out_dir=tmp_path / "e")
    lines = [line for line in stream.getvalue().splitlines() if line.startswith("[eval] doc")]
    assert lines[0].startswith("[eval] doc 0/")
    assert any("task boolq" in line for line in lines) and any("task arc" in line for line in lines)
    total = lines[0].split("/")[1].split()[0]
    assert lines[-1].startswith(f"[eval] doc {total}/{total} (100%)")
