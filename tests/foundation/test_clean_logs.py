"""Output read by a file or a tool holds only instructkit's own lines: no third-party progress bars
when redirected, with `--quiet` or with `--log-format json`; under JSON every line of standard error
parses; numbers are formatted; Markdown tables piped to a file keep one line per row."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.files import write_jsonl
from helpers.report_runs import BASE, TUNED, write_eval_run
from instructkit import progress
from instructkit.cli.app import app
from instructkit.data.prepare import PrepareConfig, prepare

BARS = ("%|", "it/s", "examples/s", "Map:", "Saving the dataset")  # tqdm, datasets
CONVERSATION = {
    "messages": [{"role": "user", "content": "say hi"}, {"role": "assistant", "content": "hi there"}]
}


def _instructkit(tmp_path: Path, *args: str) -> tuple[str, str]:
    """`instructkit ARGS` in a subprocess, both streams redirected to files, in a user's plain shell."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    command = [str(Path(sys.executable).parent / "instructkit"), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env = {k: v for k, v in env.items() if k not in {*progress.THIRD_PARTY_QUIET, "COLUMNS"}}
    with out.open("w") as stdout, err.open("w") as stderr:
        done = subprocess.run(command, stdout=stdout, stderr=stderr, env=env, timeout=600)
    assert done.returncode == 0, err.read_text()[-2000:]
    return out.read_text(), err.read_text()


def _prepare(tmp_path: Path, *flags: str) -> tuple[str, str]:
    """`instructkit FLAGS data prepare` on 30 rows in a subprocess, both streams redirected to files."""
    data = tmp_path / "rows.jsonl"
    data.write_text((json.dumps(CONVERSATION) + "\n") * 30)
    args = [*flags, "data", "prepare", str(data), "--tokenizer", "tiny:micro", "--max-length", "64"]
    return _instructkit(tmp_path, *args, "--pack", "--out", str(tmp_path / "p"))


def _no_bars(text: str) -> None:
    found = [line for line in text.splitlines() if any(bar in line for bar in BARS)]
    assert not found, found


@pytest.mark.parametrize("flags", [(), ("--quiet",), ("--log-format", "json")])
def test_redirected_prepare_has_no_third_party_progress_bars(tmp_path, flags):
    stdout, stderr = _prepare(tmp_path, *flags)
    _no_bars(stdout + stderr)
    assert "examples_out" in stdout and "30" in stdout  # the result itself still prints
    if "--quiet" in flags:
        assert stderr == ""
    for line in stderr.splitlines() if "json" in flags else []:
        assert isinstance(json.loads(line), dict), line


def test_json_stream_wraps_foreign_lines_and_drops_bar_redraws():
    sink = io.StringIO()
    stream = progress.JsonLinesStream(sink)
    stream.write('{"stage": "train", "completed": 1}\n')
    stream.write("effective batch ≈ 480 tokens/step;\npacked\n")  # a rich console line, wrapped
    stream.write("Map:  50%|#####     | 1/2 [00:00<00:00]\rMap: 100%|##########| 2/2\n")
    stream.write("no newline yet")
    stream.close_line()
    records = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert records[0] == {"stage": "train", "completed": 1}
    assert [r["message"] for r in records[1:3]] == ["effective batch ≈ 480 tokens/step;", "packed"]
    assert records[-1]["message"] == "no newline yet" and all(r["stage"] == "stderr" for r in records[1:])


@pytest.fixture
def restored_logging(monkeypatch):
    """Undo what silence_third_party changes in this process: env, root handlers, warnings capture."""
    for key in progress.THIRD_PARTY_QUIET:
        monkeypatch.delenv(key, raising=False)
    saved = progress.LogSettings(**progress.SETTINGS.__dict__)
    handlers = list(logging.getLogger().handlers)
    logging.captureWarnings(False)  # an earlier CLI test in this process may have captured them
    yield
    logging.captureWarnings(False)
    logging.getLogger().handlers[:] = handlers
    progress.SETTINGS.__dict__.update(saved.__dict__)


def test_library_warnings_become_one_json_event(restored_logging):
    sink = io.StringIO()
    progress.configure(quiet=False, log_format="json")
    progress.SETTINGS.stream = sink
    progress.silence_third_party()
    assert os.environ["TQDM_DISABLE"] == "1" and os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("this argument is deprecated", FutureWarning, stacklevel=1)
    logging.getLogger("accelerate.utils").warning("two\nlines")
    records = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert records[0]["stage"] == "warning" and records[0]["message"].startswith("FutureWarning: this")
    assert records[1] == {**records[1], "stage": "accelerate", "message": "two", "level": "warning"}


