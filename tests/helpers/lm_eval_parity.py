"""Comparing lm-eval outputs (instructkit's LM vs lm-eval's `hf` model): log-likelihoods within 1e-4,
strings and bools equal, containers element by element."""

from __future__ import annotations

import math
from typing import Any

LOGLIK_TOL = 1e-4
# HFLM sums float32 log-probs: over hundreds of tokens its own rounding reaches ~1e-4 of a sum near 700.
LOGLIK_REL = 1e-6


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=LOGLIK_REL, abs_tol=LOGLIK_TOL)


def same_value(a: Any, b: Any, where: str) -> None:
    """Strings and bools equal; numbers within tolerance; containers element by element."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), f"{where}: {sorted(a)} vs {b!r}"
        for key in a:
            same_value(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            same_value(x, y, f"{where}[{i}]")
    elif isinstance(a, (str, bool)) or a is None:
        assert a == b, f"{where}: {a!r} vs {b!r}"
    else:
        assert close(float(a), float(b)), f"{where}: {a!r} vs {b!r}"
