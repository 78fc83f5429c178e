"""Preference pairs → token rows: both sides masked by `ChatTokenizer`, one shared prompt, pairs kept whole.

Each side is rendered and masked by the same code as SFT (labels = the reply plus its end-of-turn
token); the prompt's token ids must be the same on both sides, or the row is refused. The length
policy applies to each side (at most `max_length` tokens): a side cut so far that no reply token is
left drops the whole pair, counted in stats. A pair is one item for packing (best-fit decreasing over
pairs, rows of at most 2 × `max_length` tokens), so both sides of a pair always land in the same row
and micro-batch; in the row it becomes two sequences (chosen, then rejected) with `position_ids`
restarting at 0, `seq_lens`, and per-sequence `pair_ids` and `sides` (0 chosen, 1 rejected).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import datasets
import numpy as np
import pyarrow as pa

from .packing import PackStats, _flat, best_fit_decreasing
from .preference import SIDES, pair_chat
from .prepare_config import PrepareConfig
from .prepared import IGNORE_INDEX, map_tokenize
from .tokenize import ChatTokenizer

PAIR_FEATURES = datasets.Features(
    {
        "input_ids": datasets.List(datasets.Value("int32")),  # chosen tokens, then rejected tokens
        "labels": datasets.List(datasets.Value("int32")),
        "chosen_length": datasets.Value("int32"),
        "status": datasets.Value("string"),
        "reason": datasets.Value("string"),
        "source": datasets.Value("string"),
        "row_id": datasets.Value("int64"),
    }
)
DROP_ORDER = ("dropped_overlong", "dropped_truncated", "dropped_no_trainable")


def prompt_length(labels: list[int]) -> int:
    """Tokens before the first labelled one: the prompt as this side's rendering tokenized it."""
    return next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))


class TokenizePairs:
    """The batched `datasets.map` function: mask both sides, check the shared prompt, apply the length policy."""

    def __init__(self, chat_tok: ChatTokenizer, cfg: PrepareConfig, length_policy: Callable[..., Iterator]):
        self.chat_tok, self.cfg, self.length_policy = chat_tok, cfg, length_policy

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        n = len(batch["source"])
        chats = [pair_chat(batch["prompt"][i], batch[side][i]) for side in SIDES for i in range(n)]
        encoded = self.chat_tok.encode(chats, "assistant")
        out: dict[str, list] = {key: [] for key in PAIR_FEATURES}
        for i in range(n):
            chosen, rejected = encoded[i], encoded[n + i]
            row = {"source": batch["source"][i], "row_id": batch["row_id"][i]}
            bad = next((e for e in (chosen, rejected) if isinstance(e, Exception)), None)
            if bad is None:
                bad = _prompt_mismatch(chosen.labels, chosen.input_ids, rejected.labels, rejected.input_ids)
            if bad is not None:
                _emit(out, row, [], [], 0, "rejected", str(bad))
                continue
            pieces = [
                next(self.length_policy(e.input_ids, e.labels, self.cfg.max_length, self.cfg.overlong))
                for e in (chosen, rejected)
            ]
            statuses = {status for _, _, status in pieces}
            dropped = next((s for s in DROP_ORDER if s in statuses), None)
            if dropped:
                _emit(out, row, [], [], 0, dropped, "")
                continue
            (c_ids, c_labels, _), (r_ids, r_labels, _) = pieces
            status = "truncated" if "truncated" in statuses else "ok"
            _emit(out, row, c_ids + r_ids, c_labels + r_labels, len(c_ids), status, "")
        return out


def _prompt_mismatch(c_labels, c_ids, r_labels, r_ids) -> ValueError | None:
    """Both sides must start with the same prompt token ids (the reference and the loss compare them)."""
    a, b = c_ids[: prompt_length(c_labels)], r_ids[: prompt_length(r_labels)]
    if a == b:
        return None
    at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return ValueError(
        "rejected: the prompt tokenizes differently before the chosen and the rejected reply (first "
        f"difference at token {at}; a reply's first token merges with the prompt's last), so the pair has no "
        "one shared prompt"
    )


