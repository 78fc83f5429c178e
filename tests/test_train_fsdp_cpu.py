"""Many-process training on CPU (2 gloo ranks, what `accelerate launch` sets up, as env variables).

DDP: the loss of one process accumulating the same micro-batches, and a 2-rank run resumed from its
checkpoint ends where the uninterrupted one ends. FSDP2 (full shard, sharded checkpoints): the same,
where accelerate turns FSDP on for CPU processes; accelerate 1.x enables it only for accelerator
device types (its `DistributedType.MULTI_CPU` gets no FSDP plugin), so here that test says so and skips.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from instructkit.train.config import TrainConfig
from test_train_support import copy_dir

CHILD = textwrap.dedent(
    """
    import sys
    from instructkit.train.config import TrainConfig
    from instructkit.train.run import train

    train(TrainConfig.model_validate_json(sys.argv[1]))
    """
)
# What `accelerate launch` exports for configs/accelerate/fsdp.yaml, on CPU, with sharded checkpoints.
FSDP_ENV = {
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "2",
    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_RESHARD_AFTER_FORWARD": "true",
    "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT",
    "ACCELERATE_USE_CPU": "true",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(config: TrainConfig, processes: int, launch_env: dict[str, str] = FSDP_ENV) -> list[float]:
    """Run `train` in `processes` gloo ranks (with `launch_env`: FSDP2 by default); its logged losses."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable]
    if processes > 1:
        env.update(launch_env)
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
    ddp = _train(TrainConfig(output_dir=tmp_path / "ddp", gradient_accumulation_steps=1, **common), 2, {})
    assert len(one) == len(ddp) == 4
    assert ddp == pytest.approx(one, rel=1e-5)

    cut = tmp_path / "cut"
    _train(TrainConfig(output_dir=cut, gradient_accumulation_steps=1, **{**common, "max_steps": 2}), 2, {})
    assert (cut / "checkpoint-2" / "rng_state_1.pth").is_file()  # each rank's RNG, for an exact resume
    resumed = _train(TrainConfig(output_dir=cut, gradient_accumulation_steps=1, resume=True, **common), 2, {})
    assert resumed[-2:] == ddp[-2:]


@pytest.mark.slow
def test_fsdp2_sharded_checkpoint_resume_on_cpu(tmp_path, tiny_tokenizer):
    common = _common(tmp_path, tiny_tokenizer)
    cut = tmp_path / "cut"
    first = _train(
        TrainConfig(output_dir=cut, gradient_accumulation_steps=1, **{**common, "max_steps": 2}), 2
    )
    if not list((cut / "checkpoint-2").rglob("*.distcp")):
        pytest.skip("accelerate does not enable FSDP for CPU processes here (no sharded checkpoint written)")
    full = _train(TrainConfig(output_dir=tmp_path / "full", gradient_accumulation_steps=1, **common), 2)
    one = _train(TrainConfig(output_dir=tmp_path / "one", gradient_accumulation_steps=2, **common), 1)
    assert full == pytest.approx(one, rel=1e-4) and first == full[:2]
    resumed = _train(TrainConfig(output_dir=cut, gradient_accumulation_steps=1, resume=True, **common), 2)
    assert resumed[-2:] == pytest.approx(full[-2:], rel=1e-6)
