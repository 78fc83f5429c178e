"""The run report: recipe, data statistics, loss curve, base vs tuned per eval set and task with 95%
intervals and paired tests, in Markdown (report.md + PNG charts) and one self-contained report.html.

The text says what changed and whether a paired test over the same rows calls it significant; the
numbers are whatever the run measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from . import charts
from .evaluate import significance as sig
from .evaluate.eval_report import load_run
from .html_report import Section, Table, render_markdown, write_html

SECTIONS = (
    "Summary",
    "Artifacts",
    "Recipe",
    "Data",
    "Training",
    "Evaluation by set",
    "Evaluation by task",
    "What improved and what did not",
)
# The page leads with what the run measured; the Markdown keeps the verdicts last, where `run` prints them.
HTML_ORDER = (
    "Summary",
    "Evaluation by set",
    "What improved and what did not",
    "Evaluation by task",
    "Training",
    "Data",
    "Recipe",
    "Artifacts",
)
UNIT = "normalized points"


def write_run_report(recipe, inputs: dict[str, Path], out: Path) -> Path:
    """Write report.md, report.html and charts into `out`, and copies of both pages at the run root."""
    root = out.parent
    tuned = load_run(inputs["eval-tuned"])
    base = load_run(inputs["eval-base"]) if "eval-base" in inputs else None
    losses = _losses(inputs["train"] / "metrics.jsonl")
    sets, tasks = set_rows(base, tuned), task_rows(base, tuned)
    charts = _charts(out, losses, sets, tasks)
    sections = build_sections(recipe, root, losses, base, tuned, sets, tasks, charts)
    title = f"Run report: {recipe.name}"
    for folder in (out, root):
        (folder / "report.md").write_text(render_markdown(title, sections, recipe.description, folder))
        page = sorted(sections, key=lambda s: HTML_ORDER.index(s.title))
        write_html(folder / "report.html", title, page, recipe.description.strip())
    return out / "report.md"


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


Row = tuple[str, sig.Estimate | None, sig.Estimate, sig.Difference | None]


def benchmark_groups(results: dict[str, Any]) -> list[str]:
    """Groups of tasks outside every eval set (benchmarks such as piqa or bbh): they get a row of their own."""
    tasks = results.get("tasks", {}).values()
    return sorted({t["group"] for t in tasks if not t.get("cluster") and t.get("group")})


def set_rows(base: dict[str, Any] | None, tuned: dict[str, Any]) -> list[Row]:
    """Per eval set, then per benchmark: base and tuned normalized scores with intervals, and the difference."""
    keyed = [("clusters", "cluster", key) for key in set_scores(tuned)]
    keyed += [("groups", "group", key) for key in benchmark_groups(tuned)]
    rows = []
    for section, field, key in keyed:
        value = tuned[section][key]["normalized"]
        weights = sig.member_weights(tuned, field, key)
        b = (base or {}).get(section, {}).get(key)
        rows.append(
            (
                key,
                sig.estimate(base, weights, b["normalized"], True) if b else None,
                sig.estimate(tuned, weights, value, True),
                sig.difference(base, tuned, weights, value - b["normalized"], True) if b else None,
            )
        )
    return rows


def task_rows(base: dict[str, Any] | None, tuned: dict[str, Any]) -> list[Row]:
    """Per task: base and tuned scores (preferred metric) with intervals, and the paired difference."""
    rows = []
    for task, summary in sorted(tuned.get("tasks", {}).items()):
        b = (base or {}).get("tasks", {}).get(task)
        rows.append(
            (
                task,
                _stored(b) if b else None,
                _stored(summary),
                sig.difference(base, tuned, {task: 1.0}, summary["score"] - b["score"], False) if b else None,
            )
        )
    return rows


def _stored(summary: dict[str, Any]) -> sig.Estimate:
    """A task's score with the interval the evaluation stored (bootstrap over its rows)."""
    low, high = summary.get("ci95") or (sig.NAN, sig.NAN)
    return sig.Estimate(summary["score"], low, high)


