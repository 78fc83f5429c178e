"""What the check runs and against what: sections, time budgets, tolerances and the sizes of each mode.

Model shapes are `instructkit.models.tiny` presets with a few field overrides (`ModelSpec`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(__file__).resolve().parent

# Dense bf16 peak of one H200 SXM (NVIDIA datasheet: 1,979 TFLOPS with sparsity, half of it dense).
H200_BF16_PEAK_FLOPS = 989e12
SECTIONS = ("env", "packing", "varlen", "loss", "train", "eval", "accelerate")
# Seconds per section on CUDA; their sum (450 s) plus start-up keeps the whole run under 8 minutes.
CUDA_BUDGETS = {
    "env": 30,
    "packing": 80,
    "varlen": 40,
    "loss": 30,
    "train": 140,
    "eval": 50,
    "accelerate": 80,
}
CPU_BUDGETS = {
    "env": 30,
    "packing": 60,
    "varlen": 30,
    "loss": 30,
    "train": 90,
    "eval": 60,
    "accelerate": 90,
}

# Tolerances, stated once. packed vs one-at-a-time: relative error of the mean loss, max |Δ| of a token's
# cross-entropy (nats), max over parameter tensors of ‖g_packed − g_alone‖ / ‖g_alone‖.
TOLERANCES = {
    "packing": {
        "fp32": {"loss_rel": 1e-4, "token_abs": 5e-4, "grad_rel": 1e-3},
        "bf16": {"loss_rel": 1e-2, "token_abs": 0.1, "grad_rel": 5e-2},
        "isolation_preflight": 1e-3,  # instructkit's own assert_packed_isolation tolerance
    },
    # one attention layer vs sdpa with a dense block-causal mask: max |Δ| / max |reference| of the output
    # and of each input gradient
    "varlen": {"fp32": 1e-4, "bf16": 2e-2},
    # chunked vs one-shot LM head + loss: relative error of the loss sum and of each gradient
    "loss": {"fp32": 1e-5, "bf16": 2e-2},
    "eval": {  # device vs the CPU fp32 reference: |Δ log-likelihood| ≤ abs + rel·|ll|; greedy text match share
        "fp32": {"ll_abs": 1e-3, "ll_rel": 1e-4, "greedy_match": 1.0},
        "bf16": {"ll_abs": 0.1, "ll_rel": 0.02, "greedy_match": 0.75},
    },
    "accelerate": {"resumed_loss_rel": 1e-4},  # steps 3-4; a wrong data order or state moves it ~1e-2
}

ModelSpec = tuple[str, dict]  # (tiny preset, LlamaConfig field overrides)


@dataclass(frozen=True)
class Sizes:
    """Model shapes and data sizes of one mode (CUDA: real sizes; CPU: tiny, so the test suite runs it)."""

    pack_model: ModelSpec  # the packing-equivalence model
    pack_lengths: tuple[int, int, int]  # examples, min length, max length
    train_models: dict[str, ModelSpec]  # name → model
    train_matrix: tuple[tuple[str, str, bool, bool], ...]  # (model, method, packed, gradient checkpointing)
    train_rows: tuple[int, int, int]  # examples, min length, max length
    pack_capacity: int
    padded_batch: int
    warmup_steps: int
    measured_steps: int
    eval_preset: str  # the equivalence model
    eval_throughput: dict[str, str]  # name → preset
    eval_requests: int
    accelerate_model: str
    attention_heads: tuple[int, int, int]  # varlen section: query heads, key/value heads, head dim
    attention_rows: dict[str, tuple[int, int, int]]  # name → (row tokens, min, max document length)
    timing_repeats: int
    loss_shape: tuple[int, int, int, int]  # labelled tokens of one row, hidden, vocabulary, chunk


def _matrix(models: list[str], full: bool) -> tuple[tuple[str, str, bool, bool], ...]:
    """Every (method, packed, checkpointing) for the first model; full fine-tuning packed/padded for the rest."""
    first = [(models[0], m, p, g) for m in ("full", "lora") for g in (False, True) for p in (True, False)]
    rest = [(name, "full", p, False) for name in models[1:] for p in (True, False)]
    return tuple(first + rest) if full else tuple(first[:2] + first[6:])


CUDA_SIZES = Sizes(
    pack_model=("base", {"num_key_value_heads": 2, "vocab_size": 32768}),
    pack_lengths=(8, 48, 700),
    # Llama-3.2-1B's and SmolLM2-135M's shapes, random init (their weights do not fit the 64 MiB carry)
    train_models={"llama-1b": ("1b", {"rope_theta": 500000.0}), "smollm2-135m-shape": ("135m", {})},
    train_matrix=_matrix(["llama-1b", "smollm2-135m-shape"], full=True),
    train_rows=(900, 32, 2048),
    pack_capacity=8192,
    padded_batch=16,
    warmup_steps=2,
    measured_steps=6,
    eval_preset="small",
    eval_throughput={"smollm2-135m-body": "135m"},
    eval_requests=64,
    accelerate_model="tiny:small",
    attention_heads=(32, 8, 64),  # Llama-3.2-1B's attention
    attention_rows={
        "16k row, documents 64-4096": (16384, 64, 4096),
        "16k row, documents 16-256": (16384, 16, 256),
    },
    timing_repeats=5,
    loss_shape=(16384, 2048, 128256, 4096),  # a long row through Llama-3.2-1B's head
)
CPU_SIZES = Sizes(
    pack_model=("nano", {"num_key_value_heads": 2, "vocab_size": 512}),
    pack_lengths=(5, 6, 20),
    train_models={"tiny": ("nano", {"num_key_value_heads": 2, "vocab_size": 512})},
    train_matrix=_matrix(["tiny"], full=False),
    train_rows=(48, 8, 40),
    pack_capacity=128,
    padded_batch=4,
    warmup_steps=1,
    measured_steps=2,
    eval_preset="nano",
    eval_throughput={},
    eval_requests=8,
    accelerate_model="tiny:nano",
    attention_heads=(4, 2, 16),
    attention_rows={"256-token row, documents 4-64": (256, 4, 64)},
    timing_repeats=2,
    loss_shape=(300, 64, 1024, 128),
)
