"""Section `accelerate`: every accelerate config parses; `accelerate launch` trains, saves, resumes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..config import REPO, TOLERANCES
from ..context import Ctx, check
from ..helpers import arrow_rows, synthetic_rows
from .eval import EVAL_CORPUS


def section_accelerate(ctx: Ctx) -> None:
    """Every accelerate config parses; `accelerate launch` (1 process, FSDP config) trains, saves, resumes."""
    ctx.case("config files parse", accelerate_configs)
    ctx.case("fsdp launch: sharded save, interrupt, resume", accelerate_resume, ctx)


def accelerate_configs() -> dict:
    """accelerate's own loader accepts each YAML in configs/accelerate (unknown keys are errors there)."""
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {}
    for path in sorted((REPO / "configs" / "accelerate").glob("*.yaml")):
        kinds[path.name] = str(load_config_from_file(str(path)).distributed_type)
    return {"metrics": kinds, "checks": [check("config files found", len(kinds), 1, ">=")]}


def _prepared_dir(root: Path, max_length: int = 64) -> Path:
    """A `data prepare`-shaped folder: packed dataset, prepare.json and the tiny tokenizer."""
    import datasets

    from instructkit.data.packing import pack_table
    from instructkit.models.tiny import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer(EVAL_CORPUS, vocab_size=512)
    rows = synthetic_rows(64, 6, 40, len(tokenizer), seed=5)
    packed, _ = pack_table(arrow_rows(rows), max_length)
    datasets.Dataset(packed).save_to_disk(str(root))
    (root / "prepare.json").write_text(json.dumps({"max_length": max_length, "packed": True}))
    tokenizer.save_pretrained(str(root / "tokenizer"))
    return root


def _launch(ctx: Ctx, config: Path, data: Path, out: Path, steps: int, resume: bool, log: Path) -> None:
    """One `accelerate launch -m instructkit train` process; raises with its output tail on failure."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--num_processes",
        "1",
        "--main_process_port",
        str(port),
        "--fsdp_state_dict_type",
        "SHARDED_STATE_DICT",
    ]
    env = dict(os.environ)
    if not ctx.cuda:
        cmd += ["--mixed_precision", "no"]
        env |= {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd += [
        "-m",
        "instructkit",
        "train",
        "--data",
        str(data),
        "--model",
        ctx.sizes.accelerate_model,
        "--output-dir",
        str(out),
        "--max-steps",
        str(steps),
        "--save-steps",
        "2",
        "--logging-steps",
        "1",
        "--grad-accum",
        "2",
        "--preset",
        "flan",
        "--no-progress",
    ]
    cmd += ["--resume"] if resume else []
    left = max(10.0, ctx.time_left() - 5)
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=left)
    if proc.returncode != 0:
        tail = log.read_text()[-4000:]
        raise RuntimeError(f"accelerate launch exited {proc.returncode}:\n{tail}")


def _losses(metrics: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r}


def accelerate_resume(ctx: Ctx) -> dict:
    """Train 4 steps (checkpoints at 2 and 4), drop checkpoint-4 as if killed, resume: steps 3-4 repeat exactly."""
    config = Path(ctx.options.get("accelerate_config") or REPO / "configs" / "accelerate" / "fsdp.yaml")
    root = ctx.work / "accelerate"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    data = _prepared_dir(root / "data")
    out, log = root / "run", ctx.work / "accelerate-launch.log"
    _launch(ctx, config, data, out, 4, False, log)
    first = _losses(out / "metrics.jsonl")
    ckpt2 = sorted(p.name for p in (out / "checkpoint-2").iterdir())
    shutil.rmtree(out / "checkpoint-4")
    _launch(ctx, config, data, out, 4, True, log)
    second = _losses(out / "metrics.jsonl")
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    worst = max(abs(second[s] - first[s]) / max(abs(first[s]), 1e-12) for s in (3, 4))
    sharded = any(name.startswith("pytorch_model_fsdp") for name in ckpt2)
    checks = [
        check("resumed global step", state["global_step"], 4, "=="),
        check(
            "steps 3-4 loss relative error after resume", worst, TOLERANCES["accelerate"]["resumed_loss_rel"]
        ),
    ]
    if ctx.cuda:
        checks.append(check("checkpoint holds a sharded FSDP state dict", sharded, True, "=="))
    metrics = {
        "config": str(config.relative_to(REPO) if config.is_relative_to(REPO) else config),
        "checkpoint_2_files": ckpt2,
        "losses_first": first,
        "losses_resumed": second,
        "sharded_state_dict": sharded
        if ctx.cuda
        else "skipped: no CUDA (on CPU accelerate runs the FSDP config as DDP)",
    }
    return {"metrics": metrics, "checks": checks}
