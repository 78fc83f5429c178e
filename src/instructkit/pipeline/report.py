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

from .. import charts
from ..atomic import write_atomic
from ..evaluate import significance as sig
from ..evaluate.eval_report import load_run, warning_lines
from ..evaluate.html_report import Section, Table, render_markdown, write_html
from ..jsonl import read_records

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
PREFERENCES = (
    "Preferences"  # only in a preference-tuning run's report (reward accuracy, judge), before the verdicts
)
PAPER = "Paper vs ours"  # only in a reproduction recipe's report (one with a `paper:` section), last
# The page leads with what the run measured; the Markdown keeps the verdicts last, where `run` prints them.
HTML_ORDER = (
    "Summary",
    PAPER,
    "Evaluation by set",
    PREFERENCES,
    "What improved and what did not",
    "Evaluation by task",
    "Training",
    "Data",
    "Recipe",
    "Artifacts",
)
UNIT = "normalized points"
NOISE = (
    "A score's interval is a 95% bootstrap interval over the evaluated rows. A difference is called "
    f"significant only when a paired sign-flip test over the same rows gives p < {sig.ALPHA}, and its "
    "95% interval is the set of shifts that same test does not reject: it excludes 0 exactly when the "
    "difference is significant. With a dozen rows per task, one row moves a task's score by several points."
)


def write_run_report(recipe, inputs: dict[str, Path], out: Path) -> Path:
    """Write report.md, report.html and charts into `out`, and copies of both pages at the run root."""
    root = out.parent
    tuned = load_run(inputs["eval-tuned"])
    base = load_run(inputs["eval-base"]) if "eval-base" in inputs else None
    losses = _losses(inputs["train"] / "metrics.jsonl")
    sets, tasks = set_rows(base, tuned), task_rows(base, tuned)
    charts = _charts(out, losses, sets, tasks, average_row(base, tuned), tuned)
    sections = build_sections(recipe, root, losses, base, tuned, sets, tasks, charts)
    preferences = preference_section(inputs["eval-tuned"])
    if preferences is not None:  # a DPO run: before the verdicts, where the Markdown keeps them last
        sections.insert(len(sections) - 1, preferences)
    if getattr(recipe, "paper", None) is not None:  # a reproduction recipe: its paper's numbers beside ours
        sections.append(paper_section(recipe, root, sets + tasks + [average_row(base, tuned)]))
    title = f"Run report: {recipe.name}"
    for folder in (out, root):
        write_atomic(folder / "report.md", render_markdown(title, sections, recipe.description, folder))
        page = sorted(sections, key=lambda s: HTML_ORDER.index(s.title))
        write_html(folder / "report.html", title, page, recipe.description.strip())
    return out / "report.md"


def _losses(path: Path) -> list[tuple[int, float]]:
    if not path.is_file():
        return []
    points = []
    for row in read_records(path):
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
    """Per task: base and tuned scores (preferred metric) with intervals, and the paired difference
    with its Holm-adjusted p-value over all the per-task tests."""
    keys, bases, tuneds, diffs = [], [], [], []
    for task, summary in sorted(tuned.get("tasks", {}).items()):
        b = (base or {}).get("tasks", {}).get(task)
        keys.append(task)
        bases.append(_stored(b) if b else None)
        tuneds.append(_stored(summary))
        diffs.append(
            sig.difference(base, tuned, {task: 1.0}, summary["score"] - b["score"], False) if b else None
        )
    return list(zip(keys, bases, tuneds, sig.with_holm(diffs)))


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
    """base [CI] | tuned [CI] | Δ [CI] | paired test (| after Holm, for a family of tests), one row
    each; significant rows marked (after Holm's correction when there is one)."""
    extra = extra or {}
    family = max((d.family for *_, d in rows if d is not None), default=0)
    columns = [first] + (["metric"] if extra else [])
    columns += ["base [95% CI]", "tuned [95% CI]", "Δ [95% CI]", "paired test"]
    columns += [f"after Holm ({family} tests)"] if family else []
    table = Table(columns, [], frozenset(range(1 + bool(extra), 4 + bool(extra))))
    for key, b, t, d in rows:
        cells = [key] + ([extra.get(key, "")] if extra else [])
        cells += [sig.fmt_estimate(b), sig.fmt_estimate(t), sig.fmt_diff(d), sig.fmt_test(d)]
        table.rows.append(cells + ([sig.fmt_holm(d)] if family else []))
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
    noise = NOISE
    summary = [comparison_table([average], "score")]
    by_set = (
        "Normalized score: 100 × (score − random) / (100 − random), averaged over tasks; 0 is chance. "
        "Benchmarks outside the eval sets (e.g. piqa) have a row each."
    )
    metric = {task: s["metric"] for task, s in tuned.get("tasks", {}).items()}
    return [
        Section(
            "Summary",
            text=warning_lines([r for r in (base, tuned) if r]) + _summary_text(losses, average),
            tables=summary,
        ),
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
            text=["Each task's preferred metric (0–100), not normalized."]
            + ([sig.family_note([d for *_, d in tasks])] if base else []),
            tables=[comparison_table(tasks, "task", metric)],
            charts=[("score by task", charts["tasks"])],
        ),
        Section(
            "What improved and what did not",
            text=[] if base else ["No base model was evaluated, so nothing is compared."],
            items=verdicts(sets),
        ),
    ]


