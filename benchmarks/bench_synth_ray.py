"""Ray executor costs on one machine: synthesis throughput (local vs Ray, same shards, checked
byte-identical), and packing efficiency of best-fit decreasing per 100k-example block vs global.

    .venv/bin/python benchmarks/bench_synth_ray.py [--texts 96] [--pack-examples 300000]

Synthesis uses a randomly initialised `tiny:micro` model (so pairs rarely parse and chains rarely
grow: this measures the executor, not the synthesizer). Prints a JSON report; writes nothing else
outside benchmarks/_work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
WORK = Path(__file__).resolve().parent / "_work" / "synth_ray"
RAW = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "raw_text"
    / "wikitext-2_test_paragraphs.jsonl"
)


def _model(texts: list[str]) -> Path:
    """A tiny:micro Llama with a BPE trained on the texts, saved once."""
    from instructkit.models.tiny import build_tiny_model, train_tiny_tokenizer

    path = WORK / "model"
    if not (path / "config.json").is_file():
        tokenizer = train_tiny_tokenizer(texts, vocab_size=1024)
        build_tiny_model("tiny:micro", tokenizer, seed=0).save_pretrained(path)
        tokenizer.save_pretrained(path)
    return path


def _texts(n: int) -> list[str]:
    if RAW.is_file():
        rows = [json.loads(line) for line in RAW.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [r["text"][:1200] for r in rows[:n]]
    rng = np.random.default_rng(0)
    words = ["alpha", "river", "stone", "market", "city", "north", "song", "year", "king", "field"]
    return [" ".join(rng.choice(words, size=int(rng.integers(40, 160)))) for _ in range(n)]


def bench_synth(n_texts: int) -> dict:
    from instructkit.executors import init_ray
    from instructkit.executors.ray_synth import generate_pairs_ray
    from instructkit.synth.generate import GenerateConfig, generate_pairs

    texts = _texts(n_texts)
    model = _model(texts)
    raw = WORK / "raw.jsonl"
    raw.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    base = dict(model=str(model), input=str(raw), rounds=2, max_model_len=512, max_new_tokens=48)
    base.update(shard_size=max(1, n_texts // 8), batch_size=8)
    runs: dict[str, dict] = {}
    # local: one process (torch threads = cores); local_2: two spawned worker processes; ray: 2 actors.
    for name, workers in (("local", 1), ("local_2", 2), ("ray", 2)):
        out = WORK / name
        shutil.rmtree(out, ignore_errors=True)
        cfg = GenerateConfig(out=str(out), num_workers=workers, **base)
        if name == "ray":
            start = time.perf_counter()
            init_ray(num_cpus=os.cpu_count())
            runs["ray_cluster_start_s"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        (generate_pairs_ray if name == "ray" else generate_pairs)(cfg)
        seconds = time.perf_counter() - start
        runs[name] = {"seconds": round(seconds, 2), "texts_per_s": round(n_texts / seconds, 2)}
    same = all(
        (WORK / "local" / "shards" / p.name).read_bytes() == p.read_bytes()
        for p in (WORK / "ray" / "shards").iterdir()
    )
    return {
        "texts": n_texts,
        **runs,
        "ray_over_local": round(runs["ray"]["seconds"] / runs["local"]["seconds"], 3),
        "ray_over_local_2": round(runs["ray"]["seconds"] / runs["local_2"]["seconds"], 3),
        "byte_identical": same,
    }


def bench_packing(n: int, capacity: int = 2048, block: int = 100_000) -> dict:
    """Packs needed by global BFD vs BFD per block, on heavy-tailed lengths (lognormal, median 300)."""
    from instructkit.data.packing import best_fit_decreasing
    from instructkit.executors.ray_prepare import block_bounds

    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(300), 1.0, size=n), 8, capacity).astype(np.int64)
    start = time.perf_counter()
    global_packs = len(best_fit_decreasing(lengths, capacity))
    global_s = time.perf_counter() - start
    start = time.perf_counter()
    bounds = block_bounds(n, block)
    block_packs = sum(len(best_fit_decreasing(lengths[s:e], capacity)) for s, e in bounds)
    block_s = time.perf_counter() - start
    tokens = int(lengths.sum())
    lower = -(-tokens // capacity)
    return {
        "examples": n,
        "capacity": capacity,
        "blocks": len(bounds),
        "lower_bound_packs": lower,
        "global_packs": global_packs,
        "block_packs": block_packs,
        "global_efficiency": round(tokens / (global_packs * capacity), 6),
        "block_efficiency": round(tokens / (block_packs * capacity), 6),
        "extra_packs_pct": round(100 * (block_packs - global_packs) / global_packs, 4),
        "global_seconds": round(global_s, 2),
        "block_seconds_serial": round(block_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=96)
    parser.add_argument("--pack-examples", type=int, default=300_000)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    report = {"packing": bench_packing(args.pack_examples), "synthesis": bench_synth(args.texts)}
    write_results(report)


def write_results(report: dict) -> None:
    """results/synth_ray.md (a RESULTS.md section) and .json, from the measured report."""
    synth, pack = report["synthesis"], report["packing"]
    rows = [(k, synth[k]) for k in ("local", "local_2", "ray")]
    lines = [
        "## Scale-out: synthesis and packing on Ray (one 2-core node)",
        "",
        f"Command: `python benchmarks/bench_synth_ray.py --texts {synth['texts']} --pack-examples "
        f"{pack['examples']}`. A random tiny synthesizer, greedy, 2 rounds; Ray {_ray_version()}; "
        f"starting the local Ray cluster took {synth['ray_cluster_start_s']} s (not included below).",
        "",
        "| executor | seconds | texts/s |",
        "|---|---:|---:|",
        *[f"| {name} | {r['seconds']} | {r['texts_per_s']} |" for name, r in rows],
        "",
        f"Ray shards byte-identical to the local executor's: {synth['byte_identical']}. On one node Ray is "
        "not expected to win; where it does, the gain is one model thread per actor and shards pulled as "
        "actors free up, not Ray itself.",
        "",
        f"Packing per Ray block ({pack['blocks']} blocks of >= 100k of {pack['examples']:,} heavy-tailed "
        f"lengths, L={pack['capacity']}): {pack['block_packs']:,} packs against {pack['global_packs']:,} "
        f"for global best-fit decreasing (lower bound {pack['lower_bound_packs']:,}): "
        f"+{pack['extra_packs_pct']}% packs, efficiency {pack['block_efficiency']} vs {pack['global_efficiency']}.",
        "",
        "Paper estimate for 200M pairs (Instruction Pre-Training's corpus size, arXiv 2406.14491) on the "
        "Ray/vLLM path, with assumptions stated: ~5 pairs and ~260 output tokens per text (not verified "
        "against the paper) → 40M texts, 10.4B output tokens; ~12,500 output tokens/s for a 7-8B model in "
        "vLLM on one H100 (third-party aggregate, morphllm.com/vllm-benchmarks) → ~231 H100-hours of "
        "decoding; prefill of ~2,000 prompt tokens per text at ~400 TFLOP/s → ~800 H100-hours. About "
        "1,030 H100-hours: ~16 h on 64 GPUs. Per-shard Ray overhead (milliseconds) is negligible against "
        "minutes of generation per 1,000-text shard.",
    ]
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / "synth_ray.json").write_text(json.dumps(report, indent=2))
    (results / "synth_ray.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _ray_version() -> str:
    import ray

    return ray.__version__


if __name__ == "__main__":
    main()
