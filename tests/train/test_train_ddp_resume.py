"""Two-rank training on CPU (gloo, what `accelerate launch` sets up, as env variables): the loss of one
process accumulating the same micro-batches, and a 2-rank run resumed from its checkpoint ends where the
uninterrupted one ends.

FSDP2 with sharded checkpoints is checked by the GPU script (`scripts/gpu_check`, its `launch` section):
accelerate 1.x enables FSDP only for accelerator devices, so on CPU it would run as DDP and prove nothing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from helpers.prepared import copy_dir
from instructkit.train.config import TrainConfig

CHILD = textwrap.dedent(
    """
    import sys
    from instructkit.train.config import TrainConfig
    from instructkit.train.run import train

    train(TrainConfig.model_validate_json(sys.argv[1]))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(config: TrainConfig, processes: int) -> list[float]:
    """Run `train` in `processes` gloo ranks (DDP); its logged losses."""
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
        [*cmd, "-c", CHILD, config.model_dump_json()], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = (config.output_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines if "loss" in json.loads(x)]


def _common(tmp_path, tiny_tokenizer) -> dict:
    data = copy_dir(tmp_path / "data", tiny_tokenizer, n=48, max_length=40)
    return dict(
        data=data,
        model="tiny:nano",
        max_steps=4,
        save_steps=2,
        logging_steps=1,
        progress=False,
        preset="flan",
    )


@pytest.mark.slow
def test_ddp_two_ranks_match_one_process_and_resume(tmp_path, tiny_tokenizer):
    common = _common(tmp_path, tiny_tokenizer)
    one = _train(TrainConfig(output_dir=tmp_path / "one", gradient_accumulation_steps=2, **common), 1)
    ddp = _train(TrainConfig(output_dir=tmp_path / "ddp", gradient_accumulation_steps=1, **common), 2)
    assert len(one) == len(ddp) == 4
    assert ddp == pytest.approx(one, rel=1e-5)

    cut = tmp_path / "cut"
    _train(TrainConfig(output_dir=cut, gradient_accumulation_steps=1, **{**common, "max_steps": 2}), 2)
    assert (cut / "checkpoint-2" / "rng_state_1.pth").is_file()  # each rank's RNG, for an exact resume
    resumed = _train(TrainConfig(output_dir=cut, gradient_accumulation_steps=1, resume=True, **common), 2)
    assert resumed[-2:] == ddp[-2:]
