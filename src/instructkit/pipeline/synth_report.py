"""The run report of a synthesizer recipe (`corpus.synthesizer: trained`, no `train`): base vs tuned
response F1 per dataset and averaged over seen / unseen datasets (Instruction Pre-Training's
synthesizer evaluation), the pairs each model writes freely, the pairs per raw text of the corpus,
and the paper's numbers beside ours.

F1 is in points (0–100); an average over datasets is their macro average, its interval a bootstrap
over rows within each dataset, and base vs tuned a paired sign-flip test over the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..atomic import write_atomic
from ..evaluate import significance as sig
from ..evaluate.html_report import Section, Table, render_markdown, write_html
from ..evaluate.metrics import percentile_interval, sign_flip_test, stratified_bootstrap
from .report import PAPER, Row, comparison_table, paper_section

EVAL_FILE = "synth_eval.json"  # what stage `synthesizer` writes (`synth.trained_synthesizer.EVAL_FILE`)
AVERAGES = ("seen", "unseen", "all")  # the rows a paper claim can name besides a dataset
ORDER = ("Summary", PAPER, "Response F1", "Pairs written", "Corpus", "Recipe", "Artifacts")


def write_synthesizer_report(recipe, inputs: dict[str, Path], out: Path) -> Path:
    """Write report.md and report.html into `out` and the run root; returns report.md."""
    root = out.parent
    data = json.loads((inputs["synthesizer"] / EVAL_FILE).read_text(encoding="utf-8"))
    corpus = _summary(inputs["corpus"])
    rows = synthesizer_rows(data)
    sections = [
        Section("Summary", text=_summary_text(rows)),
        Section("Response F1", text=[F1_NOTE], tables=[comparison_table(rows, "datasets")]),
        Section("Pairs written", text=[PAIRS_NOTE], tables=[pairs_table(data)]),
        Section("Corpus", text=[CORPUS_NOTE], tables=[corpus_table(corpus)]),
        Section(
            "Recipe",
            code=yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False),
            code_label="the recipe as run, every field resolved (YAML)",
        ),
        Section("Artifacts", links=[(label, p) for label, p in _artifacts(root) if p.exists()]),
    ]
    if recipe.paper is not None:
        sections.append(paper_section(recipe, root, rows, setting=our_setting(recipe, inputs)))
    sections.sort(key=lambda s: ORDER.index(s.title))
    title = f"Run report: {recipe.name}"
    for folder in (out, root):
        write_atomic(folder / "report.md", render_markdown(title, sections, recipe.description, folder))
        write_html(folder / "report.html", title, sections, recipe.description.strip())
    return out / "report.md"


F1_NOTE = (
    "Response F1 (points): each model reads a held-out text and the gold instruction and writes the "
    "response, scored by token F1 against the gold response; per dataset, then the macro average over "
    "the datasets seen in tuning (their held-out texts) and over the unseen datasets (held out whole). "
    "Base is the untuned model with the same prompt. A difference is significant only when a paired "
    f"sign-flip test over the same rows gives p < {sig.ALPHA}."
)
PAIRS_NOTE = (
    "Free generation on held-out texts: pairs per text, the share of texts with at least one parsed pair, "
    "the parse-failure rate (dropped pieces / all pieces) and the share of responses found in the text."
)
CORPUS_NOTE = (
    "The tuned synthesizer's pairs for the raw texts (multi-round chains), as parsed into the corpus."
)


def synthesizer_rows(data: dict[str, Any]) -> list[Row]:
    """Per dataset (seen first), then the seen / unseen / all macro averages: base and tuned F1 with
    intervals, and tuned − base with the paired test."""
    by_dataset: dict[str, list[int]] = {}
    for i, row in enumerate(data["rows"]):
        by_dataset.setdefault(row["dataset"], []).append(i)
    seen = [d for d in sorted(by_dataset) if d in data["seen_datasets"]]
    unseen = [d for d in sorted(by_dataset) if d not in data["seen_datasets"]]
    keyed = [(f"{d} (seen)", [d]) for d in seen] + [(f"{d} (unseen)", [d]) for d in unseen]
    keyed += [("seen", seen), ("unseen", unseen), ("all", seen + unseen)]
    return [
        _row(key, [by_dataset[d] for d in names], data["base"]["row_f1"], data["tuned"]["row_f1"])
        for key, names in keyed
        if names
    ]


def _row(key: str, groups: list[list[int]], base: list[float], tuned: list[float]) -> Row:
    """Macro average over `groups` (row indices per dataset) of both models, in points (0–100 per row)."""
    coefs = [1.0 / len(groups)] * len(groups)
    b = [[100.0 * base[i] for i in g] for g in groups]
    t = [[100.0 * tuned[i] for i in g] for g in groups]
    diffs = [[y - x for x, y in zip(bg, tg)] for bg, tg in zip(b, t)]
    p = sign_flip_test(diffs, coefs)
    low, high = sig.inverted_interval(diffs, coefs, p)
    b_est, t_est = _estimate(b, coefs), _estimate(t, coefs)
    diff = sig.Difference(t_est.value - b_est.value, low, high, p, sum(len(d) for d in diffs))
    return (key, b_est, t_est, diff)


def _estimate(groups: list[list[float]], coefs: list[float]) -> sig.Estimate:
    value = sum(c * sum(g) / len(g) for c, g in zip(coefs, groups))
    low, high = percentile_interval(stratified_bootstrap(groups, coefs, sig.RESAMPLES, seed=0))
    return sig.Estimate(value, low, high)


PAIR_COLUMNS = (
    ("texts", "texts"),
    ("pairs_per_text", "pairs per text"),
    ("parsed_share", "texts with a pair"),
    ("parse_failure_rate", "parse-failure rate"),
    ("answer_in_context_share", "responses found in the text"),
)


def pairs_table(data: dict[str, Any]) -> Table:
    """Pair statistics of free generation, base and tuned."""
    table = Table(["model"] + [label for _, label in PAIR_COLUMNS], [], frozenset(range(1, 6)))
    for name in ("base", "tuned"):
        table.rows.append([name] + _pair_cells(data[name]["pair_statistics"]))
    return table


def corpus_table(corpus: dict[str, Any]) -> Table:
    """Pairs per raw text the tuned synthesizer wrote, as the corpus stage parsed them."""
    stats = corpus.get("generate") or {}
    table = Table(["raw texts"] + [label for _, label in PAIR_COLUMNS[1:]], [], frozenset(range(5)))
    if stats:
        table.rows.append(_pair_cells(stats))
    return table


def pair_counts(stats: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one pair-statistics record that the report shows (texts, pairs per text, ...)."""
    texts = stats.get("texts", 0)
    parsed = (texts - stats.get("texts_without_pairs", 0)) / texts if texts else 0.0
    return {**stats, "parsed_share": round(parsed, 4)}


