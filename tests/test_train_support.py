"""Helpers for the training tests: prepared-data directories built from small tokenized examples.

They follow the `instructkit data prepare` contract (save_to_disk dataset + prepare.json + stats.json
+ tokenizer/) without depending on prepare.py, so the training tests only test training.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import datasets
import pyarrow as pa

from instructkit.data.packing import pack_table


def addition_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """A procedural task: 'Add a and b.' → the sum, with one-digit operands."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        pairs.append((f"Add {a} and {b}.", str(a + b)))
    return pairs


def copy_pairs(n: int, seed: int, min_len: int = 1, max_len: int = 6) -> list[tuple[str, str]]:
    """A procedural task: 'Repeat 417.' → '417', with digit strings of varying length."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        digits = [str(rng.randint(0, 9)) for _ in range(rng.randint(min_len, max_len))]
        pairs.append((f"Repeat {''.join(digits)}.", "".join(digits)))
    return pairs


def last_digits_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """A procedural task: 'Last two digits of 41729?' → '29', for 3- to 6-digit numbers."""
    rng = random.Random(seed)
    numbers = (str(rng.randint(100, 999_999)) for _ in range(n))
    return [(f"Last two digits of {x}?", x[-2:]) for x in numbers]


def tokenize_pair(tokenizer, prompt: str, answer: str) -> dict:
    """Chat-template the prompt; label only the assistant answer and its end-of-text token."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    p = tokenizer(text, add_special_tokens=False)["input_ids"]
    a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": p + a, "labels": [-100] * len(p) + a}


def write_prepared(
    root: Path,
    tokenizer,
    rows: list[dict],
    pack: bool = True,
    max_length: int = 128,
    loss_on: str = "assistant",
) -> Path:
    """Write rows as a prepared directory (packed with pack_table, or unpacked with a length column)."""
    root.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "input_ids": pa.array([r["input_ids"] for r in rows], pa.list_(pa.int32())),
            "labels": pa.array([r["labels"] for r in rows], pa.list_(pa.int32())),
        }
    )
    if pack:
        table, pstats = pack_table(table, max_length)
        efficiency = pstats.efficiency
    else:
        table = table.append_column("length", pa.array([len(r["input_ids"]) for r in rows], pa.int32()))
        efficiency = None
    datasets.Dataset(table).save_to_disk(str(root))
    meta = {
        "tokenizer": "tiny",
        "chat_template": "tulu",
        "max_length": max_length,
        "packed": pack,
        "loss_on": loss_on,
    }
    tokens = sum(len(r["input_ids"]) for r in rows)
    trainable = sum(sum(x != -100 for x in r["labels"]) for r in rows)
    stats = {
        "examples_out": len(rows),
        "tokens": tokens,
        "trainable_tokens": trainable,
        "packing_efficiency": efficiency,
    }
    (root / "prepare.json").write_text(json.dumps(meta))
    (root / "stats.json").write_text(json.dumps(stats))
    tokenizer.save_pretrained(str(root / "tokenizer"))
    return root


def addition_dir(root: Path, tokenizer, n: int = 64, seed: int = 0, pack: bool = True, max_length: int = 128):
    """A prepared directory of `n` addition examples."""
    rows = [tokenize_pair(tokenizer, p, a) for p, a in addition_pairs(n, seed)]
    return write_prepared(root, tokenizer, rows, pack=pack, max_length=max_length)


def copy_dir(root: Path, tokenizer, n: int = 64, seed: int = 0, pack: bool = True, max_length: int = 128):
    """A prepared directory of `n` copy examples (varying answer lengths)."""
    rows = [tokenize_pair(tokenizer, p, a) for p, a in copy_pairs(n, seed)]
    return write_prepared(root, tokenizer, rows, pack=pack, max_length=max_length)


def test_prepared_dir_follows_the_contract(tmp_path, tiny_tokenizer):
    path = addition_dir(tmp_path / "d", tiny_tokenizer, n=20)
    ds = datasets.load_from_disk(str(path))
    assert {"input_ids", "labels", "position_ids", "seq_lens", "example_ids"} <= set(ds.column_names)
    assert sorted(i for row in ds["example_ids"] for i in row) == list(range(20))
    assert all(sum(s) == len(ids) for s, ids in zip(ds["seq_lens"], ds["input_ids"]))
    assert json.loads((path / "prepare.json").read_text())["packed"] is True
    assert (path / "tokenizer" / "tokenizer.json").is_file()


def mixed_dir(root: Path, tokenizer, n: int = 64, seed: int = 0, pack: bool = True, max_length: int = 128):
    """Copy and addition examples mixed, so packed rows carry different numbers of trainable tokens."""
    pairs = copy_pairs(n // 2, seed) + addition_pairs(n - n // 2, seed)
    random.Random(seed).shuffle(pairs)
    rows = [tokenize_pair(tokenizer, p, a) for p, a in pairs]
    return write_prepared(root, tokenizer, rows, pack=pack, max_length=max_length)
