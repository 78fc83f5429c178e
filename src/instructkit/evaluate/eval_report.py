"""Reports from results.json files: tables per task and per group (score [95% CI]; for a later run,
its difference from the first with a paired test), the normalized average, PNG bar charts (drawn by
`instructkit.charts`), A-vs-B comparisons, each as Markdown and as one self-contained report.html."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .. import charts
from ..atomic import write_atomic
from ..errors import InstructkitError
from . import significance as sig
from .html_report import Section, Table, render_markdown, write_html

RESULTS_FILE = "results.json"  # runner.RESULTS_FILE; not imported from there, which would load torch

NOISE_NOTE = (
    "Scores are 0–100 with 95% bootstrap intervals over the evaluated rows. A difference is called "
    f"significant only when a paired sign-flip test over the same rows gives p < {sig.ALPHA}; its 95% "
    "interval is the set of shifts that same test does not reject, so it excludes 0 exactly when the "
    "difference is significant. Per-task tests are also corrected for their number (Holm)."
)


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
    """Tasks × runs (score [95% CI]), then groups (normalized) and the normalized average; each later
    run also gets its difference from the first run and the paired test's verdict."""
    return "\n".join((f"{t.caption}\n\n" if t.caption else "") + t.markdown() for t in report_tables(runs))


def report_tables(runs: list[dict[str, Any]]) -> list[Table]:
    """The task table (per later run: Δ, paired test, and the test after Holm's correction over the
    tasks) and the group table (ending with the normalized average)."""
    labels = [run_label(r) for r in runs]
    vs = [f"Δ {label} − {labels[0]} [95% CI]" for label in labels[1:]]
    names = sorted({t for r in runs for t in r["tasks"]})
    holm = [f"after Holm ({label} − {labels[0]})" for label in labels[1:]]
    columns = [c for v, h in zip(vs, holm) for c in (v, "paired test", h)]
    tasks = Table(["task", "metric", "random"] + labels + columns, [])
    per_run = [sig.with_holm([_task_diff(runs[0], r, name) for name in names]) for r in runs[1:]]
    for i, name in enumerate(names):
        first = next(r["tasks"][name] for r in runs if name in r["tasks"])
        cells = [name, first["metric"], f"{first['random_baseline']:.1f}"]
        cells += [_task_cell(r["tasks"].get(name)) for r in runs]
        _add_row(tasks, cells, [diffs[i] for diffs in per_run], holm=True)
    groups = Table(["group (normalized)"] + labels + [c for v in vs for c in (v, "paired test")], [])
    for g in sorted({g for r in runs for g in r.get("groups", {})}):
        cells = [g] + [sig.fmt_estimate(_group_estimate(r, g)) for r in runs]
        _add_row(groups, cells, [_group_diff(runs[0], r, g) for r in runs[1:]])
    averages = [
        sig.estimate(r, sig.average_weights(r), r.get("normalized_average", sig.NAN), True) for r in runs
    ]
    _add_row(
        groups,
        ["normalized average"] + [sig.fmt_estimate(e) for e in averages],
        [_average_diff(runs[0], r) for r in runs[1:]],
    )
    if per_run:
        tasks.caption = sig.family_note(per_run[-1])
    tasks.numeric, groups.numeric = _numeric(tasks, 2), _numeric(groups, 1)
    return [tasks, groups]


def _numeric(table: Table, first: int) -> frozenset[int]:
    """Columns from `first` on hold numbers, except the paired tests' verdicts."""
    return frozenset(
        i
        for i, c in enumerate(table.columns)
        if i >= first and c != "paired test" and not c.startswith("after Holm")
    )


def _add_row(table: Table, cells: list[str], diffs: list[sig.Difference | None], holm: bool = False) -> None:
    """Append a row with one (Δ [CI], test[, after Holm]) group per later run; mark it if the last
    one is significant (after Holm's correction in a family)."""
    for d in diffs:
        cells += [sig.fmt_diff(d), sig.fmt_test(d)] + ([sig.fmt_holm(d)] if holm else [])
    table.rows.append(cells)
    table.marks.append(sig.mark(diffs[-1]) if diffs else "")


