"""Two CPU processes (torchrun, gloo) see disjoint data and end with the same weights as one process
accumulating the same micro-batches: data sharding and the cross-rank token normalisation are right."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from helpers.prepared import copy_dir
from instructkit.train.config import TrainConfig

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


def _run(cmd: list[str], config: TrainConfig, seen: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [*cmd, "-c", CHILD, config.model_dump_json(), seen],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _seen(path) -> list[list[int]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path, tiny_tokenizer):
    data = copy_dir(tmp_path / "data", tiny_tokenizer, n=48, max_length=40)
    common = dict(
        data=data,
        model="tiny:nano",
        max_steps=3,
        logging_steps=1,
        save_steps=100,
        progress=False,
        preset="flan",
    )
    single = TrainConfig(output_dir=tmp_path / "single", gradient_accumulation_steps=2, **common)
    double = TrainConfig(output_dir=tmp_path / "ddp", gradient_accumulation_steps=1, **common)
    _run([sys.executable], single, str(tmp_path / "single-{rank}.jsonl"))
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "--no-python",
        sys.executable,
    ]
    _run(torchrun, double, str(tmp_path / "ddp-{rank}.jsonl"))

    rank0, rank1 = _seen(tmp_path / "ddp-0.jsonl")[:3], _seen(tmp_path / "ddp-1.jsonl")[:3]
    assert all(not set(a) & set(b) for a, b in zip(rank0, rank1))  # disjoint data on every step
    one = _seen(tmp_path / "single-0.jsonl")[:6]
    assert [sorted(a + b) for a, b in zip(rank0, rank1)] == [
        sorted(one[2 * i] + one[2 * i + 1]) for i in range(3)
    ]

    w1 = load_file(str(tmp_path / "single" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    for name, w in w1.items():
        assert torch.allclose(w, w2[name], rtol=1e-4, atol=1e-6), name
    loss = [json.loads(x)["loss"] for x in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    loss2 = [json.loads(x)["loss"] for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert loss == pytest.approx(loss2, rel=1e-5)
