"""`synth generate`: raw texts → instruction–response pairs, in multi-round chains, sharded and resumable.

The texts are planned into chains (rounds) and the chains into shards once, from the input alone;
`config.json` pins that plan, so a rerun with the same settings skips every finished shard and a
rerun with different ones is refused instead of mixing outputs. Shards run in `num_workers`
processes (one GPU each where GPUs are present). Settings: `config.GenerateConfig`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..evaluate.backends.base import Backend, greedy_texts
from ..evaluate.backends.load import load_backend
from .config import DEFAULT_SYNTHESIZER, GenerateConfig
from .inputs import read_texts
from .markup import SynthFormat
from .parser import parse_pairs
from .quality import pair_statistics
from .rounds import Entry, build_prompt, plan_chains
from .shards import check_plan, finished_records, is_done, plan_shards, shard_path, write_atomic

# Settings that change which shard holds which text, or what a shard contains.
PLAN_KEYS = (
    "model",
    "input",
    "text_field",
    "group_field",
    "rounds",
    "shard_size",
    "limit",
    "max_model_len",
    "max_new_tokens",
)


def generate_pairs(cfg: GenerateConfig, run_jobs: Callable[..., None] | None = None) -> dict[str, Any]:
    """Run the synthesizer over the input; returns a summary (shards run/skipped, pair statistics).

    `run_jobs(cfg, jobs)` writes the pending shards; the default runs them here or in `num_workers`
    processes, `instructkit.executors.ray_synth` runs them on a Ray actor pool.
    """
    out = Path(cfg.out)
    cfg = with_synthesizer(cfg)
    _check_config(cfg, out)
    rows = read_texts(cfg.input, cfg.text_field, cfg.group_field, cfg.limit)
    chains = plan_chains(len(rows), cfg.rounds, [r["group"] for r in rows] if cfg.group_field else None)
    shards = plan_shards(chains, cfg.shard_size)
    pending = [s for s in shards if not is_done(out, s.index)]
    todo = pending if cfg.max_shards is None else pending[: cfg.max_shards]
    jobs = [
        (s.index, [[rows[i] for i in chain] for chain in chains[s.first_chain : s.last_chain]]) for s in todo
    ]
    (run_jobs or _run_jobs)(cfg, jobs)
    summary = {
        "shards": len(shards),
        "shards_generated": len(todo),
        "shards_skipped": len(shards) - len(pending),
        "shards_remaining": len(pending) - len(todo),
        "complete": len(pending) == len(todo),
        **pair_statistics(finished_records(out)),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def with_synthesizer(cfg: GenerateConfig) -> GenerateConfig:
    """`cfg` with `model: default` replaced by the tiny synthesizer (trained once under OUT) and
    the lengths capped to its context."""
    if cfg.model != DEFAULT_SYNTHESIZER:
        return cfg
    from ..progress import log_event
    from .default_synthesizer import SIZES, train_default_synthesizer

    model = str(train_default_synthesizer(Path(cfg.out) / "default_synthesizer", "small"))
    length = min(cfg.max_model_len, SIZES["small"].max_length)
    log_event("synth", f"model `default`: the tiny synthesizer {model} (context {length} tokens)")
    update = {"model": model, "max_model_len": length, "max_new_tokens": min(cfg.max_new_tokens, length // 2)}
    return cfg.model_copy(update=update)


def _check_config(cfg: GenerateConfig, out: Path) -> None:
    """Write config.json on the first run; refuse a rerun whose plan settings differ."""
    check_plan(out, cfg.model_dump(include=set(PLAN_KEYS)), cfg.model_dump(), "shards")


def _run_jobs(cfg: GenerateConfig, jobs: list[tuple[int, list[list[dict]]]]) -> None:
    """Run shard jobs here (one worker) or split round-robin over `num_workers` spawned processes."""
    if not jobs:
        return
    workers = max(1, min(cfg.num_workers, len(jobs)))
    if workers == 1:
        _worker(cfg, jobs, None)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    gpus = _gpu_count()
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [
            pool.submit(_worker, cfg, jobs[w::workers], w % gpus if gpus else None) for w in range(workers)
        ]
        for future in futures:
            future.result()


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def _worker(cfg: GenerateConfig, jobs: list[tuple[int, list[list[dict]]]], gpu: int | None) -> None:
    """Load the synthesizer once and write each shard; pins the process to one GPU when given."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    elif cfg.num_workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.num_workers))
    backend, tokenizer = load_synthesizer(cfg)
    from ..progress import Progress

    total = sum(len(chain) for _, shard_chains in jobs for chain in shard_chains)
    stage = "synth" if gpu is None and cfg.num_workers <= 1 else f"synth worker {os.getpid()}"
    with Progress(stage, total=total, unit="text") as bar:
        for index, shard_chains in jobs:
            records = run_chains(backend, tokenizer, shard_chains, cfg.budget, cfg.max_new_tokens)
            write_atomic(shard_path(Path(cfg.out), index), records)
            bar.update(advance=sum(len(chain) for chain in shard_chains), shards_done=index + 1)


def load_synthesizer(cfg: GenerateConfig) -> tuple[Backend, Any]:
    """The synthesizer's backend and tokenizer, loaded once per worker (process or Ray actor)."""
    from ..models.loading import load_tokenizer

    backend = load_backend(cfg.backend, cfg.model, batch_size=cfg.batch_size, max_model_len=cfg.max_model_len)
    return backend, load_tokenizer(cfg.model)


def run_chains(
    backend: Backend, tokenizer, chains: list[list[dict]], budget: int, max_new_tokens: int
) -> list[dict[str, Any]]:
    """Round by round over the chains: batch the r-th text of every chain, parse, extend the histories."""
    fmt = SynthFormat.for_tokenizer(tokenizer)
    histories: list[list[Entry]] = [[] for _ in chains]
    records: dict[int, dict[str, Any]] = {}
    for r in range(max((len(c) for c in chains), default=0)):
        active = [k for k, chain in enumerate(chains) if len(chain) > r]
        prompts = [build_prompt(tokenizer, fmt, histories[k], chains[k][r]["text"], budget) for k in active]
        outputs = greedy_texts(backend, [p.ids for p in prompts], max_new_tokens)
        for k, prompt, output in zip(active, prompts, outputs):
            row = chains[k][r]
            parsed = parse_pairs(output, fmt.eos or None)
            histories[k].append(Entry(row["text"], tuple(parsed.pairs)))
            records[row["id"]] = {
                "id": row["id"],
                "text": row["text"],
                "group": row["group"],
                "chain": chains[k][0]["id"],
                "round": r,
                "prefix_rounds": prompt.prefix_rounds,
                "prompt_tokens": len(prompt.ids),
                "truncated": prompt.truncated,
                "pairs": [p.to_dict() for p in parsed.pairs],
                "failures": dict(parsed.failures),
                "output": output,
            }
    return [records[i] for i in sorted(records)]
