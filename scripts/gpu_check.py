#!/usr/bin/env python3
"""One prepared check that the toolkit's GPU paths work: `make gpu-check` (CUDA) or `DEVICE=cpu` (tiny sizes).

Sections, each in its own forked process with its own time budget; one that fails or runs out of time is
recorded (traceback, log tail) and the others still run; `results.json` and `results.md` are rewritten in
`--out` after every section, so a partial run still leaves both:
  env         versions, GPU, attention implementations, wheels installed from the carried folder;
  packing     packed vs one-at-a-time loss, per-token loss and gradients per attention implementation and
              dtype, through PackedCollator → InstructTrainer.compute_loss, after the isolation pre-flight;
  train       tokens/s and MFU of InstructTrainer on a ~1B Llama-shaped random-init model (and a
              SmolLM2-135M-shaped one): packed vs padded, gradient checkpointing off/on, full vs LoRA;
  eval        HFBackend on the device vs on CPU (log-likelihoods, greedy text), and its throughput;
  accelerate  `accelerate launch` of `instructkit train` under configs/accelerate/fsdp.yaml with one process,
              sharded state dict, a checkpoint, an interruption and `--resume`; every config file parsed.
Everything goes through the package's public functions; nothing is re-implemented here.

Other commands: `wheels` (here: download the wheels the device lacks) and `install-wheels` (there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# torch.cuda.is_available() through NVML does not initialise CUDA, so forked sections can still use it.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Dense bf16 peak of one H200 SXM (NVIDIA datasheet: 1,979 TFLOPS with sparsity, half of it dense).
H200_BF16_PEAK_FLOPS = 989e12
SECTIONS = ("env", "packing", "train", "eval", "accelerate")
# Seconds per section on CUDA; their sum (430 s) plus start-up keeps the whole run under 8 minutes.
CUDA_BUDGETS = {"env": 30, "packing": 100, "train": 150, "eval": 60, "accelerate": 90}
CPU_BUDGETS = {"env": 30, "packing": 60, "train": 90, "eval": 60, "accelerate": 90}

# Tolerances, stated once. packed vs one-at-a-time: relative error of the mean loss, max |Δ| of a token's
# cross-entropy (nats), max over parameter tensors of ‖g_packed − g_alone‖ / ‖g_alone‖.
TOLERANCES = {
    "packing": {
        "fp32": {"loss_rel": 1e-4, "token_abs": 5e-4, "grad_rel": 1e-3},
        "bf16": {"loss_rel": 1e-2, "token_abs": 0.1, "grad_rel": 5e-2},
        "isolation_preflight": 1e-3,  # instructkit's own assert_packed_isolation tolerance
    },
    "eval": {  # device vs the CPU fp32 reference: |Δ log-likelihood| ≤ abs + rel·|ll|; greedy text match share
        "fp32": {"ll_abs": 1e-3, "ll_rel": 1e-4, "greedy_match": 1.0},
        "bf16": {"ll_abs": 0.1, "ll_rel": 0.02, "greedy_match": 0.75},
    },
    "accelerate": {"resumed_loss_rel": 1e-4},  # steps 3-4; a wrong data order or state moves it ~1e-2
}


# --------------------------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    """Model shapes and data sizes of one mode (CUDA: real sizes; CPU: tiny, so the test suite runs it)."""

    pack_model: dict  # LlamaConfig fields of the packing-equivalence model
    pack_lengths: tuple[int, int, int]  # examples, min length, max length
    train_models: dict[str, dict]  # name → LlamaConfig fields
    train_matrix: tuple[tuple[str, str, bool, bool], ...]  # (model, method, packed, gradient checkpointing)
    train_rows: tuple[int, int, int]  # examples, min length, max length
    pack_capacity: int
    padded_batch: int
    warmup_steps: int
    measured_steps: int
    eval_preset: tuple[int, int, int, int]  # hidden, layers, heads, intermediate of the equivalence model
    eval_throughput: dict[str, tuple[int, int, int, int]]
    eval_requests: int
    accelerate_model: str


def _matrix(models: list[str], full: bool) -> tuple[tuple[str, str, bool, bool], ...]:
    """Every (method, packed, checkpointing) for the first model; full fine-tuning packed/padded for the rest."""
    first = [(models[0], m, p, g) for m in ("full", "lora") for g in (False, True) for p in (True, False)]
    rest = [(name, "full", p, False) for name in models[1:] for p in (True, False)]
    return tuple(first + rest) if full else tuple(first[:2] + first[6:])


LLAMA_1B = dict(  # Llama-3.2-1B's shape: 1.24 B parameters (tied embeddings)
    hidden_size=2048,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=8192,
    vocab_size=128256,
    rope_theta=500000.0,
)
SMOLLM2_135M = dict(  # SmolLM2-135M's shape: its weights (270 MB) do not fit the 64 MiB carry, so random init
    hidden_size=576,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    intermediate_size=1536,
    vocab_size=49152,
)
TINY_LLAMA = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    vocab_size=512,
)

CUDA_SIZES = Sizes(
    pack_model=dict(
        hidden_size=1024,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        intermediate_size=2816,
        vocab_size=32768,
    ),
    pack_lengths=(8, 48, 700),
    train_models={"llama-1b": LLAMA_1B, "smollm2-135m-shape": SMOLLM2_135M},
    train_matrix=_matrix(["llama-1b", "smollm2-135m-shape"], full=True),
    train_rows=(900, 32, 2048),
    pack_capacity=8192,
    padded_batch=16,
    warmup_steps=2,
    measured_steps=6,
    eval_preset=(256, 4, 8, 768),
    eval_throughput={"smollm2-135m-body": (576, 30, 9, 1536)},
    eval_requests=64,
    accelerate_model="tiny:small",
)
CPU_SIZES = Sizes(
    pack_model=TINY_LLAMA,
    pack_lengths=(5, 6, 20),
    train_models={"tiny": TINY_LLAMA},
    train_matrix=_matrix(["tiny"], full=False),
    train_rows=(48, 8, 40),
    pack_capacity=128,
    padded_batch=4,
    warmup_steps=1,
    measured_steps=2,
    eval_preset=(64, 2, 4, 128),
    eval_throughput={},
    eval_requests=8,
    accelerate_model="tiny:nano",
)


# ----------------------------------------------------------------------------------- section context


class Skip(Exception):
    """Raised by a case that cannot run here (the reason is recorded, e.g. 'skipped: no CUDA')."""


def check(name: str, value: float | bool | None, limit: Any, op: str = "<=") -> dict:
    """One pass/fail comparison as it is recorded: value op limit."""
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "<=": lambda v, lim: v <= lim,
        ">=": lambda v, lim: v >= lim,
        ">": lambda v, lim: v > lim,
        "==": lambda v, lim: v == lim,
    }
    ok = value is not None and not (isinstance(value, float) and math.isnan(value)) and ops[op](value, limit)
    return {"name": name, "value": value, "op": op, "limit": limit, "ok": bool(ok)}


@dataclass
class Ctx:
    """What a section gets: device, sizes, scratch folder, deadline, and its result record (saved often)."""

    device: str
    sizes: Sizes
    work: Path
    result_path: Path
    deadline: float
    budget: float
    options: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        """Write the record atomically, so a section killed at its deadline still leaves its finished cases."""
        _write_json(self.result_path, self.record)

    def case(self, name: str, fn: Callable[..., dict], *args: Any) -> dict:
        """Run one case in isolation: its metrics and checks, or why it was skipped, or its traceback."""
        entry: dict[str, Any] = {"case": name, "status": "running"}
        self.record.setdefault("cases", []).append(entry)
        if self.time_left() < max(5.0, 0.1 * self.budget):
            entry.update(status="skipped", reason="skipped: section time budget exhausted")
            self.save()
            return entry
        self.save()
        start = time.monotonic()
        try:
            entry.update(fn(*args))
            failed = [c for c in entry.get("checks", []) if not c["ok"]]
            entry["status"] = "failed" if failed else "passed"
        except Skip as exc:
            entry.update(status="skipped", reason=str(exc))
        except Exception:
            entry.update(status="error", traceback=traceback.format_exc(limit=12))
        finally:
            entry["seconds"] = round(time.monotonic() - start, 2)
            _release_memory()
            self.save()
        return entry


def _release_memory() -> None:
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def no_cuda_skip(ctx: Ctx, what: str) -> None:
    """Skip a CUDA-only case in CPU mode, saying so."""
    if not ctx.cuda:
        raise Skip(f"skipped: no CUDA ({what})")


# ------------------------------------------------------------------------------------------ helpers


def synthetic_rows(n: int, lo: int, hi: int, vocab: int, seed: int) -> list[dict]:
    """Token rows with log-uniform lengths; the first ~40% of each is prompt (label -100), the rest answer."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        length = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
        ids = [rng.randrange(5, vocab) for _ in range(length)]
        prompt = max(1, int(0.4 * length))
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


