"""Two-rank training on CPU (torchrun, gloo; what `accelerate launch` sets up, as env variables): the ranks
see disjoint data and end with the same weights and losses as one process accumulating the same
micro-batches (data sharding and the cross-rank token normalisation are right), and a 2-rank run resumed
from its step-2 checkpoint ends where the uninterrupted one ends.

One single-process run and one 2-rank run (4 steps, a checkpoint every 2) are shared by both tests.
FSDP2 with sharded checkpoints is checked by the GPU script (`scripts/gpu_check`, its `launch` section):
accelerate 1.x enables FSDP only for accelerator devices, so on CPU it would run as DDP and prove nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.prepared import copy_dir
from instructkit.train.config import TrainConfig

pytestmark = pytest.mark.slow

STEPS = 4

# Runs the real `train`; the collator is wrapped only to record which examples each rank received.
CHILD = textwrap.dedent(
    """
    import json, os, sys
    from instructkit.train import collators
    from instructkit.train.config import TrainConfig
    from instructkit.train.run import train

    seen_path = sys.argv[2].format(rank=os.environ.get("RANK", "0"))
    original = collators.PackedCollator.__call__

    def recording_call(self, features):
        with open(seen_path, "a") as f:
            f.write(json.dumps([i for row in features for i in row["example_ids"]]) + "\\n")
        return original(self, features)

    collators.PackedCollator.__call__ = recording_call
    train(TrainConfig.model_validate_json(sys.argv[1]))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(config: TrainConfig, processes: int, seen: str) -> list[float]:
    """Run `train` in `processes` gloo ranks (DDP), recording each rank's examples in `seen`; its losses."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable]
    if processes > 1:
        cmd = [
            *cmd,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={processes}",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            "--no-python",
            sys.executable,
        ]
    proc = subprocess.run(
        [*cmd, "-c", CHILD, config.model_dump_json(), seen],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return _losses(config.output_dir)


def _losses(out: Path) -> list[float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines if "loss" in json.loads(x)]


def _seen(path: Path) -> list[list[int]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_tokenizer) -> dict:
    """One process accumulating 2 micro-batches, and 2 ranks of one each: same data, same 4 steps."""
    root = tmp_path_factory.mktemp("ddp")
    data = copy_dir(root / "data", tiny_tokenizer, n=48, max_length=40)
    common = dict(
        data=data,
        model="tiny:nano",
        max_steps=STEPS,
        save_steps=2,
        logging_steps=1,
        progress=False,
        preset="flan",
    )
    single = TrainConfig(output_dir=root / "single", gradient_accumulation_steps=2, **common)
    ddp = TrainConfig(output_dir=root / "ddp", gradient_accumulation_steps=1, **common)
    one = _train(single, 1, str(root / "single-{rank}.jsonl"))
    two = _train(ddp, 2, str(root / "ddp-{rank}.jsonl"))
    return {"root": root, "one": one, "ddp": two, "ddp_config": ddp}


def test_two_gloo_ranks_match_one_process(runs):
    root = runs["root"]
    rank0, rank1 = _seen(root / "ddp-0.jsonl")[:STEPS], _seen(root / "ddp-1.jsonl")[:STEPS]
    assert all(not set(a) & set(b) for a, b in zip(rank0, rank1))  # disjoint data on every step
    one = _seen(root / "single-0.jsonl")[: 2 * STEPS]
    assert [sorted(a + b) for a, b in zip(rank0, rank1)] == [
        sorted(one[2 * i] + one[2 * i + 1]) for i in range(STEPS)
    ]

    w1 = load_file(str(root / "single" / "model.safetensors"))
    w2 = load_file(str(root / "ddp" / "model.safetensors"))
    for name, w in w1.items():
        assert torch.allclose(w, w2[name], rtol=1e-4, atol=1e-6), name
    assert len(runs["one"]) == len(runs["ddp"]) == STEPS
    assert runs["ddp"] == pytest.approx(runs["one"], rel=1e-5)


def test_ddp_run_resumed_from_its_checkpoint_ends_where_the_uninterrupted_one_ends(runs, tmp_path):
    """The 2-rank run cut after its step-2 checkpoint (what a kill leaves), resumed by 2 ranks."""
    checkpoint = runs["root"] / "ddp" / "checkpoint-2"
    assert (checkpoint / "rng_state_1.pth").is_file()  # each rank's RNG, for an exact resume
    cut = tmp_path / "cut"
    shutil.copytree(checkpoint, cut / "checkpoint-2")
    config = runs["ddp_config"].model_copy(update={"output_dir": cut, "resume": True})
    resumed = _train(config, 2, str(tmp_path / "resumed-{rank}.jsonl"))
    assert resumed[-2:] == runs["ddp"][-2:]
    logged = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [3, 4]  # it continued, not started over
