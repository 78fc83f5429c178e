"""`eval run --executor ray` on a local 2-CPU Ray cluster: the results and cache of a single-process run."""

from __future__ import annotations

import functools
import json
import sqlite3
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'instructkit[ray]'")

from helpers.paths import FIXTURES_ROOT  # noqa: E402
from instructkit.evaluate.backends.load import load_backend  # noqa: E402
from instructkit.evaluate.config import EvalConfig  # noqa: E402
from instructkit.evaluate.runner import evaluate  # noqa: E402
from instructkit.executors.ray_eval import ray_backend  # noqa: E402

FIXTURES = FIXTURES_ROOT / "eval"
TASKS = ["boolq", "hellaswag", "arc", "tydiqa:max_new_tokens=6", "mmlu:num_fewshot=2"]


@pytest.fixture(scope="module")
def model_dir(saved_tiny_model):
    return str(saved_tiny_model)


def _run(backend, out: Path, deterministic: bool) -> dict:
    config = EvalConfig(tasks=TASKS, data_dir=str(FIXTURES), batch_size=4, deterministic=deterministic)
    evaluate(backend, config=config, out_dir=out)
    results = json.loads((out / "results.json").read_text())
    results.pop("started")
    with sqlite3.connect(out / "cache.sqlite") as db:
        cache = sorted(db.execute("SELECT model, key, value FROM results"))
    samples = {p.name: p.read_bytes() for p in sorted((out / "samples").iterdir())}
    return {"results": results, "cache": cache, "samples": samples}


def _evaluate_both(model_dir, tmp_path, deterministic: bool) -> tuple[dict, dict]:
    factory = functools.partial(load_backend, "hf", model_dir, batch_size=4, deterministic=deterministic)
    local = _run(factory(), tmp_path / "local", deterministic)
    pool = ray_backend(factory, actors=2)
    try:
        on_ray = _run(pool, tmp_path / "ray", deterministic)
    finally:
        pool.close()
    assert len(local["cache"]) > 20 and len(local["samples"]) >= 5
    return local, on_ray


def test_deterministic_ray_run_is_bit_identical(local_ray, model_dir, tmp_path):
    local, on_ray = _evaluate_both(model_dir, tmp_path, deterministic=True)
    assert on_ray["cache"] == local["cache"]
    assert on_ray["samples"] == local["samples"]
    assert on_ray["results"] == local["results"]


def _floats_apart(value):
    """(the value with every float replaced by 0.0, the floats in order)."""
    if isinstance(value, float):
        return 0.0, [value]
    if isinstance(value, dict):
        parts = {k: _floats_apart(v) for k, v in sorted(value.items())}
        return {k: p[0] for k, p in parts.items()}, [f for p in parts.values() for f in p[1]]
    if isinstance(value, list):
        parts = [_floats_apart(v) for v in value]
        return [p[0] for p in parts], [f for p in parts for f in p[1]]
    return value, []


def test_batched_ray_run_differs_only_by_float_rounding(local_ray, model_dir, tmp_path):
    """Slices batch differently from one process: same keys, texts, predictions; log-probs to 1e-4."""
    local, on_ray = _evaluate_both(model_dir, tmp_path, deterministic=False)
    assert [row[:2] for row in on_ray["cache"]] == [row[:2] for row in local["cache"]]
    for ray_row, local_row in zip(on_ray["cache"], local["cache"]):
        ray_shape, ray_floats = _floats_apart(json.loads(ray_row[2]))
        local_shape, local_floats = _floats_apart(json.loads(local_row[2]))
        assert ray_shape == local_shape and ray_floats == pytest.approx(local_floats, abs=1e-4)
    assert on_ray["results"]["tasks"].keys() == local["results"]["tasks"].keys()
    for name, task in local["results"]["tasks"].items():
        assert on_ray["results"]["tasks"][name]["score"] == task["score"]
