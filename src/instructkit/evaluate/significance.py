"""What is noise: 95% intervals of task scores and their macro averages, bootstrapped over the rows in
samples/<task>.jsonl, and paired tests of B − A over the same rows. A difference is called significant
only when the paired test gives p < ALPHA, and its interval comes from the same test (the shifts it
does not reject), so an interval excludes 0 exactly when the difference is called significant.

Every aggregate the reports show (a task's score, a group's or eval set's normalized macro average,
the normalized average) is linear in the per-row scores x (0–100) of its tasks:
Σ_t coef_t · mean_t(x) + offset. So one stratified bootstrap and one sign-flip test serve them all.
Many per-task tests are corrected with Holm's method (`holm`), so one lucky row cannot be cherry-picked.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..jsonl import read_records
from .metrics import EXACT_FLIPS, percentile_interval, sign_flip_test, stratified_bootstrap

ALPHA = 0.05
RESAMPLES = 2000
FLIPS = 10000  # random sign patterns for the test-inversion interval (all 2^n up to EXACT_FLIPS rows)
GRID = 64  # shifts scanned on each side before the boundary is refined by bisection
NAN = float("nan")


@dataclass(frozen=True)
class Estimate:
    """A score and its 95% bootstrap interval (nan bounds when the rows are not available)."""

    value: float
    low: float = NAN
    high: float = NAN


@dataclass(frozen=True)
class Difference:
    """B − A with its 95% interval and the paired test's p-value (None when the rows do not pair).

    When the rows pair, the interval is the set of shifts the paired test does not reject, so it
    excludes 0 exactly when `significant`; otherwise it is a bootstrap interval and nothing is tested.
    `holm_p` is the Holm-adjusted p-value when the test is one of a family (e.g. one per task)."""

    delta: float
    low: float = NAN
    high: float = NAN
    p: float | None = None
    rows: int = 0  # rows paired
    note: str = ""  # why there is no test
    holm_p: float | None = None
    family: int = 0  # how many tests the Holm correction covered

    @property
    def significant(self) -> bool:
        """True only when a paired test on the same rows gives p < ALPHA."""
        return self.p is not None and self.p < ALPHA

    @property
    def survives(self) -> bool:
        """True when the test survives Holm's correction over its family (or is not in one and
        is significant on its own)."""
        return self.holm_p < ALPHA if self.holm_p is not None else self.significant

    def verdict(self) -> str:
        """'significant', 'not significant' or 'not tested' (the word every report uses)."""
        if self.p is None:
            return "not tested"
        return "significant" if self.significant else "not significant"


def member_weights(results: dict[str, Any], key: str, value: str) -> dict[str, float]:
    """Equal weights on the tasks whose `key` (group or cluster) is `value`: their macro average."""
    members = [t for t, s in results.get("tasks", {}).items() if s.get(key) == value]
    return {t: 1.0 / len(members) for t in members}


def average_weights(results: dict[str, Any]) -> dict[str, float]:
    """Weights of the normalized average: a macro average over groups of macro averages over tasks."""
    groups = sorted(results.get("groups", {}))
    weights: dict[str, float] = {}
    for group in groups:
        for task, w in member_weights(results, "group", group).items():
            weights[task] = w / len(groups)
    return weights


def estimate(results: dict[str, Any], weights: dict[str, float], value: float, normalized: bool) -> Estimate:
    """`value` (as results.json has it) with a stratified bootstrap interval over the tasks' rows."""
    terms = _terms(results, weights, normalized)
    if terms is None:
        return Estimate(value)
    rows, coefs, offset = terms
    low, high = percentile_interval(stratified_bootstrap(rows, coefs, RESAMPLES) + offset)
    return Estimate(value, low, high)


def difference(
    run_a: dict[str, Any], run_b: dict[str, Any], weights: dict[str, float], delta: float, normalized: bool
) -> Difference:
    """B − A over the weighted tasks: paired interval and sign-flip test when every task has the same
    row ids in both runs; otherwise an unpaired interval and no test (the rows differ)."""
    rows_a = {t: task_rows(run_a, t) for t in weights}
    rows_b = {t: task_rows(run_b, t) for t in weights}
    if any(rows_a[t] is None or rows_b[t] is None for t in weights) or not weights:
        return Difference(delta, note="no per-row scores that average to the score (no samples/, or pass@k)")
    coefs = [w * _scale(run_a, t, normalized) for t, w in weights.items()]
    if any(set(rows_a[t]) != set(rows_b[t]) for t in weights):
        boot_a = stratified_bootstrap([list(rows_a[t].values()) for t in weights], coefs, RESAMPLES, seed=1)
        boot_b = stratified_bootstrap([list(rows_b[t].values()) for t in weights], coefs, RESAMPLES, seed=2)
        low, high = percentile_interval(boot_b - boot_a)
        return Difference(delta, low, high, note="the runs scored different rows, so they cannot be paired")
    diffs = [[rows_b[t][i] - rows_a[t][i] for i in sorted(rows_a[t])] for t in weights]
    p = sign_flip_test(diffs, coefs)
    low, high = inverted_interval(diffs, coefs, p)
    return Difference(delta, low, high, p, sum(len(d) for d in diffs))