def _task_cell(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "–"
    low, high = summary.get("ci95", [math.nan, math.nan])
    return sig.fmt_estimate(sig.Estimate(summary["score"], low, high))


def _task_diff(a: dict[str, Any], b: dict[str, Any], task: str) -> sig.Difference | None:
    if task not in a["tasks"] or task not in b["tasks"]:
        return None
    return sig.difference(a, b, {task: 1.0}, b["tasks"][task]["score"] - a["tasks"][task]["score"], False)


def _group_estimate(run: dict[str, Any], group: str) -> sig.Estimate | None:
    summary = run.get("groups", {}).get(group)
    if summary is None:
        return None
    return sig.estimate(run, sig.member_weights(run, "group", group), summary["normalized"], True)


def _group_diff(a: dict[str, Any], b: dict[str, Any], group: str) -> sig.Difference | None:
    ga, gb = a.get("groups", {}).get(group), b.get("groups", {}).get(group)
    weights = sig.member_weights(a, "group", group)
    if ga is None or gb is None or weights != sig.member_weights(b, "group", group):
        return None
    return sig.difference(a, b, weights, gb["normalized"] - ga["normalized"], True)


def _average_diff(a: dict[str, Any], b: dict[str, Any]) -> sig.Difference | None:
    weights = sig.average_weights(a)
    if weights != sig.average_weights(b):
        return None  # different task sets: their averages are not comparable row by row
    delta = b.get("normalized_average", sig.NAN) - a.get("normalized_average", sig.NAN)
    return sig.difference(a, b, weights, delta, True)


def write_report(runs: list[str | Path | dict[str, Any]], out_dir: str | Path) -> Path:
    """Write report.md, report.html and charts (tasks.png, groups.png); return report.md's path."""
    loaded = [load_run(r) for r in runs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    charts = _charts(loaded, out)
    tasks, groups = report_tables(loaded)
    warned = warning_lines(loaded)
    sections = [Section("Warnings", text=warned)] if warned else []
    sections += [
        Section("Scores by task", text=[NOISE_NOTE], tables=[tasks]),
        Section("Scores by group", text=["Normalized: 0 is chance, 100 is perfect."], tables=[groups]),
        Section("Charts", charts=[(c.stem, c) for c in charts]),
        Section("Artifacts", links=_links(loaded)),
    ]
    title = "Evaluation report"
    write_atomic(out / "report.md", render_markdown(title, sections, base=out))
    write_html(out / "report.html", title, sections, ", ".join(run_label(r) for r in loaded))
    return out / "report.md"


def warning_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Each run's recorded warnings (results.json `warnings`, e.g. an adapter on another base), labelled."""
    return [f"Warning ({run_label(r)}): {w}" for r in runs for w in r.get("warnings") or []]


def _links(runs: list[dict[str, Any]]) -> list[tuple[str, Path]]:
    """Each run's results.json and per-row samples folder."""
    links = []
    for r in runs:
        if "_dir" in r:
            links += [
                (f"{run_label(r)}: results.json", Path(r["_dir"]) / RESULTS_FILE),
                (f"{run_label(r)}: per-row outputs", Path(r["_dir"]) / "samples"),
            ]
    return links


def _charts(runs: list[dict[str, Any]], out: Path) -> list[Path]:
    """tasks.png (score per task, one panel per group, chance = random baseline) and groups.png
    (normalized per group, then the normalized average; chance = 0): a dot per run, 95% intervals."""
    drawn = [charts.save(task_figure(runs), out / "tasks.png")]
    if any(r.get("groups") for r in runs):
        drawn.append(charts.save(group_figure(runs), out / "groups.png"))
    return drawn


def task_figure(runs: list[dict[str, Any]]):
    """Score per task, a dot per run with the task's stored 95% interval, one panel per group."""
    by_group: dict[str, list[str]] = {}
    for name in sorted({t for r in runs for t in r["tasks"]}):
        first = next(r["tasks"][name] for r in runs if name in r["tasks"])
        by_group.setdefault(first.get("group") or "other", []).append(name)
    panels = []
    for group, names in sorted(by_group.items()):
        rows = []
        for name in names:
            cells = [r["tasks"].get(name) for r in runs]
            first = next(c for c in cells if c)
            estimates = [_task_estimate(c) for c in cells]
            rows.append(_score_row(name, estimates, first.get("random_baseline")))
        panels.append(charts.Panel(group, rows, "score (task's metric, 0–100), 95% intervals"))
    return charts.score_figure(panels, [run_label(r) for r in runs], title="Score by task")


def group_figure(runs: list[dict[str, Any]]):
    """Normalized score per group and the normalized average, a dot per run with its 95% interval."""
    xlabel = "normalized score (0 = chance, 100 = perfect), 95% intervals"
    groups = sorted({g for r in runs for g in r.get("groups", {})})
    rows = [_score_row(g, [_group_estimate(r, g) for r in runs], 0.0) for g in groups]
    averages = [
        sig.estimate(r, sig.average_weights(r), r.get("normalized_average", sig.NAN), True) for r in runs
    ]
    panels = [
        charts.Panel("groups", rows, xlabel),
        charts.Panel("overall", [_score_row("normalized average", averages, 0.0)], xlabel),
    ]
    return charts.score_figure(panels, [run_label(r) for r in runs], title="Normalized score by group")


def _task_estimate(summary: dict[str, Any] | None) -> sig.Estimate | None:
    if not summary:
        return None
    low, high = summary.get("ci95") or (sig.NAN, sig.NAN)
    return sig.Estimate(summary["score"], low, high)


def _score_row(label: str, estimates: list[sig.Estimate | None], chance: float | None) -> charts.ScoreRow:
    return charts.ScoreRow(
        label,
        [e.value if e else None for e in estimates],
        [(e.low, e.high) if e else (sig.NAN, sig.NAN) for e in estimates],
        chance,
    )


def compare(a: str | Path | dict[str, Any], b: str | Path | dict[str, Any]) -> list[dict[str, Any]]:
    """Per shared task: scores A and B with their 95% intervals, B − A with its interval (paired when
    both runs scored the same rows), the paired test's p-value and verdict, and its Holm-adjusted
    p-value over all the shared tasks (`holm_p`, `family`: how many tests)."""
    run_a, run_b = load_run(a), load_run(b)
    rows = []
    names = sorted(set(run_a["tasks"]) & set(run_b["tasks"]))
    diffs = sig.with_holm([_task_diff(run_a, run_b, name) for name in names])
    for name, diff in zip(names, diffs):
        ta, tb = run_a["tasks"][name], run_b["tasks"][name]
        rows.append(
            {
                "task": name,
                "metric": ta["metric"],
                "a": ta["score"],
                "b": tb["score"],
                "a_ci95": list(ta.get("ci95", [math.nan, math.nan])),
                "b_ci95": list(tb.get("ci95", [math.nan, math.nan])),
                **_diff_fields(diff),
            }
        )
    return rows


def compare_groups(a: str | Path | dict[str, Any], b: str | Path | dict[str, Any]) -> list[dict[str, Any]]:
    """compare() for the shared groups (normalized) and the normalized average."""
    run_a, run_b = load_run(a), load_run(b)
    rows = []
    for name in sorted(set(run_a.get("groups", {})) & set(run_b.get("groups", {}))):
        ea, eb = _group_estimate(run_a, name), _group_estimate(run_b, name)
        rows.append(_aggregate_row(name, ea, eb, _group_diff(run_a, run_b, name)))
    ea, eb = (
        sig.estimate(r, sig.average_weights(r), r.get("normalized_average", sig.NAN), True)
        for r in (run_a, run_b)
    )
    rows.append(_aggregate_row("normalized average", ea, eb, _average_diff(run_a, run_b)))
    return rows


def _aggregate_row(
    name: str, ea: sig.Estimate, eb: sig.Estimate, diff: sig.Difference | None
) -> dict[str, Any]:
    fields = (
        _diff_fields(diff)
        if diff
        else {**_diff_fields(sig.Difference(eb.value - ea.value)), "note": "different tasks"}
    )
    return {
        "task": name,
        "metric": "normalized",
        "a": ea.value,
        "b": eb.value,
        "a_ci95": [ea.low, ea.high],
        "b_ci95": [eb.low, eb.high],
        **fields,
    }


def _diff_fields(diff: sig.Difference) -> dict[str, Any]:
    return {
        "delta": diff.delta,
        "ci95": [diff.low, diff.high],
        "p": diff.p,
        "significant": diff.significant,
        "verdict": diff.verdict(),
        "paired_rows": diff.rows,
        "note": diff.note,
        "holm_p": diff.holm_p,
        "family": diff.family,
    }


def compare_table(
    rows: list[dict[str, Any]], label_a: str = "A", label_b: str = "B", first: str = "task"
) -> Table:
    """The comparison as a Table: A [CI], B [CI], Δ [CI], paired test (and the test after Holm's
    correction when the rows are a family of tests); significant rows marked."""
    family = max((r.get("family", 0) for r in rows), default=0)
    columns = [
        first,
        "metric",
        f"{label_a} [95% CI]",
        f"{label_b} [95% CI]",
        f"Δ {label_b} − {label_a} [95% CI]",
        "paired test",
    ] + ([f"after Holm ({family} tests)"] if family else [])
    table = Table(columns, [], frozenset({2, 3, 4}))
    for r in rows:
        diff = _row_difference(r)
        table.rows.append(
            [
                r["task"],
                r["metric"],
                sig.fmt_estimate(sig.Estimate(r["a"], *r["a_ci95"])),
                sig.fmt_estimate(sig.Estimate(r["b"], *r["b_ci95"])),
                sig.fmt_diff(diff),
                sig.fmt_test(diff),
            ]
            + ([sig.fmt_holm(diff)] if family else [])
        )
        table.marks.append(sig.mark(diff))
    if family:
        table.caption = sig.family_note([_row_difference(r) for r in rows])
    return table


def compare_markdown(
    rows: list[dict[str, Any]],
    label_a: str = "A",
    label_b: str = "B",
    groups: list[dict[str, Any]] | None = None,
) -> str:
    """The comparison as Markdown: the task table (raw points), then the group table (normalized
    points) when given; each table preceded by its caption."""
    tables = [compare_table(rows, label_a, label_b)] + (
        [compare_table(groups, label_a, label_b, "group (normalized)")] if groups else []
    )
    return "\n".join((f"{t.caption}\n\n" if t.caption else "") + t.markdown() for t in tables)


def write_compare(a: str | Path, b: str | Path, out: str | Path) -> tuple[Path, Path]:
    """Write the comparison as Markdown to `out` and as HTML beside it (same name, .html)."""
    run_a, run_b = load_run(a), load_run(b)
    label_a, label_b = run_label(run_a), run_label(run_b)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, groups = compare(run_a, run_b), compare_groups(run_a, run_b)
    average = groups[-1]
    sentence = sig.sentence(_row_difference(average), average["a"], average["b"], "normalized points")
    chart = charts.save(delta_figure(rows, groups, label_a, label_b), out.with_suffix(".png"))
    sections = [
        Section(
            "Summary",
            text=[NOISE_NOTE],
            items=[(f"The normalized average of {label_b} vs {label_a}", sentence)],
        ),
        Section("By task (points)", tables=[compare_table(rows, label_a, label_b)]),
        Section(
            "By group (normalized points)",
            tables=[compare_table(groups, label_a, label_b, "group (normalized)")],
        ),
        Section("Differences", charts=[(f"{label_b} − {label_a} with 95% intervals", chart)]),
        Section("Artifacts", links=_links([run_a, run_b])),
    ]
    title = f"Comparison: {label_b} vs {label_a}"
    write_atomic(out, render_markdown(title, sections, base=out.parent))
    return out, write_html(out.with_suffix(".html"), title, sections)


def delta_figure(rows: list[dict[str, Any]], groups: list[dict[str, Any]], label_a: str, label_b: str):
    """Forest plots of `label_b` − `label_a`: task rows in points (coloured when they survive Holm's
    correction), group rows and the normalized average in normalized points."""
    diff = f"{label_b} − {label_a}"
    panels = [
        charts.DeltaPanel(
            f"tasks ({len(rows)})",
            [charts.Delta(r["task"], r["delta"], *r["ci95"], _row_difference(r).survives) for r in rows],
            f"{diff}, points of the task's metric; colour: significant after Holm's correction "
            f"for {len(rows)} tests",
        ),
        charts.DeltaPanel(
            "groups",
            [charts.Delta(r["task"], r["delta"], *r["ci95"], r["significant"]) for r in groups],
            f"{diff}, normalized points; colour: significant (paired test)",
        ),
    ]
    return charts.delta_figure(panels, title=f"{diff} with 95% intervals")


def _row_difference(row: dict[str, Any]) -> sig.Difference:
    low, high = row["ci95"]
    return sig.Difference(
        row["delta"],
        low,
        high,
        row.get("p"),
        row.get("paired_rows", 0),
        row.get("note", ""),
        row.get("holm_p"),
        row.get("family", 0),
    )
