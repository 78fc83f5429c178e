"""The reproduction recipes (issue 24): their `paper:` section is validated against what the run
measures, each sweep arm shows its own claims, and the report's "Paper vs ours" table sets the
paper's number beside ours. The slow tests run the tiny versions end to end through `instructkit run`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from helpers.report_runs import BASE, TUNED, write_eval_run
from instructkit.cli.app import app
from instructkit.errors import InstructkitError
from instructkit.evaluate.eval_report import load_run
from instructkit.pipeline.recipe import RECIPES_DIR, load_recipe, sweep_recipes
from instructkit.pipeline.report import average_row, paper_section, set_rows, task_rows

RECIPES = ("flan-heldout-smollm2", "flan2022-cot-smollm2")


@pytest.mark.parametrize("name", RECIPES)
def test_each_arm_shows_its_own_claims_on_rows_it_measures(name):
    recipe, path = load_recipe(name)
    arms = sweep_recipes(recipe, path)
    assert len(arms) == 2 and recipe.seed == 0 and recipe.train.seed == 0
    shown = {label: [(c.finding, c.ours) for c in arm.paper.shown()] for label, arm in arms}
    # each arm has a claim the other does not show (its own held-out cluster or CoT direction)
    first, second = (set(v) for v in shown.values())
    assert first != second and all(len(v) >= 2 for v in shown.values())
    for _, arm in arms:
        assert arm.paper.arm in {label for label, _ in arms}
        assert all(c.paper_value and c.paper_setting and c.scale and c.cited for c in arm.paper.shown())


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _raw(name: str) -> dict:
    return yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text())


def test_a_claim_on_an_eval_row_the_run_does_not_measure_is_refused(tmp_path):
    raw = _raw("flan-heldout-smollm2")
    raw["paper"]["claims"][2]["ours"] = "delta:heldin_control/5-shot"  # the set runs 0-shot only
    with pytest.raises(InstructkitError, match=r"paper.claims\[\d\].ours.*no such eval row"):
        load_recipe(_write(tmp_path, raw))


def test_a_delta_claim_without_the_base_model_is_refused(tmp_path):
    raw = _raw("flan-heldout-smollm2")
    raw["evaluate"]["compare_base"] = False
    with pytest.raises(InstructkitError, match="compare_base"):
        load_recipe(_write(tmp_path, raw))


def test_a_claim_kind_outside_delta_tuned_base_is_refused(tmp_path):
    raw = _raw("flan-heldout-smollm2")
    raw["paper"]["claims"][0]["ours"] = "gain:paraphrase_identification/0-shot"
    with pytest.raises(InstructkitError, match="delta, tuned, base"):
        load_recipe(_write(tmp_path, raw))


def test_paper_table_sets_the_papers_number_beside_ours_and_names_a_missing_row(tmp_path):
    base = load_run(write_eval_run(tmp_path / "base", BASE))
    tuned = load_run(write_eval_run(tmp_path / "tuned", TUNED))
    rows = set_rows(base, tuned) + task_rows(base, tuned) + [average_row(base, tuned)]
    raw = _raw("flan-heldout-smollm2")
    raw["paper"]["arm"] = "pi-out"
    raw["paper"]["claims"][0]["ours"] = "delta:heldout_cluster/0-shot"  # a row of the fixture runs
    raw["evaluate"]["sets"].append({"name": "heldout_cluster", "clusters": ["comparison"]})
    recipe, _ = load_recipe(_write(tmp_path, raw))
    section = paper_section(recipe, tmp_path, rows)
    table = section.tables[0]
    assert section.title == "Paper vs ours" and len(table.rows) == 2  # pi-out claim + control
    measured, control = table.rows
    base_score = next(b for key, b, _, _ in rows if key == "heldout_cluster/0-shot")
    assert measured[1].startswith("hurts held-out clusters at 422M")  # the paper's number
    assert (
        measured[3].startswith("heldout_cluster/0-shot: Δ +")
        and "p=" in measured[3]
        and f"base {base_score.value:.1f}" in measured[3]
    )
    assert "pretrained:smollm2-135m-instruct (LoRA r=8)" in measured[4] and "seed 0" in measured[4]
    assert control[3] == "not measured: this run has no row 'heldin_control/0-shot'"


def _cli(*sets: str) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


TINY = (
    "sweep=null",
    "train.model=tiny:nano",
    "train.method=full",
    "train.max_steps=2",
    "train.micro_batch_size=1",
    "mixture.rate.cap=3",
    "prepare.max_length=256",
)


def _run_tiny(name: str, tmp_path: Path, *extra: str) -> str:
    args = ["run", name, *_cli(f"runs_dir={tmp_path}", *TINY, *extra)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = (tmp_path / name / "report.md").read_text()
    assert (
        "## Paper vs ours" in report and "Paper vs ours</h2>" in (tmp_path / name / "report.html").read_text()
    )
    return report[report.index("## Paper vs ours") :]


def _paper_rows(section: str) -> list[list[str]]:
    lines = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


@pytest.mark.slow
def test_flan_heldout_tiny_run_reports_paper_and_ours(tmp_path):
    section = _run_tiny(
        "flan-heldout-smollm2",
        tmp_path,
        "paper.arm=mcqa-out",
        "mixture.holdout_clusters=[multiple_choice_qa]",
        "evaluate.sets.0.limit=1",
        "evaluate.sets.1.limit=1",
        "evaluate.sets.2.limit=1",
    )
    rows = _paper_rows(section)
    assert len(rows) == 2  # this arm's held-out cluster, then the control
    assert rows[0][3].startswith("multiple_choice_qa/0-shot: Δ ")
    assert rows[1][3].startswith("heldin_control/0-shot: Δ ")
    for row in rows:
        assert row[1] and row[1] != "–"  # the paper's number
        assert "base " in row[3] and "tuned " in row[3] and "p=" in row[3]  # ours, measured
        assert "tiny:nano (full), " in row[4] and "2 optimizer steps" in row[4]


@pytest.mark.slow
def test_flan2022_cot_tiny_run_reports_paper_and_ours(tmp_path):
    section = _run_tiny(
        "flan2022-cot-smollm2",
        tmp_path,
        "paper.arm=with-cot",
        "mixture.formats.zero_shot=0.0",
        "mixture.formats.cot=1.0",
        "mixture.tasks.1.cap=3",
        "evaluate.benchmark_limit=1",
        "evaluate.sets.0.limit=1",
        "evaluate.sets.1.limit=1",
    )
    rows = _paper_rows(section)
    findings = [r[0] for r in rows]
    assert len(rows) == 3 and findings[2].startswith("direct (non-CoT) answers stay intact")
    assert all(f.startswith("mixing CoT rationales in keeps or improves") for f in findings[:2])
    for row in rows:
        assert row[1] and ": Δ " in row[3] and "2 optimizer steps" in row[4]


@pytest.mark.parametrize("arm", ["pi_out", None])
def test_a_run_outside_the_sweep_must_name_a_known_arm(tmp_path, arm):
    raw = _raw("flan-heldout-smollm2")
    raw.pop("sweep")
    raw["paper"]["arm"] = arm  # a typo, or no arm: that arm's claim would silently drop out
    with pytest.raises(
        InstructkitError, match=r"paper.arm .*give one of the claims' arms \(mcqa-out, pi-out\)"
    ):
        load_recipe(_write(tmp_path, raw))
