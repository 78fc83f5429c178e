"""Reports from results.json files: a Markdown table (per task, per group, normalized average), PNG bar
charts (matplotlib Agg), and A-vs-B comparisons with paired bootstrap intervals on per-example scores."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import InstructkitError
from .metrics import bootstrap_ci, paired_bootstrap_ci
from .runner import RESULTS_FILE


def load_run(run: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A results dict from a dict, a run directory or a results.json path (keeps where it came from)."""
    if isinstance(run, dict):
        return run
    path = Path(run)
    path = path / RESULTS_FILE if path.is_dir() else path
    if not path.is_file():
        raise InstructkitError(f"{path}: no evaluation results here (expected {RESULTS_FILE})")
    results = json.loads(path.read_text(encoding="utf-8"))
    results["_dir"] = str(path.parent)
    return results


def run_label(results: dict[str, Any]) -> str:
    """A short name for a run: its directory name, else the model fingerprint."""
    return Path(results["_dir"]).name if "_dir" in results else str(results.get("model", "run"))


def markdown_table(runs: list[dict[str, Any]]) -> str:
    """Tasks × runs (score [95% CI]), then groups (normalized), then the normalized average."""
    labels = [run_label(r) for r in runs]
    names = sorted({t for r in runs for t in r["tasks"]})
    lines = ["| task | metric | random | " + " | ".join(labels) + " |", "|---" * (3 + len(runs)) + "|"]
    for name in names:
        first = next(r["tasks"][name] for r in runs if name in r["tasks"])
        cells = [_cell(r["tasks"].get(name)) for r in runs]
        lines.append(
            f"| {name} | {first['metric']} | {first['random_baseline']:.1f} | " + " | ".join(cells) + " |"
        )
    groups = sorted({g for r in runs for g in r.get("groups", {})})
    lines += ["", "| group (normalized) | " + " | ".join(labels) + " |", "|---" * (1 + len(runs)) + "|"]
    for g in groups:
        lines.append(
            f"| {g} | "
            + " | ".join(_num(r.get("groups", {}).get(g, {}).get("normalized")) for r in runs)
            + " |"
        )
    lines.append(
        "| **normalized average** | " + " | ".join(_num(r.get("normalized_average")) for r in runs) + " |"
    )
    return "\n".join(lines) + "\n"


def write_report(runs: list[str | Path | dict[str, Any]], out_dir: str | Path) -> Path:
    """Write report.md and charts (tasks.png, groups.png, normalized_average.png); return report.md's path."""
    loaded = [load_run(r) for r in runs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(loaded)
    charts = _charts(loaded, out)
    body = "# Evaluation report\n\n" + table + "\n" + "".join(f"![{c.stem}]({c.name})\n" for c in charts)
    (out / "report.md").write_text(body, encoding="utf-8")
    return out / "report.md"


def _charts(runs: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    tasks = sorted({t for r in runs for t in r["tasks"]})
    groups = sorted({g for r in runs for g in r.get("groups", {})})
    series = {
        "tasks": (
            tasks,
            [[r["tasks"].get(t, {}).get("score", math.nan) for t in tasks] for r in runs],
            "score",
        ),
        "groups": (
            groups,
            [[r.get("groups", {}).get(g, {}).get("normalized", math.nan) for g in groups] for r in runs],
            "normalized score",
        ),
        "normalized_average": (
            ["normalized average"],
            [[r.get("normalized_average", math.nan)] for r in runs],
            "normalized score",
        ),
    }
    return [
        _bar_chart(out / f"{name}.png", cats, values, [run_label(r) for r in runs], ylabel)
        for name, (cats, values, ylabel) in series.items()
        if cats
    ]


def _bar_chart(
    path: Path, categories: list[str], values: list[list[float]], labels: list[str], ylabel: str
) -> Path:
    import matplotlib.pyplot as plt

    width = 0.8 / max(1, len(values))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(categories) * len(values) + 2), 4))
    for i, (row, label) in enumerate(zip(values, labels)):
        ax.bar([x + i * width for x in range(len(categories))], row, width, label=label)
    ax.set_xticks([x + width * (len(values) - 1) / 2 for x in range(len(categories))])
    ax.set_xticklabels(categories, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def compare(a: str | Path | dict[str, Any], b: str | Path | dict[str, Any]) -> list[dict[str, Any]]:
    """Per shared task: score A, score B, B − A and its 95% interval (paired when samples exist)."""
    run_a, run_b = load_run(a), load_run(b)
    rows = []
    for name in sorted(set(run_a["tasks"]) & set(run_b["tasks"])):
        ta, tb = run_a["tasks"][name], run_b["tasks"][name]
        rows.append(
            {
                "task": name,
                "metric": ta["metric"],
                "a": ta["score"],
                "b": tb["score"],
                "delta": tb["score"] - ta["score"],
                "ci95": _delta_ci(run_a, run_b, name, ta["metric"]),
            }
        )
    return rows


def compare_markdown(rows: list[dict[str, Any]], label_a: str = "A", label_b: str = "B") -> str:
    """The comparison as a Markdown table."""
    lines = [f"| task | metric | {label_a} | {label_b} | Δ (B−A) | 95% CI |", "|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["ci95"]
        lines.append(
            f"| {r['task']} | {r['metric']} | {_num(r['a'])} | {_num(r['b'])} | {r['delta']:+.1f} | "
            f"[{_num(lo)}, {_num(hi)}] |"
        )
    return "\n".join(lines) + "\n"


def _delta_ci(run_a: dict[str, Any], run_b: dict[str, Any], task: str, metric: str) -> tuple[float, float]:
    ea, eb = _per_example(run_a, task, metric), _per_example(run_b, task, metric)
    if ea and eb and set(ea) == set(eb):
        ids = sorted(ea)
        return paired_bootstrap_ci([ea[i] for i in ids], [eb[i] for i in ids])
    if ea and eb:  # different examples: difference of independent resamples' means
        lo_a, hi_a = bootstrap_ci(list(ea.values()))
        lo_b, hi_b = bootstrap_ci(list(eb.values()))
        return (lo_b - hi_a, hi_b - lo_a)
    return (math.nan, math.nan)


def _per_example(run: dict[str, Any], task: str, metric: str) -> dict[str, float]:
    if "_dir" not in run:
        return {}
    path = Path(run["_dir"]) / "samples" / (task.replace("/", "__") + ".jsonl")
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {str(r["id"]): 100 * float(r[metric]) for r in rows if metric in r}


def _cell(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "–"
    lo, hi = summary.get("ci95", [math.nan, math.nan])
    return f"{_num(summary['score'])} [{_num(lo)}, {_num(hi)}]"


def _num(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"
