"""Every file read once, every format read as its authors mean it (issue #20, part 3).

Links and hard links inside a source folder are listed, never read twice; link loops never multiply
rows; the same data under two names is flagged; a file whose rows fit no format stops the run (or is
listed in skip mode); TRL's prompt turns are never trained; bad bytes of any kind are a bad row, never
a crash; a Jinja `--chat-template` works with the tiny tokenizers.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from transformers import AutoTokenizer

from helpers.chats import sum_chat as chat
from helpers.files import jsonl, rejects_of, write
from instructkit.data.prepare import PrepareConfig, prepare
from instructkit.data.rejects import RejectLog
from instructkit.data.sources import PREFIX_BYTES, duplicate_contents, iter_file_rows, list_source_files
from instructkit.data.tokenize import IGNORE_INDEX
from instructkit.errors import BadRowError, InstructkitError
from instructkit.models.chat_templates import TULU


def link(path: Path, target: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)
    return path


@pytest.fixture
def run(tokenizer_dir, tmp_path):
    """prepare(sources) into tmp_path/out with the tiny tokenizer; returns the stats."""

    def _run(*sources: Path, **kw) -> dict:
        kw.setdefault("tokenizer", tokenizer_dir)
        cfg = PrepareConfig(sources=[str(s) for s in sources], out=str(tmp_path / "out"), **kw)
        return prepare(cfg, progress=False)

    return _run


def reasons(stats: dict) -> dict[str, str]:
    return {Path(s["path"]).name: s["reason"] for s in stats["skipped_files"]}


# --- every real file read once --------------------------------------------------------------------


def test_links_to_files_and_folders_inside_the_tree_are_listed_not_read_again(run, tmp_path):
    data = tmp_path / "data"
    write(data / "a.jsonl", jsonl([chat(1), chat(2)]))
    write(data / "sub" / "b.jsonl", jsonl([chat(3)]))
    link(data / "0-first.jsonl", "a.jsonl")  # sorts before its target: still the target is what is read
    link(data / "latest", "a.jsonl")  # a name of no known kind, pointing at a file read anyway
    link(data / "alias", "sub")
    os.link(data / "a.jsonl", data / "hard.jsonl")
    stats = run(data)
    assert stats["examples_in"] == 3 and stats["examples_out"] == 3
    assert [Path(f["path"]).relative_to(data).as_posix() for f in stats["files"]] == [
        "a.jsonl",
        "sub/b.jsonl",
    ]
    assert reasons(stats) == {
        "0-first.jsonl": f"link to {(data / 'a.jsonl').resolve()}, read as {data / 'a.jsonl'}",
        "latest": f"link to {(data / 'a.jsonl').resolve()}, read as {data / 'a.jsonl'}",
        "alias": f"link to {(data / 'sub').resolve()}, read as {data / 'sub'}",
        "hard.jsonl": f"hard link to {data / 'a.jsonl'}, read as {data / 'a.jsonl'}",
    }


def test_link_loops_never_multiply_rows(run, tmp_path):
    data = tmp_path / "data"
    write(data / "a.jsonl", jsonl([chat(1)]))
    write(data / "sub" / "b.jsonl", jsonl([chat(2)]))
    link(data / "sub" / "up", "..")  # a folder above: a loop
    link(data / "sub" / "self", ".")
    link(data / "p.jsonl", "q.jsonl")  # two links pointing at each other
    link(data / "q.jsonl", "p.jsonl")
    stats = run(data)
    assert stats["examples_in"] == 2 and stats["examples_out"] == 2
    assert reasons(stats) == {
        "up": f"link to {data.resolve()}, read as {data}",
        "self": f"link to {(data / 'sub').resolve()}, read as {data / 'sub'}",
        "p.jsonl": "broken link to q.jsonl",
        "q.jsonl": "broken link to p.jsonl",
    }


def test_a_file_outside_the_tree_is_read_once_however_many_links_reach_it(run, tmp_path):
    outside = tmp_path / "outside"
    write(outside / "x.jsonl", jsonl([chat(7), chat(8)]))
    write(outside / "back" / "c.jsonl", jsonl([chat(9)]))
    data = tmp_path / "data"
    write(data / "a.jsonl", jsonl([chat(1)]))
    link(data / "x1.jsonl", "../outside/x.jsonl")
    link(data / "x2.jsonl", "../outside/x.jsonl")
    link(data / "ext", "../outside")  # the same file again, through a folder link
    link(outside / "back" / "loop", "../../data")  # and a loop through the outside folder
    stats = run(data)
    assert stats["examples_in"] == 4 and stats["examples_out"] == 4
    read = sorted(f["path"] for f in stats["files"])
    assert read == sorted(
        str(p) for p in (data / "a.jsonl", data / "ext" / "back" / "c.jsonl", data / "ext" / "x.jsonl")
    )
    assert (
        reasons(stats)["x1.jsonl"]
        == f"link to {(outside / 'x.jsonl').resolve()}, read as {data / 'ext' / 'x.jsonl'}"
    )
    assert reasons(stats)["loop"] == f"link to {data.resolve()}, read as {data}"


def test_a_single_link_to_an_outside_file_is_read(tmp_path):
    write(tmp_path / "outside" / "x.jsonl", jsonl([chat(1)]))
    data = tmp_path / "data"
    link(data / "x.jsonl", "../outside/x.jsonl")
    listing = list_source_files(data)
    assert listing.files == [data / "x.jsonl"] and listing.skipped == []


def test_the_same_data_under_two_names_is_flagged_and_both_are_read(run, tmp_path, capsys):
    data = tmp_path / "data"
    rows = jsonl([chat(i) for i in range(3)])
    write(data / "x.jsonl", rows)
    write(data / "x.jsonl.bz2", bz2.compress(rows))
    write(data / "y.jsonl.gz", gzip.compress(jsonl([chat(9)])))
    stats = run(data)
    assert stats["examples_in"] == 7  # both read, as asked; the flag says so
    assert stats["duplicate_files"] == [[str(data / "x.jsonl"), str(data / "x.jsonl.bz2")]]
    err = capsys.readouterr().err
    assert "warning: the same data under 2 names" in err
    assert f"{data / 'x.jsonl'}, {data / 'x.jsonl.bz2'}" in err
    assert (
        json.loads((tmp_path / "out" / "stats.json").read_text())["duplicate_files"]
        == stats["duplicate_files"]
    )


def test_duplicate_contents_compares_whole_files_not_only_their_beginnings(tmp_path):
    head = b"x" * PREFIX_BYTES
    a = write(tmp_path / "a.jsonl", head + b"tail one\n")
    b = write(tmp_path / "b.jsonl.xz", lzma.compress(head + b"tail two\n"))
    c = write(tmp_path / "c.jsonl.gz", gzip.compress(head + b"tail one\n"))
    damaged = write(tmp_path / "d.jsonl.gz", gzip.compress(head + b"tail one\n")[:-8])
    assert duplicate_contents([a, b, c, damaged]) == [[a, c]]


# --- a file whose rows fit no format ------------------------------------------------------------


@pytest.mark.parametrize("named", ["directory", "file"])
def test_a_file_whose_rows_fit_no_format_stops_the_default_mode_and_is_listed_in_skip_mode(
    run, tmp_path, named
):
    data = tmp_path / "data"
    write(data / "a.jsonl", jsonl([chat(1), chat(2)]))
    notes = write(data / "notes.json", '[{"unrelated": 1}]')
    sources = (data,) if named == "directory" else (data / "a.jsonl", notes)
    with pytest.raises(InstructkitError, match=r"notes\.json: no row fits a known format .*--on-error skip"):
        run(*sources)
    stats = run(*sources, on_error="skip")
    assert stats["examples_out"] == 2
    assert reasons(stats)["notes.json"].startswith("no row fits a known format")


# --- TRL conversational prompt-completion -------------------------------------------------------


def test_trl_prompt_turns_are_never_trained_whatever_their_role(run, tmp_path):
    row = {
        "prompt": [
            {"role": "system", "content": "Answer with a number."},
            {"role": "user", "content": "What is 1 plus 1?"},
            {"role": "assistant", "content": "two hundred", "weight": 1},  # context, even when marked
            {"role": "user", "content": "And 2 plus 2?"},
        ],
        "completion": [{"role": "assistant", "content": "four"}],
    }
    src = write(tmp_path / "trl.jsonl", jsonl([row, row]))
    stats = run(src)
    assert stats["examples_out"] == 2
    out = tmp_path / "out"
    tok = AutoTokenizer.from_pretrained(out / "tokenizer")
    for example in datasets.load_from_disk(str(out)):
        trained = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]
        assert tok.decode(trained).strip() == "four" + tok.eos_token
        assert "two hundred" in tok.decode(example["input_ids"])


def test_trl_prompt_errors_name_the_prompt_field(run, tmp_path):
    row = {"prompt": [{"role": "user"}], "completion": [{"role": "assistant", "content": "x"}]}
    src = write(tmp_path / "trl.jsonl", jsonl([row]))
    with pytest.raises(BadRowError, match=r"trl\.jsonl:1: prompt\[0\]\.content: missing"):
        run(src)


# --- bad bytes: a bad row, never a crash ----------------------------------------------------------

GOOD_ROWS = [chat(i) for i in range(40)]


def zst(data: bytes) -> bytes:
    zstandard = pytest.importorskip("zstandard")
    return zstandard.ZstdCompressor().compress(data)


def damaged(compress, suffix: str) -> bytes:
    """The 40 good rows as one intact stream, then a second stream (frame) damaged in its first block."""
    second = bytearray(compress(jsonl([chat(i) for i in range(40, 80)])))
    at = {"gz": 12, "bz2": 12, "xz": 40, "zst": 8}[suffix]  # inside the compressed data, past the header
    for i in range(at, at + 8):
        second[i] ^= 0x55
    return compress(jsonl(GOOD_ROWS)) + bytes(second)


COMPRESSORS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress, "zst": zst}


@pytest.mark.parametrize("suffix", list(COMPRESSORS))
@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_a_damaged_compressed_block_is_a_bad_row_naming_file_and_line(run, tmp_path, suffix, kind):
    compress = COMPRESSORS[suffix]
    if kind == "csv":
        rows = "question,answer\n" + "".join(f"What is {i}?,{i}\n" for i in range(40))
        more = "".join(f"And {i}?,{i}\n" for i in range(40, 80)) * 3
        second = bytearray(compress(more.encode()))
        for i in range(12, 20):
            second[i] ^= 0x55
        data = compress(rows.encode()) + bytes(second)
    else:
        data = damaged(compress, suffix)
    src = write(tmp_path / "data" / f"a.{kind}.{suffix}", data)
    write(tmp_path / "data" / "b.jsonl", jsonl([chat(99)]))
    with pytest.raises(BadRowError) as info:  # an error naming file and line, never a traceback
        run(tmp_path / "data")
    assert str(info.value).startswith(f"{src}:41: <file>: cannot read ")
    stats = run(tmp_path / "data", on_error="skip")
    [reject] = rejects_of(tmp_path / "out")
    assert (reject["file"], reject["row"], reject["field"]) == (str(src), 41, "<file>")
    assert stats["examples_out"] == 41  # every row before the damage, and the other file


@pytest.mark.parametrize("suffix", ["gz", "bz2", "xz"])
def test_a_damaged_compressed_json_or_parquet_is_a_bad_row_in_skip_mode(run, tmp_path, suffix):
    compress = COMPRESSORS[suffix]
    data = tmp_path / "data"
    array = bytearray(compress(json.dumps([chat(i) for i in range(200)]).encode()))
    array[len(array) // 2] ^= 0x55
    array = array[: len(array) * 3 // 4]
    write(data / f"a.json.{suffix}", bytes(array))
    write(data / f"b.parquet.{suffix}", compress(b"PAR1 not really parquet")[:-4])
    write(data / "c.jsonl", jsonl([chat(1), chat(2)]))
    stats = run(data, on_error="skip")
    rejected = {Path(r["file"]).name: r for r in rejects_of(tmp_path / "out")}
    assert set(rejected) == {f"a.json.{suffix}", f"b.parquet.{suffix}"}
    assert "no row of this file was read" in rejected[f"a.json.{suffix}"]["reason"]
    assert rejected[f"b.parquet.{suffix}"]["reason"].startswith("cannot read Parquet")
    assert stats["examples_out"] == 2


@pytest.mark.parametrize("suffix", ["gz", "bz2", "xz"])
def test_json_lines_under_a_json_name_keep_their_rows_before_the_damage(tmp_path, suffix):
    src = write(tmp_path / f"a.json.{suffix}", damaged(COMPRESSORS[suffix], suffix))
    rows = list(iter_file_rows(src))
    assert [r.record for r in rows[:40]] == GOOD_ROWS
    [bad] = rows[40:]
    assert (bad.row, bad.error.field) == (41, "<file>")
    assert bad.error.reason.startswith("cannot read the rest of the file")


def test_a_lone_surrogate_escape_is_a_bad_row_naming_its_field(run, tmp_path):
    bad_line = b'{"messages": [{"role": "user", "content": "hi \\ud800 there"}, {"role": "assistant", "content": "ok"}]}\n'
    paired = chat(5)
    paired["messages"][1]["content"] = "\U0001f600"  # a valid pair, escaped by json.dumps: kept
    src = write(tmp_path / "a.jsonl", jsonl([chat(1), bad_line, paired]))
    with pytest.raises(BadRowError) as info:
        run(src)
    assert str(info.value).startswith(f"{src}:2: messages[0].content: not valid Unicode")
    stats = run(src, on_error="skip")
    assert [(r["row"], r["field"]) for r in rejects_of(tmp_path / "out")] == [(2, "messages[0].content")]
    assert stats["examples_out"] == 2


def test_a_lone_surrogate_in_a_json_array_or_key_is_a_bad_row(tmp_path):
    array = write(
        tmp_path / "a.json",
        b'[{"question": "a?", "answer": "b"}, {"question": "c?", "answer": "\\udc00"}]',
    )
    key = write(tmp_path / "b.jsonl", b'{"question": "a?", "answer": "b", "note\\ud800": 1}\n')
    rows = list(iter_file_rows(array)) + list(iter_file_rows(key))
    assert [(r.row, r.error.field if r.error else None) for r in rows] == [
        (1, None),
        (2, "answer"),
        (1, "note\\ud800"),
    ]


def test_invalid_utf8_and_damaged_bytes_never_crash_the_cli(tmp_path):
    data = tmp_path / "data"
    write(data / "a.jsonl", jsonl([chat(1), b'{"messages": "\xff\xfe"}\n', chat(2)]))
    write(data / "b.jsonl.gz", damaged(gzip.compress, "gz"))
    write(
        data / "c.jsonl",
        b'{"question": "\\ud800?", "answer": "x"}\n' + jsonl([{"question": "q", "answer": "a"}]),
    )
    out = tmp_path / "out"
    args = ["data", "prepare", str(data), "--tokenizer", "tiny:nano", "--out", str(out)]
    env = {**os.environ, "COLUMNS": "1000"}
    for extra in ([], ["--on-error", "skip"]):
        proc = subprocess.run(
            [sys.executable, "-m", "instructkit", *args, *extra], capture_output=True, text=True, env=env
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        if not extra:
            assert proc.returncode == 2 and proc.stderr.strip().startswith(
                f"error: {data / 'a.jsonl'}:2: <row>: not valid UTF-8"
            )
    assert proc.returncode == 0, proc.stderr
    assert sorted((Path(r["file"]).name, r["row"]) for r in rejects_of(out)) == [
        ("a.jsonl", 2),
        ("b.jsonl.gz", 41),
        ("c.jsonl", 1),
    ]
    assert json.loads((out / "stats.json").read_text())["examples_out"] == 2 + 40 + 1


def test_rejected_data_that_is_not_valid_unicode_is_written_escaped(tmp_path):
    log = RejectLog("skip")
    log.reject(BadRowError("f.jsonl", 3, "answer", "bad"), data={"answer": "x\ud800y", "ok": "é"})
    line = log.write(tmp_path / "rejects.jsonl").read_bytes().decode("utf-8")  # valid UTF-8
    assert json.loads(line)["data"] == {"answer": "x\ud800y", "ok": "é"}


# --- --chat-template as a Jinja string with every tokenizer -----------------------------------


@pytest.mark.parametrize("tokenizer", ["tiny", "tiny:nano", "tiny:micro", "saved"])
def test_a_jinja_chat_template_works_with_tiny_tokenizers(run, tmp_path, tokenizer, tokenizer_dir):
    src = write(tmp_path / "a.jsonl", jsonl([chat(i) for i in range(4)]))
    jinja = "{# mine #}" + TULU
    stats = run(src, tokenizer=tokenizer_dir if tokenizer == "saved" else tokenizer, chat_template=jinja)
    assert stats["examples_out"] == 4
    saved = AutoTokenizer.from_pretrained(tmp_path / "out" / "tokenizer")
    assert saved.chat_template == jinja  # train and eval render with the template masked here


@pytest.mark.parametrize("template", ["tokenizer", "chatml"])
def test_tiny_tokenizers_take_the_builtin_names_and_tokenizer(run, tmp_path, template):
    src = write(tmp_path / "a.jsonl", jsonl([chat(i) for i in range(2)]))
    assert run(src, tokenizer="tiny:nano", chat_template=template)["examples_out"] == 2


def test_a_chat_template_that_is_no_name_and_no_jinja_is_refused_in_one_line(run, tmp_path):
    src = write(tmp_path / "a.jsonl", jsonl([chat(1)]))
    with pytest.raises(InstructkitError, match=r"^unknown chat template 'tulu2': give a built-in name"):
        run(src, tokenizer="tiny:nano", chat_template="tulu2")