def _pair_cells(stats: dict[str, Any]) -> list[str]:
    counts = pair_counts(stats)
    cells = []
    for key, _ in PAIR_COLUMNS:
        value = counts.get(key, 0)
        cells.append(f"{value:.1%}" if key.endswith(("rate", "share")) else f"{value:g}")
    return cells


def _summary_text(rows: list[Row]) -> list[str]:
    lines = []
    for key, b, t, d in rows:
        if key in AVERAGES[:2]:
            lines.append(
                f"Response F1 on {key} datasets: base {sig.fmt_estimate(b)} → tuned {sig.fmt_estimate(t)}; "
                f"Δ {sig.fmt_diff(d)}, {sig.fmt_test(d)}."
            )
    return lines


def our_setting(recipe, inputs: dict[str, Path]) -> str:
    """The tuned model, method, training rows and steps, read from what stage `synthesizer` wrote."""
    spec = recipe.corpus.synthesizer_training
    stats = _json(inputs["synthesizer"] / "synth_data" / "stats.json")
    parts = [f"{spec.model} ({spec.method})", f"{stats.get('examples', '?')} training texts"]
    parts += [f"{stats.get('rows', '?')} few-shot rows (≤{spec.max_shots} shots)", f"{spec.max_steps} steps"]
    return ", ".join(parts + [f"seed {recipe.seed}"])


def _summary(stage_dir: Path) -> dict[str, Any]:
    return _json(stage_dir / "stage.json").get("summary", {})


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _artifacts(root: Path) -> list[tuple[str, Path]]:
    return [
        ("synthesizer evaluation (per-row F1, pair statistics)", root / "synthesizer" / EVAL_FILE),
        ("synthesizer training data statistics", root / "synthesizer" / "synth_data" / "stats.json"),
        ("tuned synthesizer", root / "synthesizer" / "synthesizer"),
        ("synthesized pairs for the raw texts", root / "corpus" / "pairs"),
        ("instruction-augmented corpus", root / "corpus" / "corpus"),
    ]
