"""Section `env`: versions, GPU, attention implementations, carried wheels."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ..context import Ctx, Skip, check
from ..helpers import attention_implementations


def section_env(ctx: Ctx) -> None:
    """Versions, GPU, attention implementations, carried wheels; the APIs instructkit needs are there."""
    from importlib import metadata

    import torch

    info: dict[str, Any] = {"python": sys.version.split()[0], "mode": ctx.device}
    for dist in (
        "torch",
        "transformers",
        "accelerate",
        "peft",
        "datasets",
        "tokenizers",
        "safetensors",
        "huggingface_hub",
        "pyarrow",
        "numpy",
        "pydantic",
    ):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    info["cuda_available"] = torch.cuda.is_available()
    if info["cuda_available"]:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
        info["torch_cuda"] = torch.version.cuda
    info["peak_flops"] = ctx.options.get("peak_flops")
    manifest = os.environ.get("GPU_CHECK_WHEELS_MANIFEST")
    if manifest and Path(manifest).is_file():
        info["wheels"] = json.loads(Path(manifest).read_text())
    ctx.record["info"] = info
    ctx.case("imports", _env_imports)
    ctx.case("transformers API", _env_transformers_api)
    ctx.case("device", _env_device, ctx)
    ctx.case("attention implementations", lambda: {"metrics": attention_implementations(ctx)})


def _env_imports() -> dict:
    """The package modules every section calls import with the device's libraries (+ carried wheels)."""
    import instructkit
    import instructkit.evaluate.backends.hf
    import instructkit.train.collators
    import instructkit.train.trainer  # noqa: F401

    return {"metrics": {"instructkit": str(Path(instructkit.__file__).parent)}}


def _env_transformers_api() -> dict:
    """instructkit's training_arguments() passes these TrainingArguments fields; older transformers lack some."""
    import transformers
    from transformers import TrainingArguments

    needed = (
        "activation_checkpointing",
        "train_sampling_strategy",
        "use_cache",
        "average_tokens_across_devices",
    )
    fields = TrainingArguments.__dataclass_fields__
    missing = [f for f in needed if f not in fields]
    return {
        "metrics": {"transformers": transformers.__version__, "missing": missing},
        "checks": [check("TrainingArguments fields instructkit passes, missing", len(missing), 0, "==")],
    }


def _env_device(ctx: Ctx) -> dict:
    import torch

    if not ctx.cuda:
        raise Skip("skipped: no CUDA (CPU mode)")
    ok = torch.cuda.is_available()
    x = torch.ones(4, device="cuda") if ok else None
    return {
        "checks": [
            check("CUDA usable in the section process", bool(ok and float(x.sum()) == 4.0), True, "==")
        ]
    }
