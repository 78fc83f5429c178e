"""Global best-fit-decreasing packing of tokenized examples into rows of at most `capacity` tokens.

The bin choice uses FIFO buckets keyed by remaining room plus a sorted list of the rooms that have
a bucket, so each placement costs one `bisect` (O(log L)) over at most L distinct rooms and O(1)
to take or return a bin: O(n log n) for the sort and O(n log L) for the placement, over
the whole dataset at once. Adding or removing a room shifts at most L list slots (a memmove bounded
by the capacity, never by n). Buckets can hold O(n) bins (e.g. n/2 items just over L/2 all leave
the same room), which is why they must never be popped from the front of a list.
Packed rows carry `position_ids` restarting at 0 per example and `seq_lens`, which is what the
training collator turns into block-diagonal attention (no cross-example attention).

Encoder-decoder pairs (`best_fit_decreasing_2d`, `pack_seq2seq_table`) pack as T5X does: several
examples share one encoder row and one decoder row, each within its own capacity. That placement is
a vectorised scan over the open bins: O(n log n) for the sort plus O(n · B) for placement, B the
bins still open (a bin with no encoder or no decoder room left is closed, since every item needs
both), so it is meant for datasets of up to some 10⁵ pairs per prepare run.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .prepared import IGNORE_INDEX


def best_fit_decreasing(lengths: np.ndarray | list[int], capacity: int) -> list[list[int]]:
    """Assign item indices to bins: longest first, each into the fullest bin it still fits.

    Deterministic: ties in length keep input order, and among bins with equal room the oldest wins.
    Raises ValueError if an item is longer than `capacity` (truncate or drop those first).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and int(lengths.max()) > capacity:
        raise ValueError(f"an item of length {int(lengths.max())} exceeds the pack capacity {capacity}")
    if lengths.size and int(lengths.min()) <= 0:
        raise ValueError("items must have positive length")
    order = np.argsort(-lengths, kind="stable")
    bins: list[list[int]] = []
    # remaining room -> [index of the next bin to take, bin ids in arrival order (FIFO)]. Taking
    # advances the index instead of `pop(0)`, which is O(bucket) and made adversarial mixes
    # quadratic; a bucket is dropped once fully taken, so memory stays O(n) overall.
    buckets: dict[int, list[int]] = {}
    rooms: list[int] = []  # sorted distinct rooms that have at least one bin
    for idx, size in zip(order.tolist(), lengths[order].tolist()):
        pos = bisect_left(rooms, size)
        if pos == len(rooms):
            bin_id, room = len(bins), capacity
            bins.append([])
        else:
            room = rooms[pos]
            bucket = buckets[room]
            head = bucket[0]
            bin_id = bucket[head]
            if head + 1 == len(bucket):
                del buckets[room]
                del rooms[pos]
            else:
                bucket[0] = head + 1
        bins[bin_id].append(idx)
        left = room - size
        if left > 0:
            bucket = buckets.get(left)
            if bucket is None:
                buckets[left] = [1, bin_id]
                insort(rooms, left)
            else:
                bucket.append(bin_id)
    return bins


