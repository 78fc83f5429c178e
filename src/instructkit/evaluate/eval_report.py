"""Reports from results.json files: tables per task and per group (score [95% CI]; for a later run,
its difference from the first with a paired test), the normalized average, PNG bar charts (drawn by
`instructkit.charts`), A-vs-B comparisons, each as Markdown and as one self-contained report.html."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .. import charts
from ..errors import InstructkitError
from ..html_report import Section, Table, render_markdown, write_html
from . import significance as sig

RESULTS_FILE = "results.json"  # runner.RESULTS_FILE; not imported from there, which would load torch

NOISE_NOTE = (
    "Scores are 0–100 with 95% bootstrap intervals over the evaluated rows. A difference is called "
    f"significant only when a paired sign-flip test over the same rows gives p < {sig.ALPHA}. With "
    "few rows that differ the bootstrap interval is too narrow; the test is exact then, and decides."
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
    return "\n".join(t.markdown() for t in report_tables(runs))


def report_tables(runs: list[dict[str, Any]]) -> list[Table]:
    """The task table and the group table (ending with the normalized average)."""
    labels = [run_label(r) for r in runs]
    vs = [f"Δ {label} − {labels[0]} [95% CI]" for label in labels[1:]]
    tasks = Table(["task", "metric", "random"] + labels + [c for v in vs for c in (v, "paired test")], [])
    for name in sorted({t for r in runs for t in r["tasks"]}):
        first = next(r["tasks"][name] for r in runs if name in r["tasks"])
        cells = [name, first["metric"], f"{first['random_baseline']:.1f}"]
        cells += [_task_cell(r["tasks"].get(name)) for r in runs]
        diffs = [_task_diff(runs[0], r, name) for r in runs[1:]]
        _add_row(tasks, cells, diffs)
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
    tasks.numeric, groups.numeric = _numeric(tasks, 2), _numeric(groups, 1)
    return [tasks, groups]


def _numeric(table: Table, first: int) -> frozenset[int]:
    """Columns from `first` on hold numbers, except the paired tests' verdicts."""
    return frozenset(i for i, c in enumerate(table.columns) if i >= first and c != "paired test")


def _add_row(table: Table, cells: list[str], diffs: list[sig.Difference | None]) -> None:
    """Append a row with one (Δ [CI], test) pair per later run; mark it if the last one is significant."""
    for d in diffs:
        cells += [sig.fmt_diff(d), sig.fmt_test(d)]
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
    """Write report.md, report.html and charts (tasks.png, groups.png, normalized_average.png); return
    report.md's path."""
    loaded = [load_run(r) for r in runs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    charts = _charts(loaded, out)
    tasks, groups = report_tables(loaded)
    sections = [
        Section("Scores by task", text=[NOISE_NOTE], tables=[tasks]),
        Section("Scores by group", text=["Normalized: 0 is chance, 100 is perfect."], tables=[groups]),
        Section("Charts", charts=[(c.stem, c) for c in charts]),
        Section("Artifacts", links=_links(loaded)),
    ]
    title = "Evaluation report"
    (out / "report.md").write_text(render_markdown(title, sections, base=out), encoding="utf-8")
    write_html(out / "report.html", title, sections, ", ".join(run_label(r) for r in loaded))
    return out / "report.md"


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
    """tasks.png (score), groups.png and normalized_average.png (normalized): one bar per run."""
    tasks = sorted({t for r in runs for t in r["tasks"]})
    groups = sorted({g for r in runs for g in r.get("groups", {})})
    series = {
        "tasks": (tasks, [[r["tasks"].get(t, {}).get("score") for t in tasks] for r in runs], "score"),
        "groups": (
            groups,
            [[r.get("groups", {}).get(g, {}).get("normalized") for g in groups] for r in runs],
            "normalized score",
        ),
        "normalized_average": (
            ["normalized average"],
            [[r.get("normalized_average")] for r in runs],
            "normalized score",
        ),
    }
    labels = [run_label(r) for r in runs]
    return [
        charts.bars(
            out / f"{name}.png",
            cats,
            [charts.Series(label, row) for label, row in zip(labels, values)],
            ylabel=ylabel,
        )
        for name, (cats, values, ylabel) in series.items()
        if cats
    ]


def compare(a: str | Path | dict[str, Any], b: str | Path | dict[str, Any]) -> list[dict[str, Any]]:
    """Per shared task: scores A and B with their 95% intervals, B − A with its interval (paired when
    both runs scored the same rows), the paired test's p-value and verdict."""
    run_a, run_b = load_run(a), load_run(b)
    rows = []
    for name in sorted(set(run_a["tasks"]) & set(run_b["tasks"])):
        ta, tb = run_a["tasks"][name], run_b["tasks"][name]
        diff = _task_diff(run_a, run_b, name)
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
    }


def compare_table(
    rows: list[dict[str, Any]], label_a: str = "A", label_b: str = "B", first: str = "task"
) -> Table:
    """The comparison as a Table: A [CI], B [CI], Δ [CI], paired test; significant rows marked."""
    columns = [
        first,
        "metric",
        f"{label_a} [95% CI]",
        f"{label_b} [95% CI]",
        "Δ (B−A) [95% CI]",
        "paired test",
    ]
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
        )
        table.marks.append(sig.mark(diff))
    return table


def compare_markdown(
    rows: list[dict[str, Any]],
    label_a: str = "A",
    label_b: str = "B",
    groups: list[dict[str, Any]] | None = None,
) -> str:
    """The comparison as Markdown: the task table, then the group table when given."""
    tables = [compare_table(rows, label_a, label_b)] + (
        [compare_table(groups, label_a, label_b, "group")] if groups else []
    )
    return "\n".join(t.markdown() for t in tables)


def write_compare(a: str | Path, b: str | Path, out: str | Path) -> tuple[Path, Path]:
    """Write the comparison as Markdown to `out` and as HTML beside it (same name, .html)."""
    run_a, run_b = load_run(a), load_run(b)
    label_a, label_b = run_label(run_a), run_label(run_b)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, groups = compare(run_a, run_b), compare_groups(run_a, run_b)
    average = groups[-1]
    sentence = sig.sentence(_row_difference(average), average["a"], average["b"], "normalized points")
    sections = [
        Section(
            "Summary",
            text=[NOISE_NOTE],
            items=[(f"The normalized average of {label_b} vs {label_a}", sentence)],
        ),
        Section("By task", tables=[compare_table(rows, label_a, label_b)]),
        Section("By group (normalized)", tables=[compare_table(groups, label_a, label_b, "group")]),
        Section("Differences", charts=[("B − A with 95% intervals", _delta_chart(out, rows + groups))]),
        Section("Artifacts", links=_links([run_a, run_b])),
    ]
    title = f"Comparison: {label_b} vs {label_a}"
    out.write_text(render_markdown(title, sections, base=out.parent), encoding="utf-8")
    return out, write_html(out.with_suffix(".html"), title, sections)


def _delta_chart(out: Path, rows: list[dict[str, Any]]) -> Path:
    """A forest plot beside `out`: each row's B − A with its 95% interval; significant ones in colour."""
    return charts.deltas(
        out.with_suffix(".png"),
        [charts.Delta(r["task"], r["delta"], *r["ci95"], r["significant"]) for r in rows],
        xlabel="B − A (points; normalized for groups); colour: significant (paired test)",
    )


def _row_difference(row: dict[str, Any]) -> sig.Difference:
    low, high = row["ci95"]
    return sig.Difference(
        row["delta"], low, high, row.get("p"), row.get("paired_rows", 0), row.get("note", "")
    )
