"""The `ipt-synthesizer-smollm2` recipe (issue 24, part 1): a synthesizer tuned from a named model on
P3/T0 context tasks, base vs tuned response F1 on held-out texts of seen and unseen datasets, the
corpus of pairs it writes for raw text, and the paper's numbers beside ours. The tiny version swaps
in `tiny:nano`, three sources, a few rows and two steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.paths import SHARED_DATA
from instructkit.cli.app import app
from instructkit.errors import InstructkitError
from instructkit.pipeline.recipe import load_recipe
from instructkit.synth.config import SynthesizerTraining
from instructkit.synth.task_rows import read_task_rows
from instructkit.synth.trained_synthesizer import split_unseen

NAME = "ipt-synthesizer-smollm2"
P3 = SHARED_DATA / "p3_t0_subset"
S = "corpus.synthesizer_training"
needs_data = pytest.mark.skipif(not P3.is_dir(), reason="needs ../shared/data/p3_t0_subset")


def _sources() -> list[str]:
    names = (
        "adversarial_qa_dbert_based_on",
        "adversarial_qa_dbert_answer_the_following_q",
        "quoref_Find_Answer",
    )
    return [str(P3 / f"{n}.jsonl") for n in names]


TINY = (
    f"{S}.model=tiny:nano",
    f"{S}.sources={json.dumps(_sources())}",
    f"{S}.unseen=[quoref]",
    f"{S}.max_length=512",
    f"{S}.max_steps=2",
    f"{S}.eval_rows=3",
    f"{S}.pair_texts=2",
    f"{S}.pair_max_new_tokens=16",
    f"{S}.max_new_tokens=8",
    f"{S}.max_model_len=512",
    f"corpus.raw={SHARED_DATA / 'raw_text' / 'wikitext-2_test_paragraphs.jsonl'}",
    "corpus.texts=3",
    "corpus.max_model_len=256",
)


def _args(tmp_path: Path, *extra: str) -> list[str]:
    sets = [f"runs_dir={tmp_path}", *TINY, *extra]
    return ["run", NAME, *[a for s in sets for a in ("--set", s)]]


def test_the_shipped_recipe_tunes_smollm2_and_holds_datasets_out_whole():
    recipe, _ = load_recipe(NAME)
    spec = recipe.corpus.synthesizer_training
    assert recipe.corpus.synthesizer == "trained" and recipe.train is None
    assert spec.model == "pretrained:smollm2-135m-instruct" and spec.max_shots > 1  # one- and few-shot rows
    assert set(spec.unseen) == {"quoref", "quarel"}
    assert {c.ours for c in recipe.paper.claims} == {"delta:seen", "delta:unseen"}


def test_trained_synthesizer_needs_its_training_section():
    with pytest.raises(InstructkitError, match="synthesizer_training"):
        load_recipe(NAME, {f"{S}": None})


@needs_data
def test_templates_of_one_dataset_are_one_dataset_so_a_passage_is_held_out_everywhere():
    """clusters.json names the dataset of each template file: both adversarial_qa templates share
    passages, and as one dataset a held-out passage cannot be trained on under the other template."""
    a, b, _ = _sources()
    rows_a, rows_b = read_task_rows(a), read_task_rows(b)
    assert {r["dataset"] for r in rows_a + rows_b} == {"adversarial_qa (dbert)"}
    assert {r["context"] for r in rows_a} & {r["context"] for r in rows_b}  # shared passages


@needs_data
def test_an_unseen_dataset_no_source_holds_is_refused():
    rows = [r for s in _sources() for r in read_task_rows(s)]
    seen, unseen = split_unseen(rows, ["quoref"], _sources())
    assert {r["dataset"] for r in unseen} == {"quoref"} and "quoref" not in {r["dataset"] for r in seen}
    with pytest.raises(InstructkitError, match=r"unseen \['squad'\].*datasets: adversarial_qa"):
        split_unseen(rows, ["squad"], _sources())
    assert SynthesizerTraining(model="tiny:nano", sources=_sources()).unseen == []


def test_dry_run_prints_the_synthesizer_plan(tmp_path):
    result = CliRunner().invoke(app, [*_args(tmp_path), "--dry-run"])
    assert result.exit_code == 0, result.output
    for stage in ("synthesizer", "corpus", "prepare", "report"):
        assert stage in result.output
    assert "tune tiny:nano (full), 2 steps" in result.output and "unseen: quoref" in result.output
    assert not (tmp_path / NAME).exists()


@needs_data
@pytest.mark.slow
def test_tiny_run_reports_base_and_tuned_on_seen_and_unseen_and_pairs_per_text(tmp_path):
    result = CliRunner().invoke(app, _args(tmp_path))
    assert result.exit_code == 0, result.output
    root = tmp_path / NAME
    for stage in ("synthesizer", "corpus", "prepare", "report"):
        assert (root / stage / "stage.json").is_file(), stage
    data = json.loads((root / "synthesizer" / "synth_eval.json").read_text())
    assert data["seen_datasets"] == ["adversarial_qa (dbert)"] and data["unseen_datasets"] == ["quoref"]
    assert len(data["base"]["row_f1"]) == len(data["tuned"]["row_f1"]) == len(data["rows"]) == 6
    # each passage of the seen dataset is one example, trained on or held out, never both (under
    # file-stem datasets a passage shared by two templates would count, and could land, twice)
    stats = json.loads((root / "synthesizer/synth_data/stats.json").read_text())
    passages = {r["context"] for s in _sources()[:2] for r in read_task_rows(s)}
    assert stats["examples"] + stats["held_out_examples"] + stats["dropped_overlong"] == len(passages)
    assert stats["held_out_examples"] > 0 and stats["examples"] > 0
    report = (root / "report.md").read_text()
    table = report[report.index("## Response F1") :]
    for row in ("| adversarial_qa (dbert) (seen) |", "| quoref (unseen) |", "| seen |", "| unseen |"):
        assert row in table
    paper = report[report.index("## Paper vs ours") : report.index("## Response F1")]
    assert "seen: Δ " in paper and "unseen: Δ " in paper and "p=" in paper
    assert "Mistral-7B" in paper and "tiny:nano (full)" in paper and "2 steps" in paper
    corpus = report[report.index("## Corpus") :].splitlines()
    cells = next(line for line in corpus if line.startswith("| 3 |")).strip("|").split("|")
    generated = json.loads((root / "corpus" / "stage.json").read_text())["summary"]["generate"]
    assert generated["texts"] == 3 and cells[1].strip() == f"{generated['pairs_per_text']:g}"
    assert "Paper vs ours</h2>" in (root / "report.html").read_text()