def test_numbers_in_progress_lines_are_rounded(monkeypatch):
    sink = io.StringIO()
    monkeypatch.setattr(
        progress, "SETTINGS", progress.LogSettings(log_format="json", interval=0, stream=sink)
    )
    with progress.Progress("train", total=2, unit="step") as bar:
        bar.update(completed=1, loss=2.345678912, tok_s=970.117706576464, tokens=123456.789)
    record = json.loads(sink.getvalue().splitlines()[-1])
    assert (record["loss"], record["tok_s"], record["tokens"]) == (2.346, 970.1, 123457.0)
    assert record["time"] != round(record["time"])  # the clock keeps its milliseconds
    assert progress.format_number(None) == "not logged"
    assert progress.format_number(0.897123) == "0.8971" and progress.format_number(12345) == "12,345"


def test_markdown_tables_piped_to_a_file_are_not_wrapped(tmp_path):
    a, b = write_eval_run(tmp_path / "base-run", BASE), write_eval_run(tmp_path / "tuned-run", TUNED)
    result = CliRunner().invoke(app, ["eval", "compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert len(rows) >= 2 + len(TUNED) and all(line.endswith("|") for line in rows)
    assert max(len(line) for line in rows) > 80  # wide rows, kept whole
    header = next(line for line in rows if "paired test" in line)
    assert re.search(r"Δ tuned-run − base-run \[95% CI\]", header)


# status lines of the library that once bypassed `log_event` (a rich console wraps them at 80 columns)
MOVED = ("model: decoder-only", "effective batch ≈")


def _json_records(stderr: str) -> list[dict]:
    """Every line of standard error as a JSON object (what `jq` needs), none of them foreign text."""
    records = [json.loads(line) for line in stderr.splitlines()]
    assert all(isinstance(r, dict) for r in records)
    foreign = [r["message"] for r in records if r.get("stage") == "stderr"]
    assert not foreign, foreign  # a line written past `log_event`, wrapped into JSON by the stream
    return records


@pytest.fixture(scope="module")
def packed_rows(tmp_path_factory) -> Path:
    """The 30 rows `_prepare` writes, prepared and packed once (in process) for the training tests."""
    root = tmp_path_factory.mktemp("clean_logs_data")
    source = write_jsonl(root / "rows.jsonl", [CONVERSATION] * 30)
    config = PrepareConfig(
        sources=[source], tokenizer="tiny:micro", max_length=64, pack=True, out=str(root / "p")
    )
    prepare(config, progress=False)
    return root / "p"


def _train(tmp_path: Path, data: Path, *flags: str) -> tuple[str, str]:
    """A real tiny `instructkit FLAGS train` of 2 steps on the 30 packed rows."""
    args = ["train", "--data", str(data), "--model", "tiny:micro", "--max-steps", "2"]
    args += ["--output-dir", str(tmp_path / "out"), "--save-steps", "100"]
    return _instructkit(tmp_path, *flags, *args)


def test_train_with_json_logs_writes_only_json_events(tmp_path, packed_rows):
    stdout, stderr = _train(tmp_path, packed_rows, "--log-format", "json")
    records = _json_records(stderr)
    for start in MOVED:
        found = [r for r in records if r.get("message", "").startswith(start)]
        assert len(found) == 1 and found[0]["stage"] == "train", (start, records)
    assert "padding-free" in next(r["message"] for r in records if "effective batch" in r.get("message", ""))
    assert "trained 2 steps" in stdout


def test_train_status_lines_in_text_logs_are_whole_lines(tmp_path, packed_rows):
    _, stderr = _train(tmp_path, packed_rows)
    lines = stderr.splitlines()
    batch = [line for line in lines if "effective batch ≈" in line]
    assert len(batch) == 1 and batch[0].startswith("[train] effective batch"), lines
    assert batch[0].rstrip().endswith("fp32 weights") and len(batch[0]) > 80, batch  # one line, unwrapped
    assert any(line.startswith("[train] model: decoder-only") for line in lines), lines
    _no_bars(stderr)


def test_pipeline_run_with_json_logs_writes_only_json_events(tmp_path):
    small = {
        "runs_dir": str(tmp_path / "runs"),
        "mixture.rate.cap": "20",
        "mixture.tasks": "[{cluster: arithmetic}, {cluster: comparison}]",
        "prepare.tokenizer": "tiny:nano",
        "prepare.max_length": "256",
        "train.model": "tiny:nano",
        "train.max_steps": "2",
        "evaluate.sets": "[{name: heldout_cluster, clusters: [comparison], limit: 2, k_shot: [0]}]",
    }
    sets = [arg for key, value in small.items() for arg in ("--set", f"{key}={value}")]
    _, stderr = _instructkit(tmp_path, "--log-format", "json", "run", "quickstart", *sets)
    records = _json_records(stderr)
    stages = {r["stage"] for r in records}
    assert {"train", "eval"} <= stages, stages
    assert any(r.get("message", "").startswith("effective batch ≈") for r in records)
    assert (tmp_path / "runs" / "quickstart" / "report.html").exists()
