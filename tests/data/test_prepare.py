"""`data prepare` end to end: sources, bad rows under both policies, length policies, packing, CLI."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from helpers.files import write_jsonl
from instructkit.cli.app import app
from instructkit.data.prepare import PrepareConfig, prepare
from instructkit.errors import BadRowError, HubUnreachableError, InstructkitError

GOOD = {"messages": [{"role": "user", "content": "What is 2 plus 2?"}, {"role": "assistant", "content": "4"}]}


@pytest.fixture
def broken_file(tmp_path) -> str:
    rows = [
        GOOD,
        b'{"messages": [ oops\n',
        b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n',
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]},
        GOOD,
        {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]},
        {"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]},
        {"messages": [{"role": "user", "content": 7}, {"role": "assistant", "content": "x"}]},
        GOOD,
    ]
    return write_jsonl(tmp_path / "mixed.jsonl", rows)


def cfg(sources, tokenizer_dir, out, **kw) -> PrepareConfig:
    return PrepareConfig(sources=[str(s) for s in sources], tokenizer=tokenizer_dir, out=str(out), **kw)


def test_first_bad_row_stops_with_file_row_and_field(broken_file, tokenizer_dir, tmp_path):
    with pytest.raises(BadRowError) as info:
        prepare(cfg([broken_file], tokenizer_dir, tmp_path / "out"), progress=False)
    assert str(info.value).startswith(f"{broken_file}:2: <row>: invalid JSON")
    assert not (tmp_path / "out").exists()


def test_skip_writes_every_rejected_row_with_its_reason(broken_file, tokenizer_dir, tmp_path):
    stats = prepare(cfg([broken_file], tokenizer_dir, tmp_path / "out", on_error="skip"), progress=False)
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["field"]) for r in rejects] == [
        (2, "<row>"),
        (3, "<row>"),
        (4, "messages[1].content"),
        (6, "messages[1].role"),
        (7, "messages[0].role"),
        (8, "messages[0].content"),
    ]
    assert "UTF-8" in rejects[1]["reason"] and "empty assistant" in rejects[2]["reason"]
    assert stats["examples_in"] == 9 and stats["rejected"] == 6 and stats["examples_out"] == 3
    assert len(datasets.load_from_disk(str(tmp_path / "out"))) == 3


def test_unpacked_output_masks_and_counts(tokenizer_dir, tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [GOOD] * 5)
    stats = prepare(cfg([src], tokenizer_dir, tmp_path / "out"), progress=False)
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert ds.column_names == ["input_ids", "labels", "length"]
    row = ds[0]
    trained = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100]
    assert stats["trainable_tokens"] == 5 * len(trained)
    assert stats["tokens"] == sum(ds["length"])
    settings = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert settings["packed"] is False and settings["input_format"] == "messages"
    assert (tmp_path / "out" / "tokenizer" / "tokenizer.json").is_file()


def long_rows(n: int) -> list[dict]:
    prompt = " ".join(f"word{i}" for i in range(n))
    return [
        {"prompt": prompt, "completion": "yes"},
        {"prompt": "short", "completion": "answer " * 3},
        {"prompt": "tiny", "completion": prompt},
    ]


@pytest.mark.parametrize(
    ("policy", "expect"),
    [
        ("truncate", {"truncated": 1, "dropped_truncated": 1, "dropped_no_trainable": 0, "examples_out": 2}),
        ("drop", {"dropped_overlong": 2, "examples_out": 1}),
    ],
)
def test_overlong_policies_are_counted(policy, expect, tokenizer_dir, tmp_path):
    src = write_jsonl(tmp_path / "long.jsonl", long_rows(200))
    stats = prepare(cfg([src], tokenizer_dir, tmp_path / "o", max_length=64, overlong=policy), progress=False)
    for key, value in expect.items():
        assert stats[key] == value, key
    assert stats["max_tokens"] <= 64


def test_split_is_for_pretraining_only_and_keeps_all_tokens(tokenizer_dir, tmp_path):
    src = write_jsonl(tmp_path / "t.jsonl", [{"text": " ".join(["alpha beta"] * 100)}])
    with pytest.raises(InstructkitError, match="pretraining"):
        prepare(
            cfg([src], tokenizer_dir, tmp_path / "o", overlong="split", loss_on="assistant"), progress=False
        )
    stats = prepare(
        cfg([src], tokenizer_dir, tmp_path / "o", max_length=32, overlong="split", loss_on="all"),
        progress=False,
    )
    ds = datasets.load_from_disk(str(tmp_path / "o"))
    assert stats["split_examples"] == 1 and stats["split_pieces"] == len(ds) > 1
    assert all(row["labels"] == row["input_ids"] for row in ds)
    assert stats["tokens"] == stats["trainable_tokens"]


def test_packed_output_keeps_every_example_once(tokenizer_dir, tmp_path):
    rows = [{"instruction": f"Add {i} and {i + 1}.", "output": str(2 * i + 1)} for i in range(50)]
    src = write_jsonl(tmp_path / "alpaca.jsonl", rows)
    stats = prepare(cfg([src], tokenizer_dir, tmp_path / "p", max_length=64, pack=True), progress=False)
    ds = datasets.load_from_disk(str(tmp_path / "p"))
    assert sorted(i for row in ds for i in row["example_ids"]) == list(range(50))
    assert all(len(row["input_ids"]) <= 64 for row in ds)
    assert stats["packs"] == len(ds) and 0 < stats["packing_efficiency"] <= 1
    assert stats["trainable_tokens_packed"] == stats["trainable_tokens"]


def test_parquet_csv_and_directory_sources(tokenizer_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"inputs": ["a b", "c d"], "targets": ["x", "y"]}), data / "f.parquet")
    (data / "g.csv").write_text("inputs,targets\nhello,world\n")
    (data / "notes.json").write_text('[{"unrelated": 1}]')  # fits no format: listed in skip mode
    stats = prepare(cfg([data], tokenizer_dir, tmp_path / "o", on_error="skip"), progress=False)
    assert stats["examples_out"] == 3
    assert [s["path"] for s in stats["skipped_files"]] == [str(data / "notes.json")]


def test_unreachable_hub_says_so_and_how_to_use_local_files(tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError, match="cannot be reached.*local files"):
        prepare(cfg(["someone/some-dataset"], tokenizer_dir, tmp_path / "o"), progress=False)


def test_cli_prepare_then_show(tokenizer_dir, tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [GOOD] * 4)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "data",
            "prepare",
            str(src),
            "--tokenizer",
            tokenizer_dir,
            "--out",
            str(tmp_path / "o"),
            "--max-length",
            "128",
            "--pack",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "packing_efficiency" in result.output
    shown = runner.invoke(app, ["data", "show", str(tmp_path / "o"), "-n", "1"])
    assert shown.exit_code == 0, shown.output
    assert "4 examples packed" in shown.output


@pytest.mark.shared
@pytest.mark.parametrize(
    ("relative", "expected_rows"),
    [("p3_t0_subset", 16091), ("self_instruct/seed_tasks.jsonl", 175), ("gsm8k/train.jsonl", 7473)],
)
def test_shared_training_data_prepares_without_error(
    shared_data, tokenizer_dir, tmp_path, relative, expected_rows
):
    stats = prepare(
        # skip mode lists p3_t0_subset/clusters.json (metadata, no row format); `rejected == 0` still holds
        cfg(
            [shared_data / relative],
            tokenizer_dir,
            tmp_path / "o",
            max_length=1024,
            pack=True,
            on_error="skip",
        ),
        progress=False,
    )
    assert stats["examples_in"] == expected_rows and stats["rejected"] == 0
    assert stats["examples_out"] + stats["dropped_no_trainable"] + stats["dropped_truncated"] >= expected_rows
    assert stats["packing_efficiency"] > 0.95


def test_mixed_format_prepare_records_every_format_with_files_and_rows(tokenizer_dir, tmp_path):
    chats = write_jsonl(tmp_path / "chats.jsonl", [GOOD] * 3)
    alpaca = write_jsonl(
        tmp_path / "alpaca.jsonl", [{"instruction": "Say hi.", "input": "", "output": "hi"}] * 2
    )
    stats = prepare(cfg([chats, alpaca], tokenizer_dir, tmp_path / "o"), progress=False)
    assert [f["input_format"] for f in stats["files"]] == ["messages", "alpaca"]
    settings = json.loads((tmp_path / "o" / "prepare.json").read_text())
    assert settings["input_format"] == "mixed"
    assert settings["input_formats"] == {
        "alpaca": {"files": [str(alpaca)], "rows_read": 2, "rows_kept": 2},
        "messages": {"files": [str(chats)], "rows_read": 3, "rows_kept": 3},
    }