def arrow_rows(rows: list[dict]):
    """The rows as an Arrow table with int32 list columns (the layout `data prepare` writes)."""
    import pyarrow as pa

    return pa.table(
        {
            "input_ids": pa.array([r["input_ids"] for r in rows], pa.list_(pa.int32())),
            "labels": pa.array([r["labels"] for r in rows], pa.list_(pa.int32())),
        }
    )


def llama(shape: dict, attn: str, device: str, seed: int = 0):
    """A randomly initialised Llama-shaped causal LM built from a config on `device` (fp32 weights)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **shape,
        tie_word_embeddings=True,
        max_position_embeddings=16384,
        attn_implementation=attn,
        use_cache=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        return LlamaForCausalLM(config)


def autocast(device: str, dtype: str):
    """bf16 autocast over fp32 weights (what TrainingArguments(bf16=True) does), or nothing for fp32."""
    import torch

    if dtype == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: dict, device: str) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def grad_rel_error(a: dict, b: dict) -> float:
    """Max over parameter tensors of ‖a − b‖ / ‖b‖ (tensors whose reference gradient is zero skipped)."""
    worst = 0.0
    for name, ref in b.items():
        norm = float(ref.float().norm())
        if norm > 0:
            worst = max(worst, float((a[name].float() - ref.float()).norm()) / norm)
    return worst


def attention_implementations(ctx: Ctx) -> dict[str, str | None]:
    """Each attention implementation the check covers → None when usable here, else why not."""
    import torch
    from transformers.utils import import_utils as iu

    found: dict[str, str | None] = {"sdpa": None}
    if not iu.is_torch_flex_attn_available():
        found["flex_attention"] = f"skipped: torch {torch.__version__} has no usable flex_attention"
    elif not ctx.cuda:
        found["flex_attention"] = "skipped: no CUDA (flex_attention compiles kernels; CPU mode keeps to sdpa)"
    else:
        found["flex_attention"] = None
    for impl, probe in (
        ("flash_attention_2", "is_flash_attn_2_available"),
        ("flash_attention_3", "is_flash_attn_3_available"),
    ):
        available = getattr(iu, probe, lambda: False)()
        found[impl] = None if available and ctx.cuda else f"skipped: {impl} not installed or no CUDA"
    return found


# ------------------------------------------------------------------------------------------ env


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


# ------------------------------------------------------------------------------------------ packing


def section_packing(ctx: Ctx) -> None:
    """Packed vs one-at-a-time, per attention implementation and dtype (sdpa first, compiled kernels last)."""
    impls = attention_implementations(ctx)
    order = ["sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"]
    for impl in order:
        for dtype in ("fp32", "bf16"):
            ctx.case(f"{impl}/{dtype}", packing_case, ctx, impl, dtype, impls[impl])


def packing_case(ctx: Ctx, impl: str, dtype: str, unavailable: str | None) -> dict:
    """Pre-flight isolation, then loss, per-token loss and gradients: packed (real path) vs one at a time."""
    import torch

    from instructkit.train.collators import assert_packed_isolation, packed_cross_talk

    if unavailable:
        raise Skip(unavailable)
    if dtype == "bf16":
        no_cuda_skip(ctx, "bf16")
    if dtype == "fp32" and impl.startswith("flash"):
        raise Skip("skipped: flash-attention has no fp32 kernel")
    model = llama(ctx.sizes.pack_model, impl, ctx.device, seed=3)
    leak = packed_cross_talk(model)
    assert_packed_isolation(model)  # raises (→ error) if packed examples can see each other
    batch, order, features = _packed_batch(ctx)
    tol = TOLERANCES["packing"][dtype]
    packed_loss, packed_tokens, packed_grads = _packed_forward_backward(ctx, model, batch, dtype)
    ref_loss, ref_tokens, ref_grads = _one_at_a_time(ctx, model, [features[i] for i in order], dtype)
    leak_tokens = _leaky_tokens(ctx, model, batch, dtype)
    loss_rel = abs(packed_loss - ref_loss) / abs(ref_loss)
    token_abs = float((packed_tokens - ref_tokens).abs().max())
    leak_abs = float((leak_tokens - ref_tokens).abs().max())
    grad_rel = grad_rel_error(packed_grads, ref_grads)
    del model
    checks = [
        check(
            "isolation pre-flight (relative logit change)", leak, TOLERANCES["packing"]["isolation_preflight"]
        ),
        check("mean loss relative error", loss_rel, tol["loss_rel"]),
        check("max per-token loss |Δ| (nats)", token_abs, tol["token_abs"]),
        check("max gradient relative error", grad_rel, tol["grad_rel"]),
    ]
    if dtype == "fp32":  # the comparison has teeth: the known leak (all-ones mask) is caught by it
        checks.append(check("leak control: all-ones mask per-token |Δ|", leak_abs, tol["token_abs"], ">"))
    metrics = {
        "tokens": int(batch["input_ids"].numel()),
        "examples": len(order),
        "loss": packed_loss,
        "leak_control_token_abs": leak_abs,
        "torch_version": torch.__version__,
    }
    return {"metrics": metrics, "checks": checks}


def _packed_batch(ctx: Ctx):
    """Rows packed by instructkit's pack_table and collated by its PackedCollator (several packs → one row)."""
    import torch  # noqa: F401

    from instructkit.data.packing import pack_table
    from instructkit.train.collators import PackedCollator

    n, lo, hi = ctx.sizes.pack_lengths
    rows = synthetic_rows(n, lo, hi, ctx.sizes.pack_model["vocab_size"], seed=7)
    packed, _ = pack_table(arrow_rows(rows), capacity=2 * hi)
    features = packed.to_pylist()
    batch = PackedCollator("sft")(features)
    order = [i for f in features for i in f["example_ids"]]
    return batch, order, rows


