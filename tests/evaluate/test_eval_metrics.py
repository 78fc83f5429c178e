"""Metrics and answer extraction: known values plus properties against brute-force definitions."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instructkit.evaluate import extract, metrics


def test_exact_match_and_f1_follow_squad():
    assert metrics.exact_match("The Market!", ["market"]) == 1.0
    assert metrics.exact_match("a market", ["the store"]) == 0.0
    assert metrics.token_f1("the big red market", ["red market"]) == pytest.approx(0.8)
    assert metrics.token_f1("", ["x"]) == 0.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=12))
def test_auc_roc_equals_pairwise_probability(pairs):
    scores, labels = [float(s) for s, _ in pairs], [int(y) for _, y in pairs]
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    got = metrics.auc_roc(scores, labels)
    if not pos or not neg:
        assert math.isnan(got)
        return
    brute = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert got == pytest.approx(brute)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.data())
def test_pass_at_k_equals_subset_enumeration(n, data):
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    subsets = list(itertools.combinations([1] * c + [0] * (n - c), k))
    assert metrics.pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


@settings(max_examples=40, deadline=None)
@given(st.floats(0, 100), st.sampled_from([0.0, 20.0, 25.0, 50.0]))
def test_normalized_score_maps_random_to_zero_and_perfect_to_100(score, random):
    assert metrics.normalized_score(random, random) == pytest.approx(0.0)
    assert metrics.normalized_score(100.0, random) == pytest.approx(100.0)
    assert (metrics.normalized_score(score, random) > 0) == (score > random)


def test_bootstrap_interval_brackets_mean_and_macro_average_skips_nan():
    values = [0.0, 100.0] * 50
    low, high = metrics.bootstrap_ci(values, resamples=300)
    assert low < 50.0 < high
    assert metrics.bootstrap_ci([1.0] * 10) == (1.0, 1.0)
    assert metrics.macro_average([10.0, math.nan, 30.0]) == 20.0
    assert metrics.random_baseline(4) == 25.0


@pytest.mark.parametrize(
    ("fn", "text", "expected"),
    [
        (extract.answer_is, "Let's think. So the answer is (B).", "(B)"),
        (extract.answer_is, "valid\nmore", "valid"),
        (extract.last_number, "She has 3 apples, then $1,200.00 total.", "1200"),
        (extract.last_number, "no digits", ""),
        (extract.answer_is_number, "5 + 6 = 11. The answer is 11. Then 12", "11"),
        (extract.option_letter, "I think (C) is right", "C"),
        (extract.option_letter, "B) because", "B"),
        (extract.option_letter, "so the answer is (E).", "E"),
        (extract.first_line, "\n  Paris \nFrance", "Paris"),
    ],
)
def test_extractors(fn, text, expected):
    assert fn(text) == expected
