"""Global best-fit-decreasing packing of tokenized examples into rows of at most `capacity` tokens.

The bin choice uses FIFO buckets keyed by remaining room plus a sorted list of the rooms that have
a bucket, so each placement costs one `bisect` (O(log L)) over at most L distinct rooms and O(1)
to take or return a bin: O(n log n) for the sort and O(n log L) for the placement, over
the whole dataset at once. Adding or removing a room shifts at most L list slots (a memmove bounded
by the capacity, never by n). Buckets can hold O(n) bins (e.g. n/2 items just over L/2 all leave
the same room), which is why they must never be popped from the front of a list.
Packed rows carry `position_ids` restarting at 0 per example and `seq_lens`, which is what the
training collator turns into block-diagonal attention (no cross-example attention).
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