def _emit(out, row, ids, labels, chosen_length, status, reason) -> None:
    values = {"input_ids": ids, "labels": labels, "chosen_length": chosen_length, "status": status}
    for key, value in {**values, "reason": reason, **row}.items():
        out[key].append(value)


def tokenize_pairs(
    ds: datasets.Dataset, chat_tok: ChatTokenizer, cfg: PrepareConfig, length_policy: Callable[..., Iterator]
) -> datasets.Dataset:
    """Run the pair tokenize + mask + length-policy map: one output row per pair, with its status.

    `length_policy` is SFT's (`prepare.apply_length_policy`), applied to each side.
    """
    return map_tokenize(
        ds,
        TokenizePairs(chat_tok, cfg, length_policy),
        PAIR_FEATURES,
        "tokenize + mask pairs",
        cfg.num_proc,
        cfg.model_dump_json(),
        chat_tok.template,
        "pairs",
    )


def pair_rows(table: pa.Table, capacity: int, pack: bool) -> tuple[pa.Table, PackStats]:
    """Kept pairs (`input_ids`, `labels`, `chosen_length`) → rows of whole pairs, each pair two sequences.

    With `pack`, pairs are placed by best-fit decreasing into rows of at most `capacity` tokens;
    otherwise each row holds one pair. Columns: input_ids, labels, position_ids (restarting per
    sequence), seq_lens, pair_ids and sides (per sequence), example_ids (the pair's kept-row index).
    The first label of every sequence is -100 (never predicted from the sequence before it).
    """
    ids, offsets = _flat(table.column("input_ids"))
    labels, _ = _flat(table.column("labels"))
    chosen = table.column("chosen_length").to_numpy().astype(np.int64)
    lengths = np.diff(offsets)
    bins = best_fit_decreasing(lengths, capacity) if pack else [[i] for i in range(len(lengths))]
    order = np.fromiter((i for b in bins for i in b), dtype=np.int64, count=len(lengths))
    pairs_per_row = np.fromiter((len(b) for b in bins), dtype=np.int64, count=len(bins))
    ordered = lengths[order]
    pair_starts = np.concatenate(([0], np.cumsum(ordered)[:-1]))
    token_index = np.repeat(offsets[:-1][order] - pair_starts, ordered) + np.arange(int(ordered.sum()))
    seq_lens = np.stack([chosen[order], ordered - chosen[order]], axis=1).reshape(-1)
    seq_starts = np.concatenate(([0], np.cumsum(seq_lens)[:-1]))
    out_labels = labels[token_index].copy()
    out_labels[seq_starts] = IGNORE_INDEX
    positions = np.arange(token_index.size, dtype=np.int64) - np.repeat(seq_starts, seq_lens)
    pair_offsets = np.concatenate(([0], np.cumsum(pairs_per_row)))
    tok_off = pa.array(np.concatenate(([0], np.cumsum(ordered)))[pair_offsets].astype(np.int32))
    seq_off, pair_off = pa.array((2 * pair_offsets).astype(np.int32)), pa.array(pair_offsets.astype(np.int32))

    def tokens(values: np.ndarray) -> pa.ListArray:
        return pa.ListArray.from_arrays(tok_off, pa.array(values.astype(np.int32)))

    rows = pa.table(
        {
            "input_ids": tokens(ids[token_index]),
            "labels": tokens(out_labels),
            "position_ids": tokens(positions),
            "seq_lens": pa.ListArray.from_arrays(seq_off, pa.array(seq_lens.astype(np.int32))),
            "pair_ids": pa.ListArray.from_arrays(seq_off, pa.array(np.repeat(order, 2))),
            "sides": pa.ListArray.from_arrays(seq_off, pa.array(np.tile([0, 1], len(order)).astype(np.int8))),
            "example_ids": pa.ListArray.from_arrays(pair_off, pa.array(order)),
        }
    )
    return rows, PackStats(len(lengths), len(bins), int(lengths.sum()), capacity)
