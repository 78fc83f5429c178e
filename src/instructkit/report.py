"""The run report: loss curve, base vs tuned per eval set and task, normalized averages, in Markdown + PNG.

The text says plainly what improved and what did not; the numbers are whatever the run measured.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

SECTIONS = (
    "Summary",
    "Training",
    "Evaluation by set",
    "Evaluation by task",
    "What improved and what did not",
)
IMPROVED_MARGIN = 2.0  # normalized points; smaller differences are reported as unchanged


def write_run_report(recipe, inputs: dict[str, Path], out: Path) -> Path:
    """Write report.md and charts into `out` (and a copy of report.md at the run root)."""
    tuned = _results(inputs["eval-tuned"])
    base = _results(inputs["eval-base"]) if "eval-base" in inputs else None
    losses = _losses(inputs["train"] / "metrics.jsonl")
    charts = _charts(out, losses, base, tuned)
    text = render_report(recipe.name, recipe.description, losses, base, tuned, charts)
    path = out / "report.md"
    path.write_text(text, encoding="utf-8")
    (out.parent / "report.md").write_text(text.replace("](", "](report/"), encoding="utf-8")
    return path


def _results(stage_dir: Path) -> dict[str, Any]:
    return json.loads((stage_dir / "results.json").read_text())


def _losses(path: Path) -> list[tuple[int, float]]:
    if not path.is_file():
        return []
    points = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if "loss" in row and "step" in row:
            points.append((int(row["step"]), float(row["loss"])))
    return points


def set_scores(results: dict[str, Any]) -> dict[str, float]:
    """Mean normalized score per eval set and shot count (the `cluster` key the pipeline sets)."""
    return {name: g["normalized"] for name, g in sorted(results.get("clusters", {}).items())}


def task_scores(results: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """Each task's preferred metric value and name."""
    out = {}
    for name, t in sorted(results.get("tasks", {}).items()):
        out[name] = (t["score"], t["metric"])
    return out


def render_report(name: str, description: str, losses, base, tuned, charts: dict[str, str]) -> str:
    lines = [f"# Run report: {name}", "", description.strip(), "", "## Summary", ""]
    tuned_sets = set_scores(tuned)
    base_sets = set_scores(base) if base else {}
    lines.append(
        f"- Normalized average, tuned: **{_fmt(tuned.get('normalized_average'))}**"
        + (f" (base: {_fmt(base.get('normalized_average'))})" if base else "")
    )
    if losses:
        lines.append(
            f"- Training loss: {losses[0][1]:.3f} at step {losses[0][0]} → {losses[-1][1]:.3f} at step {losses[-1][0]}"
        )
    lines += ["", "## Training", ""]
    lines += [f"![loss curve]({charts['loss']})" if "loss" in charts else "No loss was logged.", ""]
    lines += [
        "## Evaluation by set",
        "",
        "Normalized score: 100 × (score − random) / (100 − random), averaged over tasks; 0 is chance.",
        "",
        "| eval set | base | tuned | Δ |",
        "|---|---:|---:|---:|",
    ]
    for key, value in tuned_sets.items():
        b = base_sets.get(key)
        lines.append(
            f"| {key} | {_fmt(b)} | {_fmt(value)} | {_fmt(None if b is None else value - b, sign=True)} |"
        )
    if "sets" in charts:
        lines += ["", f"![normalized averages]({charts['sets']})"]
    lines += ["", "## Evaluation by task", "", "| task | metric | base | tuned |", "|---|---|---:|---:|"]
    base_tasks = task_scores(base) if base else {}
    for task, (score, metric) in task_scores(tuned).items():
        b = base_tasks.get(task, (None, metric))[0]
        lines.append(f"| {task} | {metric} | {_fmt(b)} | {_fmt(score)} |")
    if "tasks" in charts:
        lines += ["", f"![per task]({charts['tasks']})"]
    lines += ["", "## What improved and what did not", ""]
    lines += (
        verdicts(base_sets, tuned_sets) if base else ["No base model was evaluated, so nothing is compared."]
    )
    return "\n".join(lines).rstrip() + "\n"


def verdicts(base_sets: dict[str, float], tuned_sets: dict[str, float]) -> list[str]:
    """One plain sentence per eval set: improved, got worse, or unchanged (within the margin)."""
    out = []
    for key, tuned in tuned_sets.items():
        base = base_sets.get(key)
        if base is None:
            continue
        delta = tuned - base
        if delta >= IMPROVED_MARGIN:
            out.append(f"- **{key}** improved by {delta:.1f} normalized points ({base:.1f} → {tuned:.1f}).")
        elif delta <= -IMPROVED_MARGIN:
            out.append(f"- **{key}** got worse by {-delta:.1f} normalized points ({base:.1f} → {tuned:.1f}).")
        else:
            out.append(
                f"- **{key}** did not change beyond {IMPROVED_MARGIN:.0f} points ({base:.1f} → {tuned:.1f})."
            )
    return out


def _fmt(value, sign: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.1f}" if sign else f"{value:.1f}"


def _charts(out: Path, losses, base, tuned) -> dict[str, str]:
    """PNG charts: loss curve, normalized score per eval set, per-task scores (base vs tuned)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts: dict[str, str] = {}
    if losses:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([s for s, _ in losses], [v for _, v in losses])
        ax.set(xlabel="optimizer step", ylabel="training loss", title="Training loss")
        charts["loss"] = _save(fig, out / "loss.png")
    charts["sets"] = _bars(
        plt,
        out / "sets.png",
        set_scores(base) if base else {},
        set_scores(tuned),
        "Normalized score by eval set",
    )
    per_task = defaultdict(dict)
    for which, results in (("base", base), ("tuned", tuned)):
        for task, (score, _) in task_scores(results or {}).items():
            per_task[which][task] = score
    charts["tasks"] = _bars(
        plt,
        out / "tasks.png",
        per_task.get("base", {}),
        per_task.get("tuned", {}),
        "Score by task (preferred metric)",
    )
    return charts


def _bars(plt, path: Path, base: dict[str, float], tuned: dict[str, float], title: str) -> str:
    keys = list(tuned)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(keys) + 2), 4))
    xs = range(len(keys))
    if base:
        ax.bar([x - 0.2 for x in xs], [base.get(k, 0) for k in keys], width=0.4, label="base")
    ax.bar([x + (0.2 if base else 0) for x in xs], [tuned[k] for k in keys], width=0.4, label="tuned")
    ax.set_xticks(list(xs), keys, rotation=75, ha="right", fontsize=7)
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name
