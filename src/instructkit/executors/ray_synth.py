"""`synth generate --executor ray`: the planned shards as a Ray dataset, the synthesizer in an actor pool.

Planning (chains, shards, which shards are already finished) is `generate_pairs`' own, so the shard
plan and the resume rule are the local executor's. Each actor loads the synthesizer once (vLLM on a
GPU node, transformers on CPU) and runs `run_chains` on whole shards, so every prompt is built and
batched exactly as locally, and writes the shard with the same atomic JSONL writer: for the same
inputs, seed and greedy decoding the output folder is byte-identical to the local one. A shard
appears only complete, so a rerun after a lost node or actor skips the finished ones.
Workers write to `--out`, which must be storage every node sees (NFS, a mounted bucket).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..synth.generate import GenerateConfig, generate_pairs, load_synthesizer, run_chains
from ..synth.shards import shard_path, write_atomic
from . import init_ray, pool_size


class _ShardWriter:
    """A Ray Data actor: one synthesizer per actor; each input row is one shard to write."""

    def __init__(self, cfg: GenerateConfig):
        self.cfg = cfg
        self.backend, self.tokenizer = load_synthesizer(cfg)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        texts = []
        for index, chains_json in zip(batch["index"], batch["chains"]):
            chains = json.loads(chains_json)
            records = run_chains(
                self.backend, self.tokenizer, chains, self.cfg.budget, self.cfg.max_new_tokens
            )
            write_atomic(shard_path(Path(self.cfg.out), int(index)), records)
            texts.append(len(records))
        return {"index": [int(i) for i in batch["index"]], "texts": texts}


def ray_jobs_runner(address: str | None = None, num_cpus: int | None = None):
    """A `run_jobs` for `generate_pairs` that writes the shards on a Ray actor pool."""

    def run(cfg: GenerateConfig, jobs: list[tuple[int, list[list[dict]]]]) -> None:
        if not jobs:
            return
        ray = init_ray(address, num_cpus)
        gpus = 1.0 if cfg.backend == "vllm" or ray.cluster_resources().get("GPU") else 0.0
        actors = min(len(jobs), pool_size(ray, cfg.num_workers if cfg.num_workers > 1 else None, gpus))
        # JSON keeps each row exactly as read (Arrow would coerce mixed-type `group` values).
        items = [{"index": index, "chains": json.dumps(chains)} for index, chains in jobs]
        written = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _ShardWriter,
            fn_constructor_args=(cfg,),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=0 if gpus else 1,
            num_gpus=gpus,
        )
        done = sorted(row["index"] for row in written.iter_rows())
        if done != [index for index, _ in jobs]:  # Ray retries failed tasks; anything missing is a bug
            raise RuntimeError(f"Ray wrote shards {done}, expected {[i for i, _ in jobs]}")

    return run


def generate_pairs_ray(
    cfg: GenerateConfig, address: str | None = None, num_cpus: int | None = None
) -> dict[str, Any]:
    """`generate_pairs` with the shards written on Ray; same plan, files and summary as the local run."""
    return generate_pairs(cfg, run_jobs=ray_jobs_runner(address, num_cpus))