def inverted_interval(
    diffs: list[list[float]], coefs: list[float], p_zero: float, seed: int = 0
) -> tuple[float, float]:
    """95% interval of Σ coef · mean(diff) by inverting the paired sign-flip test: the shifts δ for
    which the rows' differences minus δ (spread evenly over the coefficients) are not rejected at
    ALPHA. Same test, same verdict: 0 is inside exactly when `p_zero` (the test at δ = 0) ≥ ALPHA.
    Bounded by the largest difference the scores allow (±100 points per row)."""
    weights = np.concatenate([np.full(len(d), c / len(d)) for d, c in zip(diffs, coefs) if len(d)])
    values = np.concatenate([np.asarray(d, dtype=float) for d in diffs if len(d)])
    total, observed = float(weights.sum()), float(weights @ values)
    flipped_values, flipped_weights = _flips(weights, values, seed)
    exact = len(values) <= EXACT_FLIPS

    def accepted(delta: float) -> bool:
        shift = delta / total
        stat = abs(observed - delta) - 1e-9 * float(np.abs(weights * (values - shift)).sum())
        hits = int(np.sum(np.abs(flipped_values - shift * flipped_weights) >= stat))
        p = hits / len(flipped_values) if exact else (1 + hits) / (1 + len(flipped_values))
        return p >= ALPHA

    limit = 100.0 * abs(total)
    low = _boundary(accepted, observed, -limit)
    high = _boundary(accepted, observed, limit)
    if p_zero >= ALPHA:  # at 0 the exact test decides, where the sampled flips could disagree
        return min(low, 0.0), max(high, 0.0)
    return (max(low, 0.0), high) if observed > 0 else (low, min(high, 0.0))


