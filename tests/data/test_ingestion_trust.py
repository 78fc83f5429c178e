"""Every input file and row accounted for: hidden and unknown entries, compression, bad first rows,
error locations, BOM, JSON trailing commas, CSV strings, per-file stats, and skip mode that never crashes."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.chats import sum_chat as chat
from helpers.files import jsonl, rejects_of, write
from instructkit.cli.app import app
from instructkit.data.prepare import PrepareConfig, detect_file_input_format, prepare
from instructkit.data.sources import iter_file_rows
from instructkit.errors import BadRowError, InstructkitError
from instructkit.models.chat_templates import TULU


@pytest.fixture
def run(tokenizer_dir, tmp_path):
    """prepare(sources) into tmp_path/out with the tiny tokenizer; returns the stats."""

    def _run(*sources: Path, **kw) -> dict:
        cfg = PrepareConfig(
            sources=[str(s) for s in sources], tokenizer=tokenizer_dir, out=str(tmp_path / "out"), **kw
        )
        return prepare(cfg, progress=False)

    return _run


def test_hidden_entries_are_skipped_and_listed(run, tmp_path):
    data = tmp_path / "data"
    write(data / "a.jsonl", jsonl([chat(i) for i in range(3)]))
    write(data / ".ipynb_checkpoints" / "a-checkpoint.jsonl", jsonl([chat(i) for i in range(3)]))
    write(data / ".git" / "config.json", "{}")
    write(data / ".hidden.jsonl", jsonl([chat(9)]))
    stats = run(data)
    assert stats["examples_in"] == 3 and stats["examples_out"] == 3
    assert sorted((Path(s["path"]).name, s["reason"]) for s in stats["skipped_files"]) == [
        (".git", "hidden folder"),
        (".hidden.jsonl", "hidden file"),
        (".ipynb_checkpoints", "hidden folder"),
    ]


def test_compressed_files_are_read(run, tmp_path):
    data = tmp_path / "data"
    write(data / "a.jsonl.gz", gzip.compress(jsonl([chat(1), chat(2)])))
    write(data / "b.json.bz2", bz2.compress(json.dumps([chat(3), chat(4)]).encode()))
    write(data / "c.jsonl.xz", lzma.compress(jsonl([chat(5), chat(6)])))
    write(data / "d.csv.gz", gzip.compress(b"question,answer\nWhat is 7?,7\nAnd 8?,8\n"))
    stats = run(data)
    assert stats["examples_out"] == 8
    assert [(Path(f["path"]).name, f["rows_read"]) for f in stats["files"]] == [
        ("a.jsonl.gz", 2),
        ("b.json.bz2", 2),
        ("c.jsonl.xz", 2),
        ("d.csv.gz", 2),
    ]


def test_a_damaged_gz_keeps_the_rows_before_the_damage_and_rejects_the_rest(run, tmp_path):
    src = write(tmp_path / "a.jsonl.gz", gzip.compress(jsonl([chat(1), chat(2)]))[:-8])  # CRC trailer cut off
    stats = run(src, on_error="skip")
    [reject] = rejects_of(tmp_path / "out")
    assert (reject["file"], reject["row"], reject["field"]) == (str(src), 3, "<file>")
    assert "cannot read the rest of the file" in reject["reason"]
    assert stats["examples_out"] == 2


def test_zst_is_read_or_names_the_package_to_install(tmp_path):
    src = tmp_path / "a.jsonl.zst"
    try:
        import zstandard
    except ImportError:
        write(src, b"\x28\xb5\x2f\xfd")
        with pytest.raises(
            InstructkitError, match=r"a\.jsonl\.zst: .*`zstandard` package \(pip install zstandard\)"
        ):
            list(iter_file_rows(src))
        return
    write(src, zstandard.ZstdCompressor().compress(jsonl([chat(1), chat(2)])))
    assert [r.record for r in iter_file_rows(src)] == [chat(1), chat(2)]


def test_unknown_file_kind_in_a_directory_is_an_error_naming_it_or_skipped_when_asked(run, tmp_path):
    data = tmp_path / "data"
    write(data / "a.jsonl", jsonl([chat(1)]))
    write(data / "README.md", "# my data\n")
    with pytest.raises(InstructkitError, match=r"README\.md.*--skip-unknown-files"):
        run(data)
    stats = run(data, skip_unknown_files=True)
    assert stats["examples_out"] == 1
    [skipped] = stats["skipped_files"]
    assert skipped["path"] == str(data / "README.md") and skipped["reason"].startswith("unknown file kind")


def alpaca_with_bad_first_row(path: Path) -> Path:
    rows = [{"instruction": "Add 1 and 2."}] + [
        {"instruction": f"Add {i} and 1.", "output": str(i + 1)} for i in (2, 3)
    ]
    return write(path, jsonl(rows))


def test_a_bad_first_row_stops_the_default_mode_naming_file_row_and_field(run, tmp_path):
    data = tmp_path / "data"
    bad = alpaca_with_bad_first_row(data / "a.jsonl")
    write(data / "b.jsonl", jsonl([chat(1), chat(2)]))
    with pytest.raises(BadRowError) as info:
        run(data)
    assert str(info.value) == f"{bad}:1: output: missing"


@pytest.mark.parametrize("named", ["directory", "file"])
def test_a_bad_first_row_is_rejected_alone_in_skip_mode(run, tmp_path, named):
    data = tmp_path / "data"
    bad = alpaca_with_bad_first_row(data / "a.jsonl")
    stats = run(data if named == "directory" else bad, on_error="skip")
    assert [(r["file"], r["row"], r["field"]) for r in rejects_of(tmp_path / "out")] == [
        (str(bad), 1, "output")
    ]
    assert stats["examples_out"] == 2
    assert stats["files"] == [
        {
            "path": str(bad),
            "input_format": "alpaca",
            "rows_read": 3,
            "rows_kept": 2,
            "rows_rejected": 1,
            "rows_dropped": 0,
        }
    ]


def test_the_majority_of_a_files_first_rows_decides_its_format(tmp_path):
    src = write(
        tmp_path / "a.jsonl", jsonl([{"prompt": "p", "completion": "c"}] + [chat(i) for i in range(3)])
    )
    assert detect_file_input_format(str(src)) == ("messages", "")


def test_errors_name_the_input_line_not_the_records_own_source_fields(run, tmp_path):
    rows = [{**chat(1), "source": "elsewhere.jsonl", "row_id": 99}, chat(2)]
    rows[1]["messages"][1]["content"] = "boom"
    rows[1].update(source="elsewhere.jsonl", row_id=98)
    src = write(tmp_path / "a.jsonl", jsonl(rows))
    # This template renders the whole conversation differently from its prefixes when the reply is "boom",
    # so that row cannot be masked exactly and is rejected after tokenization.
    template = "{% if messages[-1]['content'] == 'boom' %}!{% endif %}" + TULU
    with pytest.raises(BadRowError) as info:
        run(src, chat_template=template)
    assert str(info.value).startswith(f"{src}:2: messages: ")
    run(src, chat_template=template, on_error="skip")
    assert [(r["file"], r["row"]) for r in rejects_of(tmp_path / "out")] == [(str(src), 2)]


def test_a_utf8_byte_order_mark_is_accepted(run, tmp_path):
    bom = b"\xef\xbb\xbf"
    data = tmp_path / "data"
    write(data / "a.jsonl", bom + jsonl([chat(1), chat(2)]))
    write(data / "b.json", bom + json.dumps([chat(3)]).encode())
    write(data / "c.csv", bom + b"question,answer\nWhat is 4?,4\n")
    stats = run(data)
    assert stats["examples_in"] == 4 and stats["examples_out"] == 4 and stats["rejected"] == 0


def test_a_json_array_with_a_trailing_comma_is_reported_at_its_line(run, tmp_path):
    src = write(
        tmp_path / "a.json",
        '[\n  {"question": "a?", "answer": "b"},\n  {"question": "c?", "answer": "d"},\n]\n',
    )
    with pytest.raises(BadRowError) as info:
        run(src)
    assert str(info.value).startswith(
        f"{src}:3: <file>: invalid JSON: trailing comma before ']' (line 3, column 36)"
    )


def test_csv_values_are_read_as_written_strings(run, tmp_path):
    data = tmp_path / "data"
    numbers = write(data / "numbers.csv", "question,answer\nWhat is 3 + 4?,7\nPad 7 to three digits.,007\n")
    booleans = write(data / "booleans.csv", "question,answer\nIs 2 even?,true\nIs 3 even?,false\n")
    assert [r.record["answer"] for r in iter_file_rows(numbers)] == ["7", "007"]
    assert [r.record["answer"] for r in iter_file_rows(booleans)] == ["true", "false"]
    stats = run(data)
    assert stats["examples_out"] == 4 and stats["rejected"] == 0


def test_stats_lists_every_input_file_with_rows_read_kept_rejected_dropped(run, tmp_path):
    data = tmp_path / "data"
    write(data / "a.jsonl", jsonl([chat(1), b"{oops\n", chat(2)]))
    write(data / "b.csv", "question,answer\nWhat is 1?,1\nToo many,fields,here\n")
    long = {"messages": [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "x"}]}
    write(data / "c.jsonl", jsonl([long, chat(3)]))
    stats = run(data, on_error="skip", overlong="drop", max_length=64)
    assert stats["files"] == [
        {
            "path": str(data / "a.jsonl"),
            "input_format": "messages",
            "rows_read": 3,
            "rows_kept": 2,
            "rows_rejected": 1,
            "rows_dropped": 0,
        },
        {
            "path": str(data / "b.csv"),
            "input_format": "question_answer",
            "rows_read": 2,
            "rows_kept": 1,
            "rows_rejected": 1,
            "rows_dropped": 0,
        },
        {
            "path": str(data / "c.jsonl"),
            "input_format": "messages",
            "rows_read": 2,
            "rows_kept": 1,
            "rows_rejected": 0,
            "rows_dropped": 1,
        },
    ]
    written = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert written["files"] == stats["files"] and written["skipped_files"] == []


ALL_BAD = [b"{oops\n", {"messages": [{"role": "robot", "content": "x"}]}, {"messages": "hello"}]


def test_every_row_rejected_writes_all_rejects_and_stops_with_one_line(run, tmp_path):
    src = write(tmp_path / "bad.jsonl", jsonl(ALL_BAD))
    with pytest.raises(
        InstructkitError, match="no examples left to train on: 3 rows read from 1 file, 3 rejected"
    ):
        run(src, on_error="skip")
    assert [r["row"] for r in rejects_of(tmp_path / "out")] == [1, 2, 3]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["files"] == [
        {"path": str(src), "rows_read": 3, "rows_kept": 0, "rows_rejected": 3, "rows_dropped": 0}
    ]


def test_cli_every_row_rejected_exits_nonzero_with_one_line_and_no_traceback(tmp_path):
    src = write(tmp_path / "bad.jsonl", jsonl(ALL_BAD))
    out = tmp_path / "out"
    args = ["data", "prepare", str(src), "--tokenizer", "tiny:micro", "--out", str(out), "--on-error", "skip"]
    env = {**os.environ, "COLUMNS": "1000"}  # rich wraps at the terminal width; keep the one line whole here
    proc = subprocess.run(
        [sys.executable, "-m", "instructkit", *args], capture_output=True, text=True, env=env
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no examples left to train on"), proc.stderr
    assert len(rejects_of(out)) == 3


def test_an_empty_result_with_pack_is_the_same_clear_error(tokenizer_dir, tmp_path):
    long = {"messages": [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "x"}]}
    src = write(tmp_path / "long.jsonl", jsonl([long, long]))
    args = ["data", "prepare", str(src), "--tokenizer", tokenizer_dir, "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*args, "--max-length", "32", "--overlong", "drop", "--pack"])
    assert result.exit_code != 0
    assert isinstance(result.exception, InstructkitError), result.exception
    assert "no examples left to train on: 2 rows read from 1 file, 0 rejected, 2 dropped" in str(
        result.exception
    )
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["dropped_overlong"] == 2


def test_cli_lists_what_it_skipped(tokenizer_dir, tmp_path):
    data = tmp_path / "data"
    write(data / "a.jsonl", jsonl([chat(1)]))
    write(data / ".ipynb_checkpoints" / "a-checkpoint.jsonl", jsonl([chat(1)]))
    write(data / "README.md", "# my data\n")
    args = ["data", "prepare", str(data), "--tokenizer", tokenizer_dir, "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*args, "--skip-unknown-files"])
    assert result.exit_code == 0, result.output
    assert "skipped_files" in result.output and "2 (listed in stats.json)" in result.output
    assert f"skipped {data / '.ipynb_checkpoints'}: hidden folder" in result.output.replace("\n", "")
