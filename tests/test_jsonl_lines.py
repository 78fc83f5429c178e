"""JSON Lines rows that hold the characters `str.splitlines` splits at (U+2028, U+2029, U+0085, ...), as
`json.dumps(ensure_ascii=False)` writes them, are read back whole by every reader that uses jsonl.py."""

from __future__ import annotations

import json

import pytest

from instructkit.errors import BadRowError
from instructkit.jsonl import read_records, text_lines

ODD = "a\u2028b\u2029c\x85d\x1ce\x0bf"


def test_rows_with_unicode_line_separators_are_read_whole(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"id": 1, "text": ODD}, {"id": 2, "text": "plain"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert len(ODD.splitlines()) > 1  # what the old readers did to such a row
    assert read_records(path) == rows
    assert text_lines(path) == [json.dumps(r, ensure_ascii=False) for r in rows] + [""]


def test_windows_line_ends_and_blank_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\r\n{"a": 2}\r\n')
    assert read_records(path) == [{"a": 1}, {"a": 2}]


def test_a_bad_row_names_the_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(BadRowError, match=r"rows.jsonl:2: json"):
        read_records(path)


def test_eval_samples_holding_line_separators_are_read_whole(tmp_path):
    """A run's per-sample file (what `eval judge` pairs rows from) whose output holds U+2028."""
    from instructkit.evaluate.judge import read_samples

    (tmp_path / "samples").mkdir()
    rows = [{"id": 0, "output": ODD}, {"id": 1, "output": "x"}]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (tmp_path / "samples" / "gsm8k.jsonl").write_text(text, encoding="utf-8")
    assert read_samples(tmp_path, "gsm8k") == {"0": rows[0], "1": rows[1]}