def preference_section(tuned_run: Path) -> Section | None:
    """A preference run's own measures: reward accuracy on held-out pairs and the judge's win rate of tuned
    over base, each with its 95% bootstrap interval; None when the run has neither."""
    reward, judge = _json(tuned_run / "reward_accuracy.json"), _json(tuned_run / "judge.json")
    if not reward and not judge:
        return None
    rows, text = [], []
    if reward:
        low, high = reward.get("reward_accuracy_ci95") or (sig.NAN, sig.NAN)
        value = sig.fmt_estimate(sig.Estimate(reward["reward_accuracy"], low, high))
        rows.append(["reward accuracy (held-out pairs)", value, f"{reward['pairs']} pairs"])
        rows.append(["mean reward margin (chosen − rejected)", f"{reward['reward_margin']:.4f}", ""])
        text.append(
            "Reward accuracy: the share of held-out pairs (never trained on) whose implicit DPO reward "
            "β·(log π − log π_ref) is higher for the right answer than for the wrong one; the base scores 0 "
            "(its margins are all 0)."
        )
    if judge:
        low, high = judge["ci95"]
        value = sig.fmt_estimate(sig.Estimate(judge["win_rate"], low, high))
        rows.append([f"judge win rate, tuned over base ({judge['task']})", value, f"{judge['n']} prompts"])
        text.append(
            f"Judge: {judge.get('judge', 'the judge model')} picks the better of the base's and the tuned "
            "model's answer to each prompt, in both orders (a split verdict is a tie, half a win); 50 means "
            "no preference."
        )
        split = sum(item["b_score"] == 0.5 for item in judge.get("items", []))
        text.append(  # a judge that always names one position splits every verdict: 50 says nothing then
            f"{split} of {judge['n']} prompts got a split verdict or none (the judge named the same position "
            "in both orders, or no position)."
        )
    return Section(PREFERENCES, text=text, tables=[Table(["measure", "value [95% CI]", "over"], rows)])


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


def _charts(out: Path, losses, sets: list[Row], tasks: list[Row], average: Row, tuned) -> dict[str, Path]:
    """PNG charts: the loss curve, normalized score per eval set and score per task (one panel per
    eval set), each score with its 95% interval and chance."""
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
    series = _series(sets + tasks)
    drawn["sets"] = charts.save(set_figure(sets, average, series), out / "sets.png")
    drawn["tasks"] = charts.save(task_figure(tasks, tuned, series), out / "tasks.png")
    return drawn


def _series(rows: list[Row]) -> list[str]:
    """'base' and 'tuned', or 'tuned' alone when no base model was evaluated."""
    return ["base", "tuned"] if any(b is not None for _, b, _, _ in rows) else ["tuned"]


def _score_row(row: Row, series: list[str], chance: float, prefix: str = "") -> charts.ScoreRow:
    """A chart row; `prefix` (the panel's eval set, already its title) is cut from the label."""
    key, b, t, _ = row
    estimates = ([b] if "base" in series else []) + [t]
    return charts.ScoreRow(
        key.removeprefix(prefix) if prefix and key != prefix.rstrip("/") else key,
        [e.value if e else None for e in estimates],
        [(e.low, e.high) if e else (sig.NAN, sig.NAN) for e in estimates],
        chance,
    )


