"""Packing time as the dataset grows, on an adversarial length mix and on a heavy-tailed one.

Run: `python benchmarks/bench_packing.py` (no extras needed). Writes results/packing.md.
The adversarial mix (half the items L/2 + 1 tokens, half L/2 − 1) puts n/2 bins in one bucket of
equal room; a `pop(0)` there made packing quadratic (44 s at 1.6M items). Linear growth means the
time doubles when n doubles; `BENCH_PACKING_MAX` lowers the largest n for a quick run.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, timed, write_section  # noqa: E402
from instructkit.data.packing import best_fit_decreasing  # noqa: E402

CAPACITY = 4096
MAX_N = int(os.environ.get("BENCH_PACKING_MAX", "1600000"))
SIZES = [n for n in (200_000, 400_000, 800_000, 1_600_000) if n <= MAX_N]


def adversarial(n: int) -> np.ndarray:
    """Every long item opens a bin with the same room, so one bucket holds n/2 bins."""
    half = n // 2
    return np.concatenate([np.full(half, CAPACITY // 2 + 1), np.full(n - half, CAPACITY // 2 - 1)])


def heavy_tailed(n: int) -> np.ndarray:
    """Lognormal lengths (median ≈ 245 tokens), clipped to [8, L]: a realistic SFT mix."""
    rng = np.random.default_rng(0)
    return np.clip(rng.lognormal(5.5, 0.8, size=n).astype(np.int64), 8, CAPACITY)


def measure(make, sizes: list[int]) -> list[dict]:
    """Best of 3 wall times of `best_fit_decreasing` per size."""
    rows = []
    for n in sizes:
        lengths = make(n)
        bins, seconds = timed(lambda lengths=lengths: best_fit_decreasing(lengths, CAPACITY), repeat=3)
        rows.append({"n": n, "seconds": seconds, "bins": len(bins)})
    return rows


def render(r: dict) -> str:
    lines = [
        "## Packing scaling (issue: Trust, limits on untrusted work)",
        "",
        f"`python benchmarks/bench_packing.py` — `best_fit_decreasing` at L = {CAPACITY}, best of 3; "
        f"{r['machine']}. Linear growth: ×2 items → ×2 time.",
        "",
        "| mix | items | bins | time | µs / item | time vs previous row |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mix in ("adversarial", "heavy_tailed"):
        previous = None
        for row in r[mix]:
            ratio = f"{row['seconds'] / previous:.2f}×" if previous else "–"
            lines.append(
                f"| {mix.replace('_', '-')} | {row['n']:,} | {row['bins']:,} | {row['seconds']:.2f} s | "
                f"{row['seconds'] / row['n'] * 1e6:.2f} | {ratio} |"
            )
            previous = row["seconds"]
    return "\n".join(lines)


def main() -> None:
    results = {
        "machine": machine(),
        "capacity": CAPACITY,
        "adversarial": measure(adversarial, SIZES),
        "heavy_tailed": measure(heavy_tailed, SIZES),
    }
    write_section("packing", render(results), results)


if __name__ == "__main__":
    main()
