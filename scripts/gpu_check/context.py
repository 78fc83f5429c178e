"""What a section gets (`Ctx`) and how a case is recorded: checks, skips, tracebacks, saved after each case."""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Sizes


class Skip(Exception):
    """Raised by a case that cannot run here (the reason is recorded, e.g. 'skipped: no CUDA')."""


def check(name: str, value: float | bool | None, limit: Any, op: str = "<=") -> dict:
    """One pass/fail comparison as it is recorded: value op limit."""
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "<=": lambda v, lim: v <= lim,
        ">=": lambda v, lim: v >= lim,
        ">": lambda v, lim: v > lim,
        "==": lambda v, lim: v == lim,
    }
    ok = value is not None and not (isinstance(value, float) and math.isnan(value)) and ops[op](value, limit)
    return {"name": name, "value": value, "op": op, "limit": limit, "ok": bool(ok)}


@dataclass
class Ctx:
    """What a section gets: device, sizes, scratch folder, deadline, and its result record (saved often)."""

    device: str
    sizes: Sizes
    work: Path
    result_path: Path
    deadline: float
    budget: float
    options: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        """Write the record atomically, so a section killed at its deadline still leaves its finished cases."""
        write_json(self.result_path, self.record)

    def case(self, name: str, fn: Callable[..., dict], *args: Any) -> dict:
        """Run one case in isolation: its metrics and checks, or why it was skipped, or its traceback."""
        entry: dict[str, Any] = {"case": name, "status": "running"}
        self.record.setdefault("cases", []).append(entry)
        if self.time_left() < max(5.0, 0.1 * self.budget):
            entry.update(status="skipped", reason="skipped: section time budget exhausted")
            self.save()
            return entry
        self.save()
        start = time.monotonic()
        try:
            entry.update(fn(*args))
            failed = [c for c in entry.get("checks", []) if not c["ok"]]
            entry["status"] = "failed" if failed else "passed"
        except Skip as exc:
            entry.update(status="skipped", reason=str(exc))
        except Exception:
            entry.update(status="error", traceback=traceback.format_exc(limit=12))
        finally:
            entry["seconds"] = round(time.monotonic() - start, 2)
            _release_memory()
            self.save()
        return entry


def _release_memory() -> None:
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def no_cuda_skip(ctx: Ctx, what: str) -> None:
    """Skip a CUDA-only case in CPU mode, saying so."""
    if not ctx.cuda:
        raise Skip(f"skipped: no CUDA ({what})")