def _flips(weights: np.ndarray, values: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Σ s·w·x and Σ s·w over sign patterns s: all 2^n of them for few rows, else FLIPS random ones."""
    n = len(values)
    if n <= EXACT_FLIPS:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        return signs @ (weights * values), signs @ weights
    rng = np.random.default_rng(seed)
    parts = []
    for start in range(0, FLIPS, 2000):
        bits = rng.integers(0, 2, size=(min(2000, FLIPS - start), n), dtype=np.int8)
        signs = 1.0 - 2.0 * bits
        parts.append((signs @ (weights * values), signs @ weights))
    return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])


def _boundary(accepted, start: float, limit: float) -> float:
    """The farthest shift from `start` towards `limit` that is accepted: the last accepted point of a
    grid, refined by bisection against the next rejected one (`limit` when all are accepted)."""
    grid = np.linspace(start, limit, GRID + 1)
    flags = [accepted(float(x)) for x in grid]
    if flags[-1]:
        return float(limit)
    last = max(i for i, ok in enumerate(flags) if ok)
    inside, outside = float(grid[last]), float(grid[last + 1])
    for _ in range(30):
        middle = (inside + outside) / 2
        inside, outside = (middle, outside) if accepted(middle) else (inside, middle)
    return inside


def holm(ps: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values for a family of tests (None: not tested, not counted).
    A test survives the correction when its adjusted p < ALPHA; the family-wise error stays ≤ ALPHA."""
    tested = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    adjusted: list[float | None] = [None] * len(ps)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def with_holm(diffs: list[Difference | None]) -> list[Difference | None]:
    """The differences with their Holm-adjusted p-values over the tested ones (the family)."""
    adjusted = holm([d.p if d is not None else None for d in diffs])
    family = sum(p is not None for p in adjusted)
    return [
        None if d is None else dataclasses.replace(d, holm_p=q, family=family if q is not None else 0)
        for d, q in zip(diffs, adjusted)
    ]


def task_rows(results: dict[str, Any], task: str) -> dict[str, float] | None:
    """Per-row scores (0–100, the task's metric) by row id from samples/, or None when they are missing
    or do not reproduce the task's score (e.g. pass@k or AUC, which are not means over rows)."""
    summary = results.get("tasks", {}).get(task)
    if summary is None or "_dir" not in results:
        return None
    path = Path(results["_dir"]) / "samples" / (task.replace("/", "__") + ".jsonl")
    if not path.is_file():
        return None
    metric = summary["metric"]
    records = read_records(path)
    rows = {str(r["id"]): 100 * float(r[metric]) for r in records if metric in r}
    if (
        not rows
        or len(rows) != len(records)
        or not math.isclose(float(np.mean(list(rows.values()))), summary["score"], abs_tol=1e-6)
    ):
        return None
    return rows


def _terms(
    results: dict[str, Any], weights: dict[str, float], normalized: bool
) -> tuple[list[list[float]], list[float], float] | None:
    """Rows, coefficients and offset with aggregate = Σ coef · mean(rows) + offset; None if rows miss."""
    rows, coefs, offset = [], [], 0.0
    for task, w in weights.items():
        found = task_rows(results, task)
        if found is None:
            return None
        scale = _scale(results, task, normalized)
        rows.append(list(found.values()))
        coefs.append(w * scale)
        offset -= w * scale * results["tasks"][task]["random_baseline"] if normalized else 0.0
    return (rows, coefs, offset) if rows else None


def _scale(results: dict[str, Any], task: str, normalized: bool) -> float:
    """d normalized / d score: 100 / (100 − random) (see metrics.normalized_score), or 1 for raw."""
    return 100.0 / (100.0 - results["tasks"][task]["random_baseline"]) if normalized else 1.0


def format_p(p: float | None) -> str:
    """p-value as the reports print it: p<0.001, p=0.012 (p=0.0502 next to ALPHA), or – without a test."""
    if p is None:
        return "–"
    if p < 0.001:
        return "p<0.001"
    return f"p={p:.4f}" if round(p, 3) == ALPHA else f"p={p:.3f}"  # 0.0502 must not read as 0.050


def sentence(diff: Difference, before: float, after: float, unit: str) -> str:
    """What B − A did, for a sentence that starts with the set's name; 'significant' only when the
    paired test says so."""
    span = f"({_num(before)} → {_num(after)})"
    ci = f"95% CI of the difference [{_num(diff.low)}, {_num(diff.high)}]"
    if diff.p is None:
        return f"changed by {_signed(diff.delta)} {unit} {span}; not tested for significance: {diff.note}."
    if not diff.significant:
        return (
            f"changed by {_signed(diff.delta)} {unit} {span}, which is not significant "
            f"({format_p(diff.p)}; {ci})."
        )
    direction = "improved" if diff.delta > 0 else "got worse"
    return f"{direction} by {abs(diff.delta):.1f} {unit} {span}: significant ({format_p(diff.p)}; {ci})."


def fmt_estimate(e: Estimate | None) -> str:
    """'12.3 [4.5, 20.1]', '12.3' without an interval, or '–'."""
    if e is None:
        return "–"
    return _num(e.value) + ("" if math.isnan(e.low) else f" [{_num(e.low)}, {_num(e.high)}]")


def fmt_diff(d: Difference | None) -> str:
    """'+8.3 [-4.2, 20.8]' (the interval is paired when the rows pair), or '–'."""
    if d is None:
        return "–"
    return _signed(d.delta) + ("" if math.isnan(d.low) else f" [{_num(d.low)}, {_num(d.high)}]")


def fmt_test(d: Difference | None) -> str:
    """'significant (p=0.012)', 'not significant (p=0.210)', or 'not tested: why'."""
    if d is None:
        return "–"
    if d.p is None:
        return f"not tested: {d.note}" if d.note else "not tested"
    return f"{d.verdict()} ({format_p(d.p)})"


def fmt_holm(d: Difference | None) -> str:
    """'survives (adj. p=0.012)', 'does not survive (adj. p=0.210)', or '–' outside a family."""
    if d is None or d.holm_p is None:
        return "–"
    word = "survives" if d.survives else "does not survive"
    return f"{word} (adj. {format_p(d.holm_p)})"


def family_note(diffs: list[Difference | None], what: str = "per-task") -> str:
    """How many tests a table ran, how many are significant alone and how many after Holm."""
    tested = [d for d in diffs if d is not None and d.p is not None]
    alone = sum(d.significant for d in tested)
    kept = sum(d.survives for d in tested)
    return (
        f"{len(tested)} {what} paired tests were run: {alone} significant on their own (p < {ALPHA}), "
        f"{kept} after Holm's correction for {len(tested)} tests. Only those that survive the "
        "correction are coloured; with many tests, some rows look significant by chance alone."
    )


def mark(d: Difference | None) -> str:
    """The row mark the HTML colours: 'up' / 'down' for a significant difference (after Holm's
    correction when the difference is one of a family), else ''."""
    return ("up" if d.delta > 0 else "down") if d is not None and d.survives else ""


def _num(value: float | None) -> str:
    """One decimal; '0.0', never '-0.0', for a bound that sits at zero."""
    if value is None or math.isnan(value):
        return "–"
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def _signed(value: float) -> str:
    """'+8.3', '-4.2', and '+0.0' for a change that rounds to zero (never '-0.0')."""
    text = f"{value:+.1f}"
    return "+0.0" if text == "-0.0" else text
