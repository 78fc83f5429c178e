"""`synth generate --executor ray` on a local 2-CPU Ray cluster: the same shard files, byte for byte."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'instructkit[ray]'")

from instructkit.executors.ray_synth import generate_pairs_ray  # noqa: E402
from instructkit.synth.generate import GenerateConfig, generate_pairs  # noqa: E402
from instructkit.synth.shards import shard_path  # noqa: E402


@pytest.fixture(scope="module")
def synth_dir(saved_tiny_model):
    return saved_tiny_model


@pytest.fixture(scope="module")
def raw_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("raw") / "raw.jsonl"
    rows = [
        {"text": f"Paragraph {i}: Ünïcode Alice bought {i} apples at the market.", "title": f"doc{i // 3}"}
        for i in range(10)
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _cfg(synth_dir, raw_file, out, **kw) -> GenerateConfig:
    base = dict(
        model=str(synth_dir),
        input=str(raw_file),
        out=str(out),
        group_field="title",
        rounds=2,
        max_model_len=96,
        max_new_tokens=12,
        shard_size=3,
        batch_size=4,
        num_workers=2,
    )
    return GenerateConfig(**{**base, **kw})


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "shards").iterdir())}


def test_ray_shards_are_byte_identical_and_resume(local_ray, synth_dir, raw_file, tmp_path):
    local = generate_pairs(_cfg(synth_dir, raw_file, tmp_path / "local", num_workers=1))
    first = generate_pairs_ray(_cfg(synth_dir, raw_file, tmp_path / "ray", max_shards=1))
    assert (first["shards_generated"], first["complete"]) == (1, False)
    kept = shard_path(tmp_path / "ray", 0)
    stamp = kept.stat().st_mtime_ns

    second = generate_pairs_ray(_cfg(synth_dir, raw_file, tmp_path / "ray"))
    assert (second["shards_skipped"], second["shards_generated"], second["complete"]) == (1, 3, True)
    assert kept.stat().st_mtime_ns == stamp  # a finished shard is never rewritten
    assert len(_files(tmp_path / "local")) == local["shards"] == 4
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")
    assert {k: v for k, v in second.items() if not k.startswith("shards_")} == {
        k: v for k, v in local.items() if not k.startswith("shards_")
    }
