"""Sweeps: a recipe run once per variant (each a cached run of its own), then one chart per metric."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import charts
from ..atomic import write_atomic
from ..jsonl import read_records
from .recipe import Recipe, sweep_recipes
from .runner import build_pipeline
from .stage import STAGE_FILE


def run_sweep(
    recipe: Recipe, path: Path, log: Callable[[str], None] = print, dry_run: bool = False
) -> Path | None:
    """Run every variant, then write `runs/<name>/sweep.md` and a PNG per metric."""
    arms = sweep_recipes(recipe, path)
    for label, arm in arms:
        log(f"== variant {label}")
        pipeline = build_pipeline(arm)
        if dry_run:
            for row in pipeline.plan():
                why = f" — {row.why}" if row.why else ""
                log(f"   {row.stage:<11} {row.status:<7} {row.estimate}{why}")
        else:
            pipeline.run(log=log)
    if dry_run:
        return None
    root = Path(recipe.runs_dir) / recipe.name
    values = {label: {m: metric_value(root / label, m) for m in recipe.sweep.metrics} for label, _ in arms}
    return write_sweep_report(recipe, root, values)


def metric_value(run_root: Path, metric: str) -> float | None:
    """`eval:<set>/<k>-shot` (tuned model, normalized) or `train:<field>` from a finished run."""
    kind, _, key = metric.partition(":")
    if kind == "eval":
        results = json.loads((run_root / "eval-tuned" / "results.json").read_text())
        group = results.get("clusters", {}).get(key)
        return None if group is None else group["normalized"]
    if kind == "train":
        record = json.loads((run_root / "train" / STAGE_FILE).read_text())
        if key == "seconds":
            return record["seconds"]
        value = record["summary"].get(key)
        if value is None and key == "tokens_per_second":
            return _mean_tokens_per_second(run_root / "train" / "metrics.jsonl")
        return value
    raise ValueError(f"unknown sweep metric {metric!r}: use eval:<set>/<k>-shot or train:<field>")


def _mean_tokens_per_second(path: Path) -> float | None:
    rows = read_records(path)
    speeds = [r["trained_tokens_per_second"] for r in rows if "trained_tokens_per_second" in r]
    return sum(speeds) / len(speeds) if speeds else None


def write_sweep_report(recipe: Recipe, root: Path, values: dict[str, dict[str, Any]]) -> Path:
    """A table of every metric per variant and one bar chart per metric."""
    metrics = recipe.sweep.metrics
    lines = [
        f"# Sweep: {recipe.name}",
        "",
        recipe.description.strip(),
        "",
        "| " + recipe.sweep.x_label + " | " + " | ".join(metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    for label, row in values.items():
        lines.append(f"| {label} | " + " | ".join(_fmt(row[m]) for m in metrics) + " |")
    lines.append("")
    for m in metrics:
        name = "sweep_" + "".join(c if c.isalnum() else "_" for c in m) + ".png"
        bars = charts.Series("", [row[m] for row in values.values()])
        charts.bars(root / name, list(values), [bars], title=m, xlabel=recipe.sweep.x_label, ylabel=m)
        lines.append(f"![{m}]({name})")
    path = root / "sweep.md"
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