def _token_losses(logits, targets):
    import torch.nn.functional as F

    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )


def _packed_forward_backward(ctx: Ctx, model, batch: dict, dtype: str):
    """InstructTrainer.compute_loss on the packed batch (logits only at labelled positions), then backward."""
    from transformers import TrainingArguments

    from instructkit.data.prepared import IGNORE_INDEX as IGNORE
    from instructkit.train.trainer import InstructTrainer, next_token_targets

    args = TrainingArguments(output_dir=str(ctx.work / "packing"), report_to="none", use_cpu=not ctx.cuda)
    trainer = InstructTrainer(model=model, args=args, packed=True)
    batch = to_device(batch, ctx.device)
    targets = next_token_targets(batch["labels"])
    count = int(targets.ne(IGNORE).sum())
    model.zero_grad()
    with autocast(ctx.device, dtype):
        loss, out = trainer.compute_loss(model, dict(batch), return_outputs=True, num_items_in_batch=count)
    loss.backward()
    tokens = _token_losses(out.logits, targets[targets.ne(IGNORE)]).detach()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
    return float(loss), tokens, grads


def _one_at_a_time(ctx: Ctx, model, rows: list[dict], dtype: str):
    """Each example alone (no packing), token-mean over all of them, with instructkit's causal_lm_loss."""
    import torch

    from instructkit.data.prepared import IGNORE_INDEX as IGNORE
    from instructkit.train.trainer import causal_lm_loss, next_token_targets

    count = sum(sum(1 for x in r["labels"][1:] if x != IGNORE) for r in rows)
    model.zero_grad()
    total, tokens = 0.0, []
    for r in rows:
        ids = torch.tensor([r["input_ids"]], device=ctx.device)
        labels = torch.tensor([r["labels"]], device=ctx.device)
        with autocast(ctx.device, dtype):
            out = model(input_ids=ids, use_cache=False)
        loss = causal_lm_loss(out, labels, num_items_in_batch=count)
        loss.backward()  # gradients accumulate: the same token mean as one backward of the sum
        total += float(loss)
        targets = next_token_targets(labels)
        keep = targets.ne(IGNORE)
        tokens.append(_token_losses(out.logits[keep], targets[keep]).detach())
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
    return total, torch.cat(tokens), grads


