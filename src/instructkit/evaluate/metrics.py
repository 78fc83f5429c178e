"""Scores on a 0-100 scale: accuracy, exact match, token F1, AUC-ROC, pass@k, bootstrap intervals, and
Flan 2022's normalized score, 100 × (score − random) / (100 − random), with its macro average; a paired
sign-flip test says whether two models' scores on the same rows differ by more than chance."""

from __future__ import annotations

import math
import random
import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and English articles, squeeze spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(r) for r in references))


def token_f1(prediction: str, references: Sequence[str]) -> float:
    """SQuAD token-overlap F1 against the best-matching reference."""
    return max(
        (_f1(normalize_answer(prediction).split(), normalize_answer(r).split()) for r in references),
        default=0.0,
    )


def _f1(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean (nan for an empty list)."""
    return sum(values) / len(values) if values else float("nan")


def auc_roc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (probability a positive outranks a negative; ties count half)."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return float("nan")
    ranked = sorted(scores)
    # rank-sum (Mann–Whitney U) with average ranks for ties
    rank: dict[float, float] = {}
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1] == ranked[i]:
            j += 1
        rank[ranked[i]] = (i + j) / 2 + 1
        i = j + 1
    u = sum(rank[s] for s in pos) - len(pos) * (len(pos) + 1) / 2
    return u / (len(pos) * len(neg))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def bootstrap_ci(
    values: Sequence[float], resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-example values."""
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    lo = int(((1 - level) / 2) * resamples)
    return means[lo], means[min(resamples - 1, resamples - 1 - lo)]


def random_baseline(num_choices: int | None) -> float:
    """Chance accuracy in percent for k-way choice; 0 for open answers."""
    return 100.0 / num_choices if num_choices else 0.0


def normalized_score(score: float, random: float) -> float:
    """100 × (score − random) / (100 − random): chance maps to 0, perfect to 100."""
    return 100.0 * (score - random) / (100.0 - random) if random < 100 else float("nan")


def macro_average(values: Sequence[float]) -> float:
    """Mean over groups, ignoring nan entries."""
    return mean([v for v in values if not math.isnan(v)])


def stratified_bootstrap(
    groups: Sequence[Sequence[float]],
    coefs: Sequence[float],
    resamples: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """Resampled values of Σ_g coefs[g] · mean(groups[g]), rows redrawn within each group.

    A macro average over tasks is such a sum; drawing rows within each task keeps every task in
    every resample, as the evaluation itself does. Pass per-row differences to get a paired bootstrap.
    """
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    for values, coef in zip(groups, coefs):
        arr = np.asarray(values, dtype=float)
        if len(arr):
            total += coef * arr[rng.integers(0, len(arr), size=(resamples, len(arr)))].mean(axis=1)
    return total


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap samples."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


EXACT_FLIPS = 16  # enumerate all 2^k sign patterns up to this many non-zero differences


def sign_flip_test(
    differences: Sequence[Sequence[float]],
    coefs: Sequence[float] | None = None,
    resamples: int = 20000,
    seed: int = 0,
) -> float:
    """Two-sided p-value of a paired permutation test on Σ_g coefs[g] · mean(differences[g]).

    Under "no difference", each row's two scores are exchangeable, so each per-row difference is as
    likely negated. Exact (all 2^k flips) for few non-zero rows; otherwise `resamples` random flips,
    p = (1 + hits) / (1 + resamples). For 0/1 scores in one task this is the exact McNemar test.
    """
    coefs = [1.0] * len(differences) if coefs is None else coefs
    terms = np.concatenate(
        [np.asarray(d, dtype=float) * c / len(d) for d, c in zip(differences, coefs) if len(d)] or [[]]
    )
    terms = terms[np.abs(terms) > 1e-12]
    if len(terms) == 0:
        return 1.0
    observed = abs(terms.sum()) - 1e-9 * np.abs(terms).sum()  # ties with the observed value count as hits
    if len(terms) <= EXACT_FLIPS:
        signs = 1 - 2 * ((np.arange(2 ** len(terms))[:, None] >> np.arange(len(terms))) & 1)
        return float(np.mean(np.abs(signs @ terms) >= observed))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, resamples, 2000):
        signs = rng.choice([-1.0, 1.0], size=(min(2000, resamples - start), len(terms)))
        hits += int(np.sum(np.abs(signs @ terms) >= observed))
    return (1 + hits) / (1 + resamples)
