"""`synth generate` with a tiny real model: shards written atomically, resume skips finished shards."""

from __future__ import annotations

import json

import pytest

from instructkit.errors import InstructkitError
from instructkit.synth.generate import GenerateConfig, generate_pairs
from instructkit.synth.parser import REASONS
from instructkit.synth.shards import finished_records, plan_shards, shard_path


@pytest.fixture(scope="module")
def synth_dir(saved_tiny_model):
    return saved_tiny_model


@pytest.fixture(scope="module")
def raw_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("raw") / "raw.jsonl"
    rows = [
        {"text": f"Paragraph {i}: Alice went to the market and bought {i} apples.", "title": f"doc{i // 3}"}
        for i in range(10)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(synth_dir, raw_file, out, **kw) -> GenerateConfig:
    base = dict(
        model=str(synth_dir),
        input=str(raw_file),
        out=str(out),
        rounds=2,
        max_model_len=96,
        max_new_tokens=12,
        shard_size=4,
        batch_size=4,
    )
    return GenerateConfig(**{**base, **kw})


def test_shards_group_whole_chains():
    shards = plan_shards([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]], shard_size=4)
    assert [(s.first_chain, s.last_chain) for s in shards] == [(0, 2), (2, 4), (4, 5)]


def test_partial_run_then_resume_skips_finished_shards(synth_dir, raw_file, tmp_path):
    first = generate_pairs(_cfg(synth_dir, raw_file, tmp_path, max_shards=1))
    assert (first["shards"], first["shards_generated"], first["complete"]) == (3, 1, False)
    done = shard_path(tmp_path, 0)
    stamp, content = done.stat().st_mtime_ns, done.read_text()

    second = generate_pairs(_cfg(synth_dir, raw_file, tmp_path))
    assert (second["shards_skipped"], second["shards_generated"], second["complete"]) == (1, 2, True)
    assert done.stat().st_mtime_ns == stamp and done.read_text() == content
    assert [r["id"] for r in finished_records(tmp_path)] == list(range(10))
    assert not [p for p in (tmp_path / "shards").iterdir() if p.name.endswith(".tmp")]

    third = generate_pairs(_cfg(synth_dir, raw_file, tmp_path))
    assert (third["shards_skipped"], third["shards_generated"]) == (3, 0)


def test_records_respect_budget_and_rounds(synth_dir, raw_file, tmp_path):
    cfg = _cfg(synth_dir, raw_file, tmp_path, group_field="title")
    summary = generate_pairs(cfg)
    records = finished_records(tmp_path)
    assert summary["texts"] == len(records) == 10
    for r in records:
        assert r["prompt_tokens"] <= cfg.budget
        assert r["prefix_rounds"] <= r["round"] <= 1
        assert set(r["failures"]) <= set(REASONS)
    # title groups doc0 = texts 0-2: chains [0, 1], [2]; doc1 = 3-5: [3, 4], [5]
    assert [r["round"] for r in records[:6]] == [0, 1, 0, 0, 1, 0]


def test_rerun_with_other_settings_is_refused(synth_dir, raw_file, tmp_path):
    generate_pairs(_cfg(synth_dir, raw_file, tmp_path, max_shards=1))
    with pytest.raises(InstructkitError, match="rounds"):
        generate_pairs(_cfg(synth_dir, raw_file, tmp_path, rounds=3))


@pytest.mark.slow
def test_two_worker_processes_write_the_same_shards(synth_dir, raw_file, tmp_path):
    generate_pairs(_cfg(synth_dir, raw_file, tmp_path / "one"))
    generate_pairs(_cfg(synth_dir, raw_file, tmp_path / "two", num_workers=2))
    for i in range(3):
        assert shard_path(tmp_path / "one", i).read_text() == shard_path(tmp_path / "two", i).read_text()