def _leaky_tokens(ctx: Ctx, model, batch: dict, dtype: str):
    """Per-token losses of the packed row with an all-ones attention mask (the known cross-talk)."""
    import torch

    from instructkit.data.prepared import IGNORE_INDEX as IGNORE
    from instructkit.train.trainer import next_token_targets

    batch = to_device(batch, ctx.device)
    targets = next_token_targets(batch["labels"])
    keep = targets.ne(IGNORE)
    with torch.no_grad(), autocast(ctx.device, dtype):
        out = model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            attention_mask=torch.ones_like(batch["input_ids"]),
            use_cache=False,
        )
    return _token_losses(out.logits[keep], targets[keep])


# ------------------------------------------------------------------------------------------ train


def section_train(ctx: Ctx) -> None:
    """Throughput and MFU of the real trainer over the (model, method, packed, checkpointing) matrix."""
    data = _train_datasets(ctx)
    for model_name, method, packed, gc in ctx.sizes.train_matrix:
        name = f"{model_name}/{method}/{'packed' if packed else 'padded'}/{'gc' if gc else 'no-gc'}"
        ctx.case(name, train_case, ctx, model_name, method, packed, gc, data)


def _train_datasets(ctx: Ctx) -> dict:
    """The same synthetic rows packed (pack_table) and padded (with a length column), and their lengths."""
    import datasets
    import pyarrow as pa

    from instructkit.data.packing import pack_table

    n, lo, hi = ctx.sizes.train_rows
    vocab = min(shape["vocab_size"] for shape in ctx.sizes.train_models.values())
    rows = synthetic_rows(n, lo, hi, vocab, seed=11)
    table = arrow_rows(rows)
    packed, stats = pack_table(table, ctx.sizes.pack_capacity)
    padded = table.append_column("length", pa.array([len(r["input_ids"]) for r in rows], pa.int32()))
    lengths = [len(r["input_ids"]) for r in rows]
    return {
        "packed": datasets.Dataset(packed),
        "padded": datasets.Dataset(padded),
        "mean_sq_over_mean": sum(x * x for x in lengths) / sum(lengths),  # E[s²]/E[s] for attention flops
        "packing_efficiency": stats.efficiency,
    }


def flops_per_token(model, shape: dict, data: dict, trainable_share: float) -> float:
    """Model flops per token (MFU, not HFU: recomputation not counted).

    Linear layers: 6 flops per weight per token when the weight is trained, 4 when frozen (LoRA: no weight
    gradient); the LM head counts only for tokens that carry a label (logits_to_keep); the input embedding
    is a lookup. Causal attention: 6·L·d·s per token of a length-s example (QKᵀ and AV, forward + backward).
    """
    embed = model.get_input_embeddings().weight
    head_params = embed.numel()  # tied: the head is the embedding matrix
    body_trained = sum(p.numel() for p in model.parameters() if p.requires_grad and p is not embed)
    body_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad and p is not embed)
    head = (6 if embed.requires_grad else 4) * head_params * trainable_share
    attention = 6 * shape["num_hidden_layers"] * shape["hidden_size"] * data["mean_sq_over_mean"]
    return 6 * body_trained + 4 * body_frozen + head + attention