def set_figure(sets: list[Row], average: Row, series: list[str]):
    """Normalized score by eval set, then the normalized average; chance is 0 on this scale."""
    xlabel = "normalized score (0 = chance, 100 = perfect), 95% intervals"
    panels = [
        charts.Panel("eval sets and benchmarks", [_score_row(r, series, 0.0) for r in sets], xlabel),
        charts.Panel("overall", [_score_row(average, series, 0.0)], xlabel),
    ]
    return charts.score_figure(panels, series, title="Normalized score by eval set")


def task_figure(tasks: list[Row], tuned: dict[str, Any], series: list[str]):
    """Score by task in small multiples, one panel per eval set (or benchmark group), tasks sorted by
    their change (largest gain on top), named without their eval set's prefix; chance is each task's
    random baseline."""
    summaries = tuned.get("tasks", {})
    by_set: dict[str, list[Row]] = {}
    for row in tasks:
        summary = summaries[row[0]]
        by_set.setdefault(summary.get("cluster") or summary.get("group") or "other", []).append(row)
    xlabel = "score (preferred metric, 0–100), 95% intervals"
    panels = [
        charts.Panel(
            name,
            [
                _score_row(r, series, summaries[r[0]].get("random_baseline"), name.split("/")[0] + "/")
                for r in sorted(rows, key=lambda r: -(r[3].delta if r[3] else r[2].value))
            ],
            xlabel,
        )
        for name, rows in sorted(by_set.items())
    ]
    return charts.score_figure(panels, series, title="Score by task, per eval set")


PAPER_NOTE = (
    "Each row sets a paper's finding, its number and setting, beside the row of this run that measures "
    "it (Δ = tuned − base, with its 95% interval and paired test; eval sets and benchmarks in normalized "
    "points, 0 = chance, a task in its own metric). Our setting is far smaller: the last "
    "column says what that means for the comparison. A result in either direction is reported as measured."
)


def paper_section(recipe, root: Path, rows: list[Row], setting: str | None = None) -> Section:
    """The "Paper vs ours" section: per claim of `recipe.paper`, its number and setting, ours and our
    setting (`setting`, else read from the train stage)."""
    paper = recipe.paper
    ours_setting = setting or our_setting(recipe, root)
    table = Table(
        ["finding (cited)", "paper", "paper's setting", "ours [95% CI]", "our setting", "scale"],
        [],
        frozenset({1, 3}),
    )
    by_key = {key: (b, t, d) for key, b, t, d in rows}
    for claim in paper.shown():
        table.rows.append(
            [
                f"{claim.finding} ({claim.cited})",
                claim.paper_value,
                claim.paper_setting,
                our_value(claim.ours, by_key),
                ours_setting,
                claim.scale,
            ]
        )
        kind, _, key = claim.ours.partition(":")
        d = by_key.get(key, (None, None, None))[2]
        table.marks.append(sig.mark(d) if kind == "delta" else "")
    return Section(PAPER, text=[f"Paper: {paper.title}.", PAPER_NOTE], tables=[table])


def our_value(ours: str, by_key: dict[str, tuple]) -> str:
    """`<row>: <our number>` for `<kind>:<row>`, with its interval (and paired test for Δ); a missing
    row or base score says so instead of showing a number."""
    kind, _, key = ours.partition(":")
    if key not in by_key:
        return f"not measured: this run has no row {key!r}"
    b, t, d = by_key[key]
    if kind == "tuned":
        return f"{key}: tuned {sig.fmt_estimate(t)}"
    if b is None or (kind == "delta" and d is None):
        return f"not measured: no base model score for {key!r}"
    if kind == "base":
        return f"{key}: base {sig.fmt_estimate(b)}"
    return f"{key}: Δ {sig.fmt_diff(d)}, {sig.fmt_test(d)}; base {b.value:.1f} → tuned {t.value:.1f}"


def our_setting(recipe, root: Path) -> str:
    """Model, method, training rows and optimizer steps of this run, read from what the stages wrote."""
    train = recipe.train
    method = f"LoRA r={train.lora_r}" if train.method == "lora" else train.method
    summary = _json(root / "train" / "stage.json").get("summary", {})
    rows = _json(root / "prepare" / "stats.json").get("examples_out")
    parts = [f"{train.model} ({method})"]
    parts += [f"{rows:,} training examples"] if rows is not None else []
    parts += [f"{summary['global_step']} optimizer steps"] if "global_step" in summary else []
    return ", ".join(parts + [f"seed {recipe.seed}"])
