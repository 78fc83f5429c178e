"""The shipped `flan-t5-cpu` recipe, shrunk with `--set`, runs end to end on a tiny T5: mixture →
(input, target) pairs → packed training → base and tuned evaluation through the encoder-decoder
backend → the HTML report."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from instructkit.cli.app import app

SMALL = {
    "mixture.rate.cap": "20",
    "mixture.tasks": "[{cluster: arithmetic}, {cluster: list_ops}, {cluster: comparison}]",
    "prepare.tokenizer": "tiny:t5-nano",
    "train.model": "tiny:t5-nano",
    "train.epochs": "1",
    "train.progress": "false",
    "evaluate.sets": "[{name: heldout_rows, tasks: ['@train'], templates: train, limit: 2},"
    " {name: heldout_cluster, clusters: [comparison], limit: 3, k_shot: [0, 1]}]",
}


@pytest.mark.slow
def test_flan_t5_cpu_recipe_runs_end_to_end(tmp_path):
    sets = [
        arg
        for key, value in {**SMALL, "runs_dir": str(tmp_path)}.items()
        for arg in ("--set", f"{key}={value}")
    ]
    result = CliRunner().invoke(app, ["run", "flan-t5-cpu", *sets])
    assert result.exit_code == 0, result.output
    root = tmp_path / "flan-t5-cpu"
    assert json.loads((root / "train" / "config.json").read_text())["is_encoder_decoder"] is True
    assert json.loads((root / "prepare" / "prepare.json").read_text())["model_kind"] == "seq2seq"
    for which in ("eval-base", "eval-tuned"):
        results = json.loads((root / which / "results.json").read_text())
        assert {"heldout_rows/0-shot", "heldout_cluster/0-shot", "heldout_cluster/1-shot"} <= set(
            results["clusters"]
        )
        assert results["tasks"]
    assert (root / "report.html").stat().st_size > 1000