def log_capture(sink: list):
    """A TrainerCallback that collects the trainer's logs (instructkit adds tokens and tokens/s per log step)."""
    from transformers import TrainerCallback

    class Capture(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                sink.append(dict(logs))

    return Capture()


def train_case(ctx: Ctx, model_name: str, method: str, packed: bool, gc: bool, data: dict) -> dict:
    """InstructTrainer with instructkit's TrainingArguments, collators, LoRA and pre-flight, timed per step."""
    import torch
    from transformers.trainer_callback import PrinterCallback

    from instructkit.train.collators import PackedCollator, PaddedCollator, assert_packed_isolation
    from instructkit.train.config import TrainConfig
    from instructkit.train.lora import apply_lora
    from instructkit.train.setup import training_arguments
    from instructkit.train.trainer import InstructTrainer

    sizes, shape = ctx.sizes, ctx.sizes.train_models[model_name]
    precision = "bf16" if ctx.cuda else "fp32"
    config = TrainConfig(
        data=ctx.work,
        output_dir=ctx.work / "train" / re.sub(r"\W", "_", f"{model_name}-{method}-{packed}-{gc}"),
        model=model_name,
        method=method,
        micro_batch_size=1 if packed else sizes.padded_batch,
        gradient_accumulation_steps=1,
        gradient_checkpointing=gc,
        precision=precision,
        max_steps=sizes.warmup_steps + sizes.measured_steps,
        learning_rate=1e-5,
        logging_steps=1,
        save_steps=10**6,
        progress=False,
    )
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats()
    model = llama(shape, "sdpa", ctx.device)
    if method == "lora":
        model = apply_lora(
            model, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules
        )
    if packed:
        assert_packed_isolation(model)
    base = model.get_base_model() if method == "lora" else model
    dataset = data["packed" if packed else "padded"]
    collator = PackedCollator("sft") if packed else PaddedCollator(0, "sft")
    logs: list[dict] = []
    trainer = InstructTrainer(
        model=model,
        args=training_arguments(config, precision, packed),
        train_dataset=dataset,
        data_collator=collator,
        packed=packed,
        callbacks=[log_capture(logs)],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    steps = [r for r in logs if "tokens_per_second" in r][sizes.warmup_steps :]
    tokens = sum(r["tokens"] for r in steps)
    trainable = sum(r["trainable_tokens"] for r in steps)
    seconds = sum(r["tokens"] / r["tokens_per_second"] for r in steps)
    per_token = flops_per_token(base, shape, data, trainable / max(tokens, 1))
    n_params = sum(p.numel() for p in base.parameters())
    metrics = {
        "precision": precision,
        "params_M": round(n_params / 1e6, 1),
        "trainable_params_M": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2),
        "measured_steps": len(steps),
        "tokens_per_step": tokens / max(len(steps), 1),
        "tokens_per_s": tokens / seconds if seconds else None,
        "trainable_tokens_per_s": trainable / seconds if seconds else None,
        "flops_per_token": per_token,
        "final_loss": steps[-1]["loss"] if steps else None,
    }
    if packed:
        metrics["packing_efficiency"] = round(data["packing_efficiency"], 4)
    if ctx.cuda:
        metrics["peak_memory_GB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        peak = ctx.options["peak_flops"]
        metrics["mfu"] = (
            per_token * metrics["tokens_per_s"] / peak if peak and metrics["tokens_per_s"] else None
        )
    else:
        metrics["mfu"] = "skipped: no CUDA"
        metrics["bf16"] = "skipped: no CUDA"
    del trainer, model, base
    loss = metrics["final_loss"]
    checks = [
        check("measured steps", len(steps), sizes.measured_steps, "=="),
        check("final loss is finite", loss is not None and math.isfinite(loss), True, "=="),
    ]
    return {"metrics": metrics, "checks": checks}


# ------------------------------------------------------------------------------------------ eval

EVAL_CORPUS = [
    "What is 12 plus 35? The answer is 47.",
    "Write a short poem about the sea. The waves roll in and out.",
    "Is the following sentence positive or negative? I loved this movie. positive",
    "Read the paragraph and answer: where did Alice go? Alice went to the market.",
    "Sort the list: 3 1 2. Answer: 1 2 3",
    "Translate to French: cat -> chat. dog -> chien.",
] * 30
CHOICES = [" yes", " no thanks", " maybe later today, friend", " 4"]


def section_eval(ctx: Ctx) -> None:
    """HFBackend on the device vs the CPU fp32 reference (batch size 1), then throughput."""
    from instructkit.models.tiny import TinyPreset, build_tiny_model, train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer(EVAL_CORPUS, vocab_size=512)
    hidden, layers, heads, inter = ctx.sizes.eval_preset
    model = build_tiny_model(TinyPreset(hidden, layers, heads, inter, 512), tokenizer, seed=0).eval()
    _sharpen(model)
    ll_reqs, gen_reqs = _eval_requests(ctx.sizes.eval_requests)
    reference = _cpu_reference(model, tokenizer, ll_reqs, gen_reqs)
    for dtype in ("fp32", "bf16"):
        ctx.case(
            f"{dtype} vs CPU fp32", eval_case, ctx, model, tokenizer, reference, dtype, ll_reqs, gen_reqs
        )
    ctx.case(
        "throughput/equivalence-model/fp32", eval_throughput, ctx, model, tokenizer, "fp32", ll_reqs, gen_reqs
    )
    for name, (hidden, layers, heads, inter) in ctx.sizes.eval_throughput.items():
        big = build_tiny_model(TinyPreset(hidden, layers, heads, inter, 512), tokenizer, seed=1).eval()
        ctx.case(f"throughput/{name}/bf16", eval_throughput, ctx, big, tokenizer, "bf16", ll_reqs, gen_reqs)


def _sharpen(model) -> None:
    """Scale the tied embedding so a random model's next-token distribution is peaked (greedy text is stable)."""
    import torch

    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10.0)


def _eval_requests(n: int):
    from instructkit.evaluate.requests import GenerationRequest, LoglikelihoodRequest

    ll = []
    for i in range(n):
        ctx = f"Question: what is {i} plus {3 * i}? " + "word " * (i % 7) + "Answer:"
        ll += [LoglikelihoodRequest(ctx, c) for c in CHOICES]
    ll.append(LoglikelihoodRequest("", "hello there"))
    prompts = ["Hello, how are", "What is 12 plus 35? The answer is", "Sort", "Translate to French: cat"]
    gen = [
        GenerationRequest(prompts[i % len(prompts)] + " " * (i // len(prompts)), max_new_tokens=16)
        for i in range(n)
    ]
    return ll, gen


def _cpu_reference(model, tokenizer, ll_reqs, gen_reqs) -> dict:
    """The CPU fp32 answers, one request per batch (batch size cannot change them: a pinned invariant)."""
    import copy

    from instructkit.evaluate.backends.hf import HFBackend

    backend = HFBackend(copy.deepcopy(model).float().to("cpu"), tokenizer, batch_size=1)
    return {"ll": backend.loglikelihood(ll_reqs), "gen": [s[0].text for s in backend.generate(gen_reqs)]}


def _device_backend(ctx: Ctx, model, tokenizer, dtype: str, batch_size: int = 16):
    import copy

    import torch

    from instructkit.evaluate.backends.hf import HFBackend

    weights = copy.deepcopy(model).to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    return HFBackend(weights.to(ctx.device).eval(), tokenizer, batch_size=batch_size)


def eval_case(ctx: Ctx, model, tokenizer, reference: dict, dtype: str, ll_reqs, gen_reqs) -> dict:
    """Log-likelihoods within tolerance of the CPU reference; greedy texts identical (bf16: mostly)."""
    if dtype == "bf16":
        no_cuda_skip(ctx, "bf16")
    backend = _device_backend(ctx, model, tokenizer, dtype)
    got = backend.loglikelihood(ll_reqs)
    texts = [s[0].text for s in backend.generate(gen_reqs)]
    tol = TOLERANCES["eval"][dtype]
    ratio = max(
        abs(a.logprob - b.logprob) / (tol["ll_abs"] + tol["ll_rel"] * abs(b.logprob))
        for a, b in zip(got, reference["ll"])
    )
    max_abs = max(abs(a.logprob - b.logprob) for a, b in zip(got, reference["ll"]))
    greedy_flags = sum(a.is_greedy == b.is_greedy for a, b in zip(got, reference["ll"])) / len(got)
    match = sum(a == b for a, b in zip(texts, reference["gen"])) / len(texts)
    checks = [
        check("max |Δll| / (abs + rel·|ll|) tolerance", ratio, 1.0),
        check("greedy text match share", match, tol["greedy_match"], ">="),
    ]
    if dtype == "fp32":
        checks.append(check("is_greedy flags agree (share)", greedy_flags, 1.0, "=="))
    metrics = {
        "requests": len(got),
        "generations": len(texts),
        "max_abs_ll_diff": max_abs,
        "greedy_flag_agreement": greedy_flags,
    }
    return {"metrics": metrics, "checks": checks}


def eval_throughput(ctx: Ctx, model, tokenizer, dtype: str, ll_reqs, gen_reqs) -> dict:
    """Log-likelihood requests/s and generated tokens/s of HFBackend on the device (after one warm-up batch)."""
    import torch

    if dtype == "bf16":
        no_cuda_skip(ctx, "bf16")
    backend = _device_backend(ctx, model, tokenizer, dtype, batch_size=32)
    backend.loglikelihood(ll_reqs[:8])

    def timed(fn, *a):
        if ctx.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn(*a)
        if ctx.cuda:
            torch.cuda.synchronize()
        return out, time.perf_counter() - start

    lls, t_ll = timed(backend.loglikelihood, ll_reqs)
    gens, t_gen = timed(backend.generate, gen_reqs)
    new_tokens = sum(s[0].num_tokens for s in gens)
    metrics = {
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "loglikelihood_requests_per_s": len(lls) / t_ll,
        "generated_tokens_per_s": new_tokens / t_gen,
        "batch_size": 32,
    }
    return {"metrics": metrics, "checks": [check("generated tokens", new_tokens, 0, ">")]}


# ------------------------------------------------------------------------------------------ accelerate


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


SECTION_FUNCS: dict[str, Callable[[Ctx], None]] = {
    "env": section_env,
    "packing": section_packing,
    "train": section_train,
    "eval": section_eval,
    "accelerate": section_accelerate,
}


# ------------------------------------------------------------------------------------------ runner


def section_status(record: dict) -> str:
    """error (the section itself raised) > failed (a case failed or errored) > passed > skipped."""
    if record.get("traceback"):
        return "error"
    statuses = [c["status"] for c in record.get("cases", [])]
    if any(s in ("failed", "error", "running") for s in statuses):
        return "failed"
    return "passed" if "passed" in statuses else "skipped"


def run_section_here(name: str, ctx: Ctx) -> int:
    """Run one section in this process and save its record; 0 unless the section raised."""
    ctx.record = {"section": name, "status": "running", "cases": []}
    ctx.save()
    try:
        SECTION_FUNCS[name](ctx)
    except Exception:
        ctx.record["traceback"] = traceback.format_exc(limit=12)
    ctx.record["status"] = section_status(ctx.record)
    ctx.save()
    return 0 if ctx.record["status"] != "error" else 1


def _child_main(name: str, ctx: Ctx, log: Path) -> None:
    """In the forked child: own process group (so a timeout kills launched grandchildren), logs to a file."""
    os.setpgid(0, 0)
    fd = os.open(str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = 1
    try:
        code = run_section_here(name, ctx)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _start(name: str, ctx: Ctx, log: Path, isolation: str) -> int:
    """Start the section: fork (modules already imported) or spawn a fresh interpreter; return its pid."""
    if isolation == "fork":
        pid = os.fork()
        if pid == 0:
            _child_main(name, ctx, log)
        return pid
    cmd = [
        sys.executable,
        __file__,
        "section",
        name,
        "--device",
        ctx.device,
        "--work",
        str(ctx.work),
        "--result",
        str(ctx.result_path),
        "--budget",
        str(ctx.budget),
        "--options",
        json.dumps(ctx.options),
    ]
    with log.open("w") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True).pid


def _wait(pid: int, deadline: float) -> tuple[int | None, bool]:
    """(exit code, timed out): kill the section's whole process group at its deadline."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None, True
        time.sleep(0.2)


def run_isolated(name: str, ctx: Ctx, isolation: str, logs: Path) -> dict:
    """Run a section in its own process within its budget; return its record, however it ended."""
    log = logs / f"{name}.log"
    start = time.monotonic()
    pid = _start(name, ctx, log, isolation)
    code, timed_out = _wait(pid, ctx.deadline)
    record = (
        json.loads(ctx.result_path.read_text())
        if ctx.result_path.is_file()
        else {"section": name, "cases": []}
    )
    record["seconds"] = round(time.monotonic() - start, 1)
    record["budget_s"] = ctx.budget
    tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
    if timed_out:
        record["status"] = "timeout"
        record["traceback"] = f"killed at its {ctx.budget:.0f} s budget; log tail:\n{tail}"
    elif code != 0 and not record.get("traceback"):
        record["status"] = "error"
        record["traceback"] = f"section process exited with {code}; log tail:\n{tail}"
    return record


def _preimport() -> None:
    """Import the heavy modules once so forked sections start at once (never touches CUDA here)."""
    for module in (
        "torch",
        "transformers",
        "datasets",
        "accelerate",
        "peft",
        "instructkit.train.trainer",
        "instructkit.evaluate.backends.hf",
    ):
        with contextlib.suppress(Exception):
            __import__(module)


def run(args: argparse.Namespace) -> int:
    """All chosen sections, one after the other; results.json and results.md rewritten after each."""
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = CUDA_SIZES if args.device == "cuda" else CPU_SIZES
    budgets = dict(CUDA_BUDGETS if args.device == "cuda" else CPU_BUDGETS)
    for item in args.budget:
        name, seconds = item.split("=")
        budgets[name] = float(seconds)
    isolation = args.isolation
    if isolation == "fork":
        _preimport()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            isolation = "spawn"  # a forked child cannot use CUDA the parent initialised
    options = {"peak_flops": args.peak_tflops * 1e12, "accelerate_config": args.accelerate_config}
    summary = {
        "mode": args.device,
        "isolation": isolation,
        "peak_flops": options["peak_flops"],
        "peak_flops_note": "H200 SXM dense bf16 (989 TFLOPS) unless --peak-tflops says otherwise",
        "tolerances": TOLERANCES,
        "budgets_s": budgets,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sections": [],
    }
    t0 = time.monotonic()
    try:
        for name in args.sections.split(","):
            ctx = Ctx(
                args.device,
                sizes,
                work,
                work / f"{name}.json",
                time.monotonic() + budgets[name],
                budgets[name],
                options,
            )
            record = run_isolated(name, ctx, isolation, out / "logs")
            if name == "env" and isolation == "fork" and args.device == "cuda" and not _cuda_ok(record):
                isolation = summary["isolation"] = (
                    "spawn"  # forked sections could not use CUDA: use fresh ones
                )
                ctx = Ctx(
                    args.device,
                    sizes,
                    work,
                    work / "env.json",
                    time.monotonic() + budgets[name],
                    budgets[name],
                    options,
                )
                record = run_isolated(name, ctx, isolation, out / "logs")
            summary["sections"].append(record)
            summary["seconds"] = round(time.monotonic() - t0, 1)
            write_reports(summary, out)
    finally:
        summary["status"] = overall_status(summary["sections"])
        summary["seconds"] = round(time.monotonic() - t0, 1)
        write_reports(summary, out)
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    print((out / "results.md").read_text())
    return 0 if summary["status"] == "passed" else 1


def _cuda_ok(env_record: dict) -> bool:
    """Whether the env section's process could use CUDA."""
    return any(c["case"] == "device" and c["status"] == "passed" for c in env_record.get("cases", []))


def overall_status(sections: list[dict]) -> str:
    bad = [s["section"] for s in sections if s.get("status") not in ("passed", "skipped")]
    return "passed" if not bad else "failed: " + ", ".join(bad)


# ------------------------------------------------------------------------------------------ reports


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return f"[{len(value)} items]"
    return str(value)


KEY_METRICS = (
    "tokens_per_s",
    "mfu",
    "peak_memory_GB",
    "params_M",
    "trainable_params_M",
    "packing_efficiency",
    "loglikelihood_requests_per_s",
    "generated_tokens_per_s",
    "max_abs_ll_diff",
    "gpu",
    "transformers",
    "torch_version",
    "sharded_state_dict",
    "bf16",
)


def case_row(section: str, case: dict) -> str:
    """One Markdown row: section | case | status | checks (value op limit) | key metrics."""
    checks = "; ".join(
        f"{'✓' if c['ok'] else '✗'} {c['name']} {_fmt(c['value'])} {c['op']} {_fmt(c['limit'])}"
        for c in case.get("checks", [])
    )
    metrics = case.get("metrics", {})
    shown = {k: metrics[k] for k in KEY_METRICS if k in metrics} or metrics
    note = case.get("reason") or (case.get("traceback", "").strip().splitlines() or [""])[-1]
    detail = _fmt(shown) if isinstance(shown, dict) and len(str(shown)) < 400 else ""
    cells = [section, case["case"], case["status"], checks or note, detail]
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def to_markdown(summary: dict) -> str:
    """The section summary, then one row per case."""
    lines = [
        f"# gpu_check — {summary['mode']} — {summary.get('status', 'running')} ({summary.get('seconds', 0)} s)",
        "",
        f"peak for MFU: {summary['peak_flops'] / 1e12:.0f} TFLOPS ({summary['peak_flops_note']}); "
        f"sections isolated by {summary['isolation']}",
        "",
        "| section | status | seconds | budget |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s['section']} | {s.get('status')} | {s.get('seconds')} | {s.get('budget_s')} |"
        for s in summary["sections"]
    ]
    lines += ["", "| section | case | status | checks / reason | metrics |", "|---|---|---|---|---|"]
    for s in summary["sections"]:
        if s.get("status") in ("error", "timeout") and s.get("traceback"):
            last = s["traceback"].strip().splitlines()[-1] if s["traceback"].strip() else ""
            lines.append(f"| {s['section']} | (section) | {s['status']} | {last.replace('|', '/')} |  |")
        lines += [case_row(s["section"], c) for c in s.get("cases", [])]
    return "\n".join(lines) + "\n"


def write_reports(summary: dict, out: Path) -> None:
    _write_json(out / "results.json", summary)
    (out / "results.md").write_text(to_markdown(summary))


# ------------------------------------------------------------------------------------------ wheels

# What the GPU machine already has (and what is too big to carry); everything else instructkit needs is carried.
DEVICE_PROVIDED = {
    "torch",
    "numpy",
    "pyarrow",
    "triton",
    "sympy",
    "mpmath",
    "networkx",
    "setuptools",
    "matplotlib",
    "pip",
    "instructkit",
}
MARKER_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_pins(root: str = "instructkit") -> dict[str, str]:
    """instructkit's runtime dependency closure, at the versions installed here, minus what the device has."""
    from importlib import metadata

    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    todo = [root]
    while todo:
        dist = metadata.distribution(todo.pop())
        for spec in dist.requires or []:
            req = Requirement(spec)
            name = _norm(req.name)
            if name in pins or name in DEVICE_PROVIDED or name.startswith("nvidia-"):
                continue
            if req.marker and not req.marker.evaluate(MARKER_ENV):
                continue
            try:
                pins[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue  # not needed on this platform's install either
            todo.append(name)
    return dict(sorted(pins.items()))


def download_wheels(dest: Path, python_version: str, limit_mib: float) -> int:
    """pip download the pinned closure as Python `python_version` manylinux/pure wheels into `dest`."""
    pins = wheel_pins()
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--platform",
        "manylinux2014_x86_64",
        "--platform",
        "manylinux_2_17_x86_64",
        "--platform",
        "manylinux_2_28_x86_64",
        "-d",
        str(dest),
    ]
    cmd += [f"{name}=={version}" for name, version in pins.items()]
    code = subprocess.call(cmd)
    size = sum(p.stat().st_size for p in dest.glob("*.whl")) / 2**20
    print(f"{len(list(dest.glob('*.whl')))} wheels, {size:.1f} MiB in {dest} (limit {limit_mib} MiB)")
    if size > limit_mib:
        print("too big to carry: drop some pins or raise the limit", file=sys.stderr)
        return 1
    return code


def _version_key(version: str):
    try:
        from packaging.version import Version

        return Version(version)
    except Exception:
        return tuple(int(x) for x in re.findall(r"\d+", version))


def _compatible(filename: str) -> bool:
    """Whether this interpreter can use the wheel (a cp312 wheel is never unpacked into Python 3.11)."""
    try:
        from packaging.tags import sys_tags
        from packaging.utils import parse_wheel_filename
    except ImportError:
        return True
    return bool(set(parse_wheel_filename(filename)[3]) & set(sys_tags()))


def install_wheels(folder: Path, target: Path) -> list[dict]:
    """Install each carried wheel whose distribution is missing here or older, into `target` (no index, no deps)."""
    from importlib import metadata

    chosen, manifest = [], []
    for wheel in sorted(folder.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        install = _compatible(wheel.name) and (have is None or _version_key(have) < _version_key(version))
        manifest.append({"name": name, "carried": version, "device": have, "installed": install})
        if install:
            chosen.append(str(wheel))
    target.mkdir(parents=True, exist_ok=True)
    if chosen:
        _pip_or_unzip(chosen, target)
    _write_json(target / "manifest.json", manifest)
    return manifest


def _pip_or_unzip(wheels: list[str], target: Path) -> None:
    """pip install --target (no index, no deps); where pip is missing or fails, unpack the wheels instead."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-index",
        "--no-deps",
        "--no-compile",
        "--disable-pip-version-check",
        "--target",
        str(target),
        *wheels,
    ]
    if subprocess.call(cmd) == 0:
        return
    print("pip install failed; unpacking the wheels into the target instead", file=sys.stderr)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(target)
    for data in target.glob("*.data"):
        for sub in ("purelib", "platlib"):
            for item in (data / sub).glob("*") if (data / sub).is_dir() else []:
                shutil.move(str(item), str(target / item.name))
        shutil.rmtree(data)


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the check (default device: cuda)")
    r.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    r.add_argument("--out", default=os.environ.get("OUT") or "out/gpu_check")
    r.add_argument("--sections", default=",".join(SECTIONS))
    r.add_argument("--isolation", choices=("fork", "spawn"), default="fork")
    r.add_argument("--peak-tflops", type=float, default=H200_BF16_PEAK_FLOPS / 1e12)
    r.add_argument("--accelerate-config", default=None, help="default: configs/accelerate/fsdp.yaml")
    r.add_argument(
        "--work", default=None, help="scratch folder (default: a new temporary one, deleted after)"
    )
    r.add_argument("--keep-work", action="store_true")
    r.add_argument(
        "--budget", action="append", default=[], metavar="SECTION=SECONDS", help="override a budget"
    )
    s = sub.add_parser("section", help="(internal) run one section in this process")
    s.add_argument("name", choices=SECTIONS)
    s.add_argument("--device", required=True)
    s.add_argument("--work", required=True)
    s.add_argument("--result", required=True)
    s.add_argument("--budget", type=float, required=True)
    s.add_argument("--options", default="{}")
    w = sub.add_parser("wheels", help="download the wheels the GPU machine lacks")
    w.add_argument("--dest", default="benchmarks/_work/gpu_wheels")
    w.add_argument("--python-version", default="3.12")
    w.add_argument("--limit-mib", type=float, default=56.0)
    i = sub.add_parser("install-wheels", help="install carried wheels the running Python lacks")
    i.add_argument("folder")
    i.add_argument("target")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "run":
        return run(args)
    if args.command == "section":
        sizes = CUDA_SIZES if args.device == "cuda" else CPU_SIZES
        ctx = Ctx(
            args.device,
            sizes,
            Path(args.work),
            Path(args.result),
            time.monotonic() + args.budget,
            args.budget,
            json.loads(args.options),
        )
        return run_section_here(args.name, ctx)
    if args.command == "wheels":
        return download_wheels(Path(args.dest), args.python_version, args.limit_mib)
    manifest = install_wheels(Path(args.folder), Path(args.target))
    print(
        f"installed {sum(m['installed'] for m in manifest)} of {len(manifest)} carried wheels into {args.target}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
