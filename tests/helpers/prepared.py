"""Prepared-data folders built from small tokenized examples, for the training tests.

Written by `data.prepared.write_prepared` (the one writer `data prepare` uses) from rows tokenized here,
so the training tests do not depend on prepare.py's sources, templates and policies.
"""

from __future__ import annotations

import random
from pathlib import Path

import datasets
import pyarrow as pa

from instructkit.data import prepared
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
    """Write rows as a prepared folder (packed with pack_table, or unpacked with a length column)."""
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
    settings = {"tokenizer": "tiny", "chat_template": "tulu", "max_length": max_length, "packed": pack}
    stats = {
        "examples_out": len(rows),
        "tokens": sum(len(r["input_ids"]) for r in rows),
        "trainable_tokens": sum(sum(x != -100 for x in r["labels"]) for r in rows),
        "packing_efficiency": efficiency,
    }
    return prepared.write_prepared(
        root, datasets.Dataset(table), tokenizer, settings | {"loss_on": loss_on}, stats
    )


def addition_dir(root: Path, tokenizer, n: int = 64, seed: int = 0, pack: bool = True, max_length: int = 128):
    """A prepared directory of `n` addition examples."""
    rows = [tokenize_pair(tokenizer, p, a) for p, a in addition_pairs(n, seed)]
    return write_prepared(root, tokenizer, rows, pack=pack, max_length=max_length)


def copy_dir(root: Path, tokenizer, n: int = 64, seed: int = 0, pack: bool = True, max_length: int = 128):
    """A prepared directory of `n` copy examples (varying answer lengths)."""
    rows = [tokenize_pair(tokenizer, p, a) for p, a in copy_pairs(n, seed)]
    return write_prepared(root, tokenizer, rows, pack=pack, max_length=max_length)


def mixed_dir(root: Path, tokenizer, n: int = 64, seed: int = 0, pack: bool = True, max_length: int = 128):
    """Copy and addition examples mixed, so packed rows carry different numbers of trainable tokens."""
    pairs = copy_pairs(n // 2, seed) + addition_pairs(n - n // 2, seed)
    random.Random(seed).shuffle(pairs)
    rows = [tokenize_pair(tokenizer, p, a) for p, a in pairs]
    return write_prepared(root, tokenizer, rows, pack=pack, max_length=max_length)


def addition_examples(tokenizer, n=5):
    """`n` tokenized addition examples (seed 1), unpacked."""
    return [tokenize_pair(tokenizer, p, a) for p, a in addition_pairs(n, seed=1)]


def packed_feature(examples):
    """The examples concatenated into one packed row, positions restarting at each example."""
    ids = [t for e in examples for t in e["input_ids"]]
    labels = [t for e in examples for t in e["labels"]]
    pos = [i for e in examples for i in range(len(e["input_ids"]))]
    return {"input_ids": ids, "labels": labels, "position_ids": pos}