def average_row(base: dict[str, Any] | None, tuned: dict[str, Any]) -> Row:
    """The normalized average (macro over groups) of both models, with intervals and the difference."""
    weights = sig.average_weights(tuned)
    value = tuned.get("normalized_average", sig.NAN)
    if base is None:
        return ("normalized average", None, sig.estimate(tuned, weights, value, True), None)
    b = base.get("normalized_average", sig.NAN)
    return (
        "normalized average",
        sig.estimate(base, weights, b, True),
        sig.estimate(tuned, weights, value, True),
        sig.difference(base, tuned, weights, value - b, True),
    )


def comparison_table(rows: list[Row], first: str, extra: dict[str, str] | None = None) -> Table:
    """base [CI] | tuned [CI] | Δ [CI] | paired test, one row each; significant rows marked."""
    extra = extra or {}
    columns = [first] + (["metric"] if extra else [])
    columns += ["base [95% CI]", "tuned [95% CI]", "Δ [95% CI]", "paired test"]
    table = Table(columns, [], frozenset(range(1 + bool(extra), len(columns) - 1)))
    for key, b, t, d in rows:
        cells = [key] + ([extra.get(key, "")] if extra else [])
        table.rows.append(
            cells + [sig.fmt_estimate(b), sig.fmt_estimate(t), sig.fmt_diff(d), sig.fmt_test(d)]
        )
        table.marks.append(sig.mark(d))
    return table


def verdicts(rows: list[Row]) -> list[tuple[str, str]]:
    """One sentence per compared row: how it changed and whether the paired test calls that significant."""
    return [
        (key, sig.sentence(d, b.value, t.value, UNIT))
        for key, b, t, d in rows
        if b is not None and d is not None
    ]


def build_sections(
    recipe, root: Path, losses, base, tuned, sets: list[Row], tasks: list[Row], charts: dict[str, Path]
) -> list[Section]:
    """The report, section by section (the same for Markdown and HTML)."""
    average = average_row(base, tuned)
    noise = (
        "Intervals are 95% bootstrap intervals over the evaluated rows. A difference is called "
        f"significant only when a paired sign-flip test over the same rows gives p < {sig.ALPHA}; "
        "with a dozen rows per task, one row moves a task's score by several points. With few rows "
        "that differ the bootstrap interval is too narrow; the test is exact then, and decides."
    )
    summary = [comparison_table([average], "score")]
    by_set = (
        "Normalized score: 100 × (score − random) / (100 − random), averaged over tasks; 0 is chance. "
        "Benchmarks outside the eval sets (e.g. piqa) have a row each."
    )
    metric = {task: s["metric"] for task, s in tuned.get("tasks", {}).items()}
    return [
        Section("Summary", text=_summary_text(losses, average), tables=summary),
        Section("Artifacts", links=_artifacts(root)),
        Section(
            "Recipe",
            text=[
                f"The recipe's command: {'; '.join(recipe.commands) or 'instructkit run'} "
                "(overrides given with --set are applied in the YAML below)."
            ],
            code=yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False),
            code_label="the recipe as run, every field resolved (YAML)",
        ),
        Section("Data", tables=[_data_table(root)]),
        Section(
            "Training",
            text=[] if losses else ["No loss was logged."],
            charts=[("loss curve", charts["loss"])] if "loss" in charts else [],
        ),
        Section(
            "Evaluation by set",
            text=[by_set, noise],
            tables=[comparison_table(sets, "eval set")],
            charts=[("normalized score by eval set", charts["sets"])],
        ),
        Section(
            "Evaluation by task",
            text=["Each task's preferred metric (0–100), not normalized."],
            tables=[comparison_table(tasks, "task", metric)],
            charts=[("score by task", charts["tasks"])],
        ),
        Section(
            "What improved and what did not",
            text=[] if base else ["No base model was evaluated, so nothing is compared."],
            items=verdicts(sets),
        ),
    ]


def _summary_text(losses, average: Row) -> list[str]:
    _, b, t, d = average
    lines = [
        f"Normalized average, tuned: {sig.fmt_estimate(t)}"
        + (f"; base: {sig.fmt_estimate(b)}." if b else ".")
    ]
    if d is not None:
        lines.append(f"The normalized average {sig.sentence(d, b.value, t.value, UNIT)}")
    if losses:
        (s0, l0), (s1, l1) = losses[0], losses[-1]
        lines.append(f"Training loss: {l0:.3f} at step {s0} → {l1:.3f} at step {s1}.")
    return lines


