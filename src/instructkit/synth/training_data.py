"""`synth train-data`: context-based task data → synthesizer training rows, loss on the pairs only.

Rows sharing a dataset and a context become one example: the context as raw text, its task
instances as pairs. Examples of the same dataset are concatenated few-shot (up to `max_shots`, within
`max_length` tokens) in the published format. The output is already tokenized, with labels on each
example's pairs and its EOS and -100 elsewhere, in the layout `instructkit data prepare` writes
(dataset + prepare.json + stats.json + tokenizer/), so `instructkit train --data OUT` trains on it.
Tokenizing here, with `format.encode_example`, guarantees that the boundary between a context and
its pairs is tokenized exactly as at inference, which a chat template rendering cannot promise.
Settings: `config.TrainDataConfig`.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.prepared import IGNORE_INDEX
from ..errors import InstructkitError
from .config import TrainDataConfig
from .markup import Pair, SynthFormat, encode_example
from .task_rows import read_task_rows


@dataclass
class Example:
    dataset: str
    context: str
    pairs: list[Pair]


def group_examples(rows: Iterable[dict[str, str]]) -> list[Example]:
    """One example per (dataset, context), pairs in first-seen order, repeated questions dropped."""
    examples: dict[tuple[str, str], Example] = {}
    for row in rows:
        key = (row["dataset"], row["context"])
        example = examples.setdefault(key, Example(row["dataset"], row["context"], []))
        if all(p.instruction.lower() != row["instruction"].lower() for p in example.pairs):
            example.pairs.append(Pair(row["instruction"], row["response"]))
    return list(examples.values())


def split_holdout(examples: list[Example], share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Per dataset, a seeded share of examples held out (train, held-out)."""
    train, held = [], []
    for name in sorted({e.dataset for e in examples}):
        group = [e for e in examples if e.dataset == name]
        random.Random(f"{seed}:{name}").shuffle(group)
        k = int(round(len(group) * share))
        held += group[:k]
        train += group[k:]
    return train, held


def fewshot_rows(
    tokenizer, examples: list[Example], max_length: int, max_shots: int, seed: int, stats: Counter
) -> list[dict[str, Any]]:
    """Concatenate same-dataset examples into rows of ≤ max_length tokens; labels on pairs + EOS only."""
    fmt = SynthFormat.for_tokenizer(tokenizer)
    rows: list[dict[str, Any]] = []
    for name in sorted({e.dataset for e in examples}):
        group = [e for e in examples if e.dataset == name]
        random.Random(f"{seed}:{name}:order").shuffle(group)
        current: dict[str, Any] = _empty_row(name)
        for example in group:
            ids, read_len = encode_example(tokenizer, fmt, example.context, example.pairs)
            if len(ids) > max_length:
                stats["dropped_overlong"] += 1
                continue
            if current["shots"] and (
                len(current["input_ids"]) + len(ids) > max_length or current["shots"] >= max_shots
            ):
                rows.append(current)
                current = _empty_row(name)
            current["input_ids"] += ids
            current["labels"] += [IGNORE_INDEX] * read_len + ids[read_len:]
            current["shots"] += 1
            stats["examples"] += 1
            stats["pairs"] += len(example.pairs)
        if current["shots"]:
            rows.append(current)
    return rows


def _empty_row(dataset: str) -> dict[str, Any]:
    return {"input_ids": [], "labels": [], "dataset": dataset, "shots": 0}


def make_training_data(cfg: TrainDataConfig, rows: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Write the tokenized training rows (and held-out examples) to `cfg.out`; returns the stats."""
    skipped: Counter = Counter()
    rows = rows if rows is not None else [r for s in cfg.sources for r in read_task_rows(s, skipped)]
    examples = group_examples(rows)
    if not examples:
        raise InstructkitError(
            f"no usable context-task rows in {', '.join(cfg.sources)} (skipped: {dict(skipped)})"
        )
    train, held = split_holdout(examples, cfg.holdout, cfg.seed)
    tokenizer = _tokenizer(cfg.tokenizer, examples)
    stats: Counter = Counter()
    out_rows = fewshot_rows(tokenizer, train, cfg.max_length, cfg.max_shots, cfg.seed, stats)
    summary = {
        **stats,
        "rows": len(out_rows),
        "held_out_examples": len(held),
        "skipped_rows": dict(skipped),
        "datasets": sorted({e.dataset for e in train}),
        "trainable_tokens": sum(sum(t != IGNORE_INDEX for t in r["labels"]) for r in out_rows),
    }
    _write(cfg, out_rows, held, tokenizer, summary)
    return summary


def _tokenizer(name: str, examples: list[Example]):
    """Load a tokenizer, or train a tiny byte-level BPE on the examples' text for `tiny[:preset]`."""
    from ..models.loading import load_or_train_tokenizer

    def texts():
        fmt = SynthFormat()
        return (fmt.example(e.context, e.pairs) for e in examples)

    return load_or_train_tokenizer(name, texts, chat_template="plain")


def _write(
    cfg: TrainDataConfig, rows: list[dict[str, Any]], held: list[Example], tokenizer, summary: dict[str, Any]
) -> None:
    """Save in the prepared-folder format `train` reads, plus the held-out pairs for evaluation."""
    import datasets

    from ..data.prepared import write_prepared

    def write_held_out(folder: Path) -> None:
        with (folder / "held_out.jsonl").open("w", encoding="utf-8") as f:
            for e in held:
                for p in e.pairs:
                    record = {"dataset": e.dataset, "context": e.context, **p.to_dict()}
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")

    ds = datasets.Dataset.from_list(rows).map(lambda r: {"length": len(r["input_ids"])}, desc="row lengths")
    meta = {**cfg.model_dump(), "format": "synth", "packed": False, "loss_on": "pairs"}
    write_prepared(cfg.out, ds, tokenizer, meta, summary, extra=write_held_out)