@dataclass
class PackStats:
    examples: int
    packs: int
    tokens: int
    capacity: int

    @property
    def efficiency(self) -> float:
        """Real tokens over token slots (packs × capacity)."""
        return self.tokens / max(1, self.packs * self.capacity)

    @property
    def lower_bound_packs(self) -> int:
        """⌈total tokens / capacity⌉: no packing can use fewer rows."""
        return -(-self.tokens // self.capacity)


def _flat(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Values and offsets of an Arrow list column as numpy arrays."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False)
    base = offsets[0]
    return values[base : offsets[-1]], offsets - base


def pack_table(table: pa.Table, capacity: int) -> tuple[pa.Table, PackStats]:
    """Pack a table with `input_ids` and `labels` list columns into rows of ≤ capacity tokens.

    Output columns: input_ids, labels, position_ids (restart at 0 per example), seq_lens and
    example_ids (row indices of the input, so no example can be lost or duplicated unseen).
    The first label of every example is set to -100: it would otherwise be predicted from the
    previous example's last token.
    """
    ids, offsets = _flat(table.column("input_ids"))
    labels, _ = _flat(table.column("labels"))
    lengths = np.diff(offsets)
    bins = best_fit_decreasing(lengths, capacity)

    order = np.fromiter((i for b in bins for i in b), dtype=np.int64, count=len(lengths))
    pack_sizes = np.fromiter((len(b) for b in bins), dtype=np.int64, count=len(bins))
    ordered_lengths = lengths[order]
    # Gather token spans in pack order with one vectorised take.
    starts = offsets[:-1][order]
    token_index = np.repeat(starts - np.cumsum(np.concatenate(([0], ordered_lengths[:-1]))), ordered_lengths)
    token_index += np.arange(token_index.size, dtype=np.int64)
    packed_ids = ids[token_index]
    packed_labels = labels[token_index].copy()
    example_starts = np.concatenate(([0], np.cumsum(ordered_lengths)[:-1]))
    packed_labels[example_starts] = IGNORE_INDEX
    positions = np.arange(token_index.size, dtype=np.int64) - np.repeat(example_starts, ordered_lengths)

    example_offsets = np.concatenate(([0], np.cumsum(pack_sizes)))
    token_offsets = np.concatenate(([0], np.cumsum(ordered_lengths)))[example_offsets]
    tok_off = pa.array(token_offsets, type=pa.int32() if token_offsets[-1] < 2**31 else pa.int64())
    ex_off = pa.array(example_offsets.astype(np.int32))
    list_of = pa.ListArray.from_arrays if tok_off.type == pa.int32() else pa.LargeListArray.from_arrays
    out = pa.table(
        {
            "input_ids": list_of(tok_off, pa.array(packed_ids.astype(np.int32))),
            "labels": list_of(tok_off, pa.array(packed_labels.astype(np.int32))),
            "position_ids": list_of(tok_off, pa.array(positions.astype(np.int32))),
            "seq_lens": pa.ListArray.from_arrays(ex_off, pa.array(ordered_lengths.astype(np.int32))),
            "example_ids": pa.ListArray.from_arrays(ex_off, pa.array(order)),
        }
    )
    stats = PackStats(
        examples=int(len(lengths)), packs=len(bins), tokens=int(lengths.sum()), capacity=capacity
    )
    return out, stats


def best_fit_decreasing_2d(
    sources: np.ndarray | list[int], targets: np.ndarray | list[int], capacity: tuple[int, int]
) -> list[list[int]]:
    """Assign (source, target) items to bins of (encoder, decoder) `capacity`: largest first (by the
    larger of its two shares of capacity), each into the bin it fits in both dimensions that it leaves
    with the least room (sum of both shares); a new bin when none fits.

    Deterministic: ties keep input order, and among equally good bins the oldest wins. Raises
    ValueError if an item exceeds either capacity or has a non-positive length.
    """
    s = np.asarray(sources, dtype=np.int64)
    t = np.asarray(targets, dtype=np.int64)
    cap_s, cap_t = capacity
    if s.size and (int(s.max()) > cap_s or int(t.max()) > cap_t):
        raise ValueError(f"an item exceeds the pack capacity (encoder {cap_s}, decoder {cap_t})")
    if s.size and (int(s.min()) <= 0 or int(t.min()) <= 0):
        raise ValueError("items must have positive source and target lengths")
    order = np.lexsort((np.arange(s.size), -np.maximum(s / cap_s, t / cap_t)))
    bins: list[list[int]] = []
    room = np.zeros((0, 2), dtype=np.int64)  # open bins' (encoder, decoder) room
    open_ids = np.zeros(0, dtype=np.int64)  # their bin ids, oldest first
    for idx in order.tolist():
        need = (int(s[idx]), int(t[idx]))
        fits = np.flatnonzero((room[:, 0] >= need[0]) & (room[:, 1] >= need[1]))
        if fits.size:
            left = (room[fits, 0] - need[0]) / cap_s + (room[fits, 1] - need[1]) / cap_t
            slot = int(fits[np.argmin(left)])  # argmin: the first (oldest) of equals
        else:
            slot = len(open_ids)
            bins.append([])
            room = np.vstack([room, [[cap_s, cap_t]]])
            open_ids = np.append(open_ids, len(bins) - 1)
        bins[int(open_ids[slot])].append(idx)
        room[slot] -= need
        if room[slot, 0] == 0 or room[slot, 1] == 0:  # nothing fits any more: close it
            room = np.delete(room, slot, axis=0)
            open_ids = np.delete(open_ids, slot)
    return bins


def _gather(values: np.ndarray, offsets: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token spans of the examples `order` names, concatenated, and each example's length."""
    lengths = np.diff(offsets)[order]
    starts = offsets[:-1][order]
    index = np.repeat(starts - np.cumsum(np.concatenate(([0], lengths[:-1]))), lengths)
    index += np.arange(index.size, dtype=np.int64)
    return values[index], lengths


def _list_column(values: np.ndarray, row_offsets: np.ndarray) -> pa.Array:
    """A list<int32> column of `values` split at `row_offsets` (large offsets when needed)."""
    big = row_offsets[-1] >= 2**31
    off = pa.array(row_offsets, type=pa.int64() if big else pa.int32())
    make = pa.LargeListArray.from_arrays if big else pa.ListArray.from_arrays
    return make(off, pa.array(values.astype(np.int32)))


def pack_seq2seq_table(table: pa.Table, capacity: tuple[int, int]) -> tuple[pa.Table, PackStats]:
    """Pack (encoder `input_ids`, decoder `labels`) pairs into rows of ≤ capacity (encoder, decoder) tokens.

    Output columns: input_ids, position_ids (encoder, restart at 0 per example), labels,
    decoder_position_ids (restart at 0 per example), seq_lens and target_lens (per example, in the
    same order, so segment i of the encoder row belongs with segment i of the decoder row) and
    example_ids. No label is changed: each example's first target token is predicted from the
    decoder start token, which the collator puts at the start of every decoder segment.
    `PackStats` counts encoder tokens against the encoder capacity.
    """
    ids, src_off = _flat(table.column("input_ids"))
    labels, tgt_off = _flat(table.column("labels"))
    bins = best_fit_decreasing_2d(np.diff(src_off), np.diff(tgt_off), capacity)
    order = np.fromiter((i for b in bins for i in b), dtype=np.int64, count=len(src_off) - 1)
    ex_off = np.concatenate(([0], np.cumsum([len(b) for b in bins]))).astype(np.int64)
    columns: dict[str, pa.Array] = {}
    for name, pos_name, values, offsets in (
        ("input_ids", "position_ids", ids, src_off),
        ("labels", "decoder_position_ids", labels, tgt_off),
    ):
        packed, lengths = _gather(values, offsets, order)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        positions = np.arange(packed.size, dtype=np.int64) - np.repeat(starts, lengths)
        row_off = np.concatenate(([0], np.cumsum(lengths)))[ex_off]
        columns[name] = _list_column(packed, row_off)
        columns[pos_name] = _list_column(positions, row_off)
        columns["seq_lens" if name == "input_ids" else "target_lens"] = pa.ListArray.from_arrays(
            pa.array(ex_off.astype(np.int32)), pa.array(lengths.astype(np.int32))
        )
    columns["example_ids"] = pa.ListArray.from_arrays(pa.array(ex_off.astype(np.int32)), pa.array(order))
    stats = PackStats(
        examples=int(order.size), packs=len(bins), tokens=int(np.diff(src_off).sum()), capacity=capacity[0]
    )
    return pa.table(columns), stats
