"""Packing keeps its exact best-fit-decreasing result, also on length mixes that build huge buckets.

The bucketed implementation is compared with a direct O(n·bins) BFD that scans every open bin.
Speed on the adversarial mix is measured in benchmarks/bench_packing.py, not asserted here.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from instructkit.data.packing import best_fit_decreasing


def reference_bfd(lengths: list[int], capacity: int) -> list[list[int]]:
    """Plain BFD: longest first (stable), into the open bin with the least room that still fits.

    Ties between bins with equal room go to the bin that has had that room the longest.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    rooms: list[int] = []
    since: list[int] = []  # step at which each bin reached its current room
    for step, idx in enumerate(order):
        size = lengths[idx]
        fits = [b for b in range(len(bins)) if rooms[b] >= size]
        if fits:
            b = min(fits, key=lambda b: (rooms[b], since[b]))
        else:
            b = len(bins)
            bins.append([])
            rooms.append(capacity)
            since.append(step)
        bins[b].append(idx)
        rooms[b] -= size
        since[b] = step
    return bins


def adversarial_lengths(n: int, capacity: int) -> np.ndarray:
    """Half the items just over L/2, half just under: every long item opens a bin with the same
    room, so a single bucket holds n/2 bins and each short item takes the oldest of them."""
    half = n // 2
    return np.concatenate([np.full(half, capacity // 2 + 1), np.full(n - half, capacity // 2 - 1)])


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=120),
    capacity=st.integers(min_value=40, max_value=120),
)
def test_matches_reference_bfd_on_random_lengths(lengths, capacity):
    assert best_fit_decreasing(lengths, capacity) == reference_bfd(lengths, capacity)


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.sampled_from([1, 3, 9, 10, 11, 17]), min_size=1, max_size=150),
    capacity=st.sampled_from([20, 21, 30]),
)
def test_matches_reference_bfd_when_many_bins_share_a_room(lengths, capacity):
    """Few distinct lengths make many equal rooms, so the tie rule (oldest first) is exercised."""
    assert best_fit_decreasing(lengths, capacity) == reference_bfd(lengths, capacity)


def test_adversarial_mix_pairs_each_long_item_with_the_oldest_open_bin():
    lengths = adversarial_lengths(2000, 4096)
    bins = best_fit_decreasing(lengths, 4096)
    assert bins == reference_bfd(lengths.tolist(), 4096)
    # Long item i (index i) opened bin i; the i-th short item (index 1000 + i) fills it exactly.
    assert bins == [[i, 1000 + i] for i in range(1000)]


def test_adversarial_mix_with_uneven_halves_leaves_no_item_out():
    lengths = np.concatenate([adversarial_lengths(1500, 512), np.full(700, 255), np.full(300, 7)])
    bins = best_fit_decreasing(lengths, 512)
    assert bins == reference_bfd(lengths.tolist(), 512)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
