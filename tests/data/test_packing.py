"""Packing: no example lost or duplicated, capacity never exceeded, deterministic, near the lower bound."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from instructkit.data.packing import best_fit_decreasing, pack_table

lengths_strategy = st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=300)


@settings(max_examples=150, deadline=None)
@given(lengths=lengths_strategy, capacity=st.integers(min_value=64, max_value=200))
def test_bins_cover_every_item_once_within_capacity(lengths, capacity):
    bins = best_fit_decreasing(lengths, capacity)
    flat = sorted(i for b in bins for i in b)
    assert flat == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
    assert bins == best_fit_decreasing(lengths, capacity)


def optimal_bins(lengths: list[int], capacity: int) -> int:
    """The fewest bins that hold `lengths` (exhaustive search; small inputs only)."""
    items = sorted(lengths, reverse=True)
    best = len(items)

    def place(k: int, rooms: list[int]) -> None:
        nonlocal best
        if len(rooms) >= best:
            return
        if k == len(items):
            best = len(rooms)
            return
        tried = set()
        for b, room in enumerate(rooms):
            if room >= items[k] and room not in tried:
                tried.add(room)
                rooms[b] -= items[k]
                place(k + 1, rooms)
                rooms[b] += items[k]
        place(k + 1, [*rooms, capacity - items[k]])

    place(0, [])
    return best


@settings(max_examples=100, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=11),
    capacity=st.integers(min_value=64, max_value=200),
)
def test_best_fit_decreasing_is_within_its_worst_case_bound_of_optimal(lengths, capacity):
    """BFD uses at most 11/9·OPT + 6/9 bins (Johnson; Dósa 2007), OPT found by exhaustive search."""
    bins = best_fit_decreasing(lengths, capacity)
    assert len(bins) <= 11 / 9 * optimal_bins(lengths, capacity) + 6 / 9 + 1e-9


@settings(max_examples=100, deadline=None)
@given(lengths=lengths_strategy, capacity=st.integers(min_value=64, max_value=200))
def test_best_fit_never_leaves_two_bins_half_empty(lengths, capacity):
    """Any-fit packing never opens a bin while another is half empty, so bins < 2·sum/capacity + 1."""
    bins = best_fit_decreasing(lengths, capacity)
    loads = sorted(sum(lengths[i] for i in b) for b in bins)
    assert len(loads) < 2 or loads[0] + loads[1] > capacity
    assert len(bins) < 2 * sum(lengths) / capacity + 1


def test_best_fit_chooses_the_fullest_bin_that_fits():
    # 6 → bin A (room 4), 5 → bin B (room 5), 4 → must go to A (room 4 exact), not B.
    assert best_fit_decreasing([6, 5, 4], 10) == [[0, 2], [1]]


def test_oversized_item_is_refused():
    try:
        best_fit_decreasing([5, 11], 10)
    except ValueError as exc:
        assert "exceeds" in str(exc)
    else:
        raise AssertionError("expected a ValueError")


def _table(rows: list[list[int]]) -> pa.Table:
    return pa.table({"input_ids": rows, "labels": [[t + 1000 for t in r] for r in rows]})


@settings(max_examples=80, deadline=None)
@given(lengths=lengths_strategy, capacity=st.integers(min_value=64, max_value=256))
def test_pack_table_keeps_tokens_positions_and_masks_first_labels(lengths, capacity):
    rng = np.random.default_rng(len(lengths))
    rows = [rng.integers(0, 500, size=n).tolist() for n in lengths]
    packed, stats = pack_table(_table(rows), capacity)
    seen = []
    for row in packed.to_pylist():
        assert len(row["input_ids"]) == sum(row["seq_lens"]) <= capacity
        offset = 0
        for ex_id, n in zip(row["example_ids"], row["seq_lens"]):
            assert row["input_ids"][offset : offset + n] == rows[ex_id]
            assert row["position_ids"][offset : offset + n] == list(range(n))
            assert row["labels"][offset] == -100
            assert row["labels"][offset + 1 : offset + n] == [t + 1000 for t in rows[ex_id][1:]]
            offset += n
            seen.append(ex_id)
    assert sorted(seen) == list(range(len(rows)))
    assert stats.tokens == sum(lengths) and stats.packs == packed.num_rows
    assert packed.equals(pack_table(_table(rows), capacity)[0])


def test_efficiency_is_near_the_lower_bound_on_heavy_tailed_lengths():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(mean=5.5, sigma=0.8, size=20000).astype(int), 8, 2048)
    bins = best_fit_decreasing(lengths, 2048)
    lower = -(-int(lengths.sum()) // 2048)
    assert len(bins) <= lower * 1.002 + 1
