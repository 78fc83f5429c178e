"""Mixtures: exact caps and one-epoch limits, sub-mixture weights, held-out clusters, determinism, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from instructkit.cli.app import app
from instructkit.data.conversation import CONVERSATION_FEATURES, Conversation
from instructkit.data.mixture import allocate, build_mixture, plan_mixture, select_rows
from instructkit.data.mixture_config import MixtureConfig, SubMixture, load_mixture_config
from instructkit.data.prepared import map_workers
from instructkit.data.tasks import load_catalog, task_rows
from instructkit.errors import BadRowError, InstructkitError

sizes_st = st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 300), min_size=1)


@given(sizes_st, st.integers(1, 200), st.integers(0, 2000))
def test_examples_proportional_respects_caps_and_one_epoch(sizes, cap, total):
    rates = {k: float(min(n, cap)) for k, n in sizes.items()}
    counts = allocate(sizes, rates, total)
    assert all(counts[k] <= sizes[k] for k in sizes)
    assert sum(counts.values()) == min(total, sum(n for n in sizes.values()))


@given(sizes_st, st.integers(1, 200))
def test_default_total_gives_exactly_min_n_cap(sizes, cap):
    rates = {k: float(min(n, cap)) for k, n in sizes.items()}
    counts = allocate(sizes, rates, sum(min(n, cap) for n in sizes.values()))
    assert counts == {k: min(n, cap) for k, n in sizes.items()}


@given(sizes_st, st.dictionaries(st.sampled_from("abcdefgh"), st.floats(0.01, 10)), st.integers(0, 3000))
def test_repeat_reaches_the_total_and_fixed_weights_stay_within_one_epoch(sizes, weights, total):
    rates = {k: weights.get(k, 1.0) for k in sizes}
    no_repeat = allocate(sizes, rates, total)
    assert all(no_repeat[k] <= sizes[k] for k in sizes)
    repeat = allocate(sizes, rates, total, allow_repeat=True)
    assert sum(repeat.values()) == (total if any(sizes.values()) else 0)


@settings(max_examples=30)
@given(st.lists(st.integers(0, 1000), max_size=50, unique=True), st.integers(0, 200), st.integers(0, 99))
def test_selected_rows_cover_whole_epochs_first(pool, count, seed):
    picked = select_rows(seed, "t", pool, count)
    assert len(picked) == (count if pool else 0)
    first_epoch = [i for i, occ in picked if occ == 0]
    assert len(first_epoch) == len(set(first_epoch)) == min(count, len(pool))


def small_config(**kw) -> MixtureConfig:
    base = {
        "name": "t",
        "seed": 7,
        "tasks": [{"cluster": "arithmetic"}, {"cluster": "list_ops"}, {"cluster": "sentiment"}],
        "rate": {"cap": 20},
        "formats": {"zero_shot": 0.5, "few_shot": 0.3, "cot": 0.2},
    }
    return MixtureConfig.model_validate({**base, **kw})


def test_held_out_clusters_never_leak_into_training(tmp_path):
    config = small_config(holdout_clusters=["sentiment"])
    build_mixture(config, tmp_path / "m")
    ds = datasets.load_from_disk(str(tmp_path / "m"))
    catalog = load_catalog()
    assert "sentiment" not in set(ds["cluster"])
    assert not {t for t in ds["task"] if catalog[t].cluster == "sentiment"}
    sentences = {
        r["sentence"] for t in catalog.values() if t.cluster == "sentiment" for r in task_rows(t, "train")
    }
    assert not any(s in m["content"] for row in ds["messages"] for m in row for s in sentences)


def test_counts_caps_stats_and_schema(tmp_path):
    stats = build_mixture(small_config(), tmp_path / "m")
    ds = datasets.load_from_disk(str(tmp_path / "m"))
    assert ds.features == CONVERSATION_FEATURES
    assert len(ds) == stats["rows"] == 10 * 20
    assert all(t["rows"] == min(t["available"], 20) for t in stats["tasks"].values())
    assert json.loads((tmp_path / "m" / "stats.json").read_text()) == stats
    conv = Conversation.from_record(ds[0])
    assert conv.task in stats["tasks"] and conv.format in {"zero_shot", "few_shot", "cot", "few_shot_cot"}
    assert sum(stats["formats"].values()) == len(ds) == sum(stats["templates"].values())


def test_same_seed_is_byte_identical_across_num_proc_and_seed_matters(tmp_path):
    config = small_config(rate={"cap": 60})
    rows = build_mixture(config, tmp_path / "a")["rows"]
    assert map_workers(rows, 2) == 2  # over one batch of rows: two processes really render
    environ = os.environ
    build_mixture(config, tmp_path / "b", num_proc=2)
    assert os.environ is environ  # datasets swaps in a copy under num_proc; the original is put back
    build_mixture(config.model_copy(update={"seed": 8}), tmp_path / "c")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    arrow = "data-00000-of-00001.arrow"
    assert (tmp_path / "a" / arrow).read_bytes() != (tmp_path / "c" / arrow).read_bytes()


def test_sub_mixture_weights_and_total():
    config = MixtureConfig.model_validate(
        {
            "total": 200,
            "mixtures": [
                {"name": "big", "weight": 0.75, "tasks": [{"cluster": "arithmetic"}]},
                {"name": "small", "weight": 0.25, "tasks": [{"cluster": "list_ops"}]},
            ],
        }
    )
    plan = plan_mixture(config)
    by_cluster = {"arithmetic": 0, "list_ops": 0}
    for name, count in plan.counts.items():
        by_cluster[plan.tasks[name].cluster] += count
    assert by_cluster == {"arithmetic": 150, "list_ops": 50}


def test_flan2022_presets():
    weight, rate = SubMixture(name="t0", preset="t0", tasks=["arithmetic_add"]).resolved()
    assert (weight, rate.cap) == (0.32, 20_000)
    assert SubMixture(name="x", preset="niv2", weight=0.5, tasks=["arithmetic_add"]).resolved()[0] == 0.5


def test_eval_only_tasks_are_refused_unless_forced():
    with pytest.raises(InstructkitError, match="evaluation-only"):
        plan_mixture(MixtureConfig.model_validate({"tasks": ["aqua"]}))
    forced = MixtureConfig.model_validate({"tasks": ["arithmetic_add"], "force_eval_only": True})
    assert plan_mixture(forced).counts["arithmetic_add"] > 0


def test_bad_rows_fail_or_are_counted_as_rejects(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"q": "a", "answer": "1"}\n{"q": "b"}\n{"q": "c", "answer": "3"}\n')
    (tmp_path / "t.yaml").write_text(
        "tasks:\n  - {name: mine, cluster: user, source: {files: [rows.jsonl]}, split_fractions: {train: 1.0},\n"
        "     templates: [{id: a, input: '{{ q }}', target: '{{ answer }}'}]}\n"
    )
    config = MixtureConfig.model_validate({"tasks": ["mine"], "catalog": [str(tmp_path)]})
    with pytest.raises(BadRowError, match="rows.jsonl:2: answer"):
        build_mixture(config, tmp_path / "out")
    stats = build_mixture(config.model_copy(update={"on_error": "skip"}), tmp_path / "out")
    assert stats["rejected"] == 1 and stats["rows"] == 2
    assert json.loads((tmp_path / "out" / "rejects.jsonl").read_text())["row"] == 2


def test_mixture_yaml_errors_name_the_file_and_field(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: x\ntasks: [arithmetic_add]\nrate: {scheme: biggest}\n")
    with pytest.raises(InstructkitError, match=r"m.yaml: rate.scheme"):
        load_mixture_config(path)


def test_cli_build_and_tasks_commands(tmp_path: Path):
    path = tmp_path / "m.yaml"
    path.write_text("name: cli\nseed: 1\ntasks: [{cluster: comparison}]\nrate: {cap: 10}\n")
    runner = CliRunner()
    result = runner.invoke(app, ["data", "build", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "compare_larger" in result.output and len(datasets.load_from_disk(str(tmp_path / "out"))) == 30
    listed = runner.invoke(app, ["tasks", "list", "--cluster", "comparison"])
    assert (
        listed.exit_code == 0 and "compare_smaller" in listed.output and "arithmetic_add" not in listed.output
    )
    shown = runner.invoke(app, ["tasks", "show", "string_reverse"])
    assert shown.exit_code == 0 and "rev_inv" in shown.output and "inverted" in shown.output


def test_no_more_worker_processes_than_batches_of_rows():
    assert map_workers(0, 4) is None and map_workers(256, 4) is None
    assert map_workers(257, 4) == 2 and map_workers(10_000, 4) == 4 and map_workers(10_000, 1) is None
