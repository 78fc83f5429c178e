"""`data splits` and `data build` check every task they will read before any work, and find the
data through `--data-dir` (as `eval run` does) from any folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from instructkit.cli.app import app
from instructkit.data.mixture import build_mixture
from instructkit.data.mixture_config import MixtureConfig
from instructkit.data.splits import leave_one_cluster_out
from instructkit.errors import InstructkitError

TASKS = """
defaults: {collection: upfront, metric: exact_match}
tasks:
  - name: alpha_task
    cluster: alpha
    source: {files: [upfront/rows.jsonl]}
    templates: [{id: t1, input: "Say {{ word }}.", target: "{{ word }}"}]
  - name: beta_task
    cluster: beta
    splits: {train: {files: [upfront/rows.jsonl]}}
    templates: [{id: t1, input: "Repeat {{ word }}.", target: "{{ word }}"}]
  - name: gamma_task
    cluster: gamma
    source: {files: [upfront/rows.jsonl]}
    templates: [{id: t1, input: "Echo {{ word }}.", target: "{{ word }}"}]
"""


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A task catalog whose data lives in `tmp_path/data`, and a cwd where nothing is found by default."""
    (tmp_path / "data" / "upfront").mkdir(parents=True)
    rows = "".join(json.dumps({"word": f"w{i}", "answer": f"w{i}"}) + "\n" for i in range(40))
    (tmp_path / "data" / "upfront" / "rows.jsonl").write_text(rows)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "upfront.yaml").write_text(TASKS)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for name in ("INSTRUCTKIT_DATA_ROOT", "INSTRUCTKIT_SHARED_DATA"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _config(root: Path, **extra) -> MixtureConfig:
    return MixtureConfig.model_validate(
        {
            "name": "upfront",
            "catalog": [str(root / "tasks")],
            "tasks": [{"collection": "upfront"}],
            "rate": {"cap": 8},
            **extra,
        }
    )


def test_a_cluster_without_an_eval_split_stops_splits_before_anything_is_written(catalog: Path):
    out = catalog / "loco"
    with pytest.raises(InstructkitError) as caught:
        leave_one_cluster_out(_config(catalog, data_root=str(catalog / "data")), out)
    message = str(caught.value)
    assert "beta_task" in message and "no split 'test'" in message and "holding out beta" in message
    assert "--cluster alpha --cluster gamma" in message  # the splits that could be made
    assert not out.exists()  # the old code built alpha's split first, then failed on beta


def test_every_missing_file_is_named_at_once_and_nothing_is_written(catalog: Path):
    out = catalog / "loco"
    with pytest.raises(InstructkitError) as caught:
        leave_one_cluster_out(_config(catalog), out, clusters=["alpha", "gamma"])
    message = str(caught.value)
    assert "2 of 2 splits cannot be made" in message
    assert "no files match 'upfront/rows.jsonl'" in message and "INSTRUCTKIT_DATA_ROOT" in message
    assert not out.exists()


def test_the_splits_that_can_be_made_are_written(catalog: Path):
    summary = leave_one_cluster_out(
        _config(catalog, data_root=str(catalog / "data")), catalog / "loco", clusters=["alpha", "gamma"]
    )
    assert set(summary["splits"]) == {"alpha", "gamma"}
    assert summary["splits"]["alpha"]["eval_tasks"] == ["alpha_task"]
    assert "alpha_task" not in summary["splits"]["alpha"]["train_tasks"]


def _said(result) -> str:
    """What a command printed, plus the error it stopped with (the app raises it; `main` prints it)."""
    return result.output + str(result.exception or "")


def test_data_build_and_splits_take_data_dir_like_eval_run(catalog: Path):
    mixture = catalog / "mix.yaml"
    mixture.write_text(
        f"name: upfront\ncatalog: [{catalog / 'tasks'}]\ntasks: [{{collection: upfront}}]\nrate: {{cap: 8}}\n"
    )
    runner = CliRunner()
    lost = runner.invoke(app, ["data", "build", str(mixture), "--out", "mix"])
    assert lost.exit_code != 0 and "no files match 'upfront/rows.jsonl'" in _said(lost)
    data = str(catalog / "data")
    built = runner.invoke(app, ["data", "build", str(mixture), "--out", "mix", "--data-dir", data])
    assert built.exit_code == 0, built.output
    assert json.loads(Path("mix/stats.json").read_text())["rows"] == 24
    split = runner.invoke(
        app, ["data", "splits", str(mixture), "--out", "loco", "--cluster", "gamma", "--data-dir", data]
    )
    assert split.exit_code == 0, split.output
    assert json.loads(Path("loco/splits.json").read_text())["splits"]["gamma"]["eval_rows"] == 4
    refused = runner.invoke(
        app, ["data", "splits", str(mixture), "--out", "all", "--leave-one-cluster-out", "--data-dir", data]
    )
    assert refused.exit_code != 0 and "beta_task" in _said(refused) and not Path("all").exists()


def test_build_checks_its_decontamination_sets_before_reading_any_rows(catalog: Path):
    config = _config(
        catalog,
        data_root=str(catalog / "data"),
        tasks=[{"name": "alpha_task"}],
        decontaminate={"eval_sets": ["beta_task"], "n": 3},
    )
    with pytest.raises(InstructkitError, match="beta_task.*no split 'test'"):
        build_mixture(config, catalog / "mix")
    assert not (catalog / "mix").exists()