DATA_ROWS = (
    ("mixture", "rows", "mixture rows"),
    ("mixture", "rejected", "mixture rows rejected"),
    ("mixture", "removed_by_decontamination", "mixture rows removed by decontamination"),
    ("prepare", "examples_in", "rows read by prepare"),
    ("prepare", "rejected", "rows rejected (see rejects.jsonl)"),
    ("prepare", "dropped_overlong", "dropped: longer than max_length"),
    ("prepare", "dropped_no_trainable", "dropped: no trained token"),
    ("prepare", "dropped_truncated", "dropped: reply entirely past max_length"),
    ("prepare", "truncated", "truncated"),
    ("prepare", "examples_out", "examples trained on"),
    ("prepare", "tokens", "tokens"),
    ("prepare", "trainable_tokens", "tokens with a loss"),
    ("prepare", "packs", "packed rows"),
    ("prepare", "packing_efficiency", "packing efficiency (real tokens / capacity)"),
)


def _data_table(root: Path) -> Table:
    """Rows, rejects, drops, tokens and packing efficiency from the stages' stats.json files."""
    stats = {stage: _json(root / stage / "stats.json") for stage in ("mixture", "prepare")}
    rows = []
    for stage, key, label in DATA_ROWS:
        value = stats[stage].get(key)
        if value is not None:
            rows.append([stage, label, f"{value:.1%}" if key == "packing_efficiency" else f"{value:,}"])
    if stats["mixture"].get("tasks"):
        clusters = sorted({t["cluster"] for t in stats["mixture"]["tasks"].values()})
        held = ", ".join(stats["mixture"].get("holdout_clusters", [])) or "none"
        rows.insert(1, ["mixture", "tasks / clusters", f"{len(stats['mixture']['tasks'])} / {len(clusters)}"])
        rows.insert(2, ["mixture", "held-out clusters", held])
    return Table(["stage", "quantity", "value"], rows, frozenset({2}))


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


ARTIFACTS = (
    ("mixture statistics", "mixture/stats.json"),
    ("mixture rejects", "mixture/rejects.jsonl"),
    ("prepared data statistics", "prepare/stats.json"),
    ("prepare rejects", "prepare/rejects.jsonl"),
    ("training log (metrics.jsonl)", "train/metrics.jsonl"),
    ("trained model", "train"),
    ("base model results", "eval-base/results.json"),
    ("base model per-row outputs", "eval-base/samples"),
    ("tuned model results", "eval-tuned/results.json"),
    ("tuned model per-row outputs", "eval-tuned/samples"),
    ("charts", "report"),
)


def _artifacts(root: Path) -> list[tuple[str, Path]]:
    """Links to the files the run wrote (only those that exist)."""
    return [(label, root / rel) for label, rel in ARTIFACTS if (root / rel).exists()]


def _charts(out: Path, losses, sets: list[Row], tasks: list[Row]) -> dict[str, Path]:
    """PNG charts: loss curve, normalized score per eval set and score per task, with 95% intervals."""
    drawn: dict[str, Path] = {}
    if losses:
        steps, values = zip(*losses)
        drawn["loss"] = charts.curve(
            out / "loss.png",
            steps,
            values,
            title="Training loss",
            xlabel="optimizer step",
            ylabel="training loss",
        )
    drawn["sets"] = _bars(out / "sets.png", sets, "Normalized score by eval set (95% CI)")
    drawn["tasks"] = _bars(out / "tasks.png", tasks, "Score by task (preferred metric, 95% CI)")
    return drawn


def _bars(path: Path, rows: list[Row], title: str) -> Path:
    """Base (when evaluated) and tuned bars per row, each with its 95% interval."""
    columns = {"base": [b for _, b, _, _ in rows], "tuned": [t for _, _, t, _ in rows]}
    if all(b is None for b in columns["base"]):
        del columns["base"]
    series = [
        charts.Series(
            label,
            [e.value if e else None for e in estimates],
            [(e.low, e.high) if e else (sig.NAN, sig.NAN) for e in estimates],
        )
        for label, estimates in columns.items()
    ]
    return charts.bars(path, [key for key, *_ in rows], series, title=title)
