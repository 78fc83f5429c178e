"""One prepared check that the toolkit's GPU paths work: `make gpu-check` (CUDA) or `DEVICE=cpu` (tiny sizes).

Sections, each in its own forked process with its own time budget; one that fails or runs out of time is
recorded (traceback, log tail) and the others still run; `results.json` and `results.md` are rewritten in
`--out` after every section, so a partial run still leaves both:
  env         versions, GPU, attention implementations, wheels installed from the carried folder;
  packing     packed vs one-at-a-time loss, per-token loss and gradients per attention implementation and
              dtype, through PackedCollator → InstructTrainer.compute_loss, after the isolation pre-flight;
  varlen      packed attention alone (one layer, forward + backward): torch's varlen_attn
              (`instructkit_varlen`) vs sdpa with a dense block mask vs `instructkit_docs`, time and parity;
  loss        LM head + cross-entropy on a long row: peak memory and time, chunked vs one projection;
  train       tokens/s and MFU of InstructTrainer on a ~1B Llama-shaped random-init model (and a
              SmolLM2-135M-shaped one): packed vs padded, gradient checkpointing off/on, full vs LoRA;
  eval        HFBackend on the device vs on CPU (log-likelihoods, greedy text), and its throughput;
  accelerate  `accelerate launch` of `instructkit train` under configs/accelerate/fsdp.yaml with one process,
              sharded state dict, a checkpoint, an interruption and `--resume`; every config file parsed.
Everything goes through the package's public functions; nothing is re-implemented here. Model shapes
come from `instructkit.models.tiny` presets.

Layout: `config` (sizes, budgets, tolerances), `context` (a section's context and case records),
`helpers` (synthetic data, models), `sections/` (one module per section), `runner` (isolated
processes, budgets), `report` (results.json / results.md), `wheels` (the carried-wheel bundle), `cli`.
Run `python scripts/gpu_check run ...` (or `python -m gpu_check` with scripts/ on the path); other
commands: `wheels` (here: download the wheels the device lacks) and `install-wheels` (there).
"""

from __future__ import annotations

import os

# torch.cuda.is_available() through NVML does not initialise CUDA, so forked sections can still use it.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from .cli import main  # noqa: E402
from .config import CPU_SIZES, CUDA_SIZES, SECTIONS, TOLERANCES  # noqa: E402
from .runner import section_status  # noqa: E402
from .wheels import install_wheels, wheel_pins  # noqa: E402

__all__ = [
    "CPU_SIZES",
    "CUDA_SIZES",
    "SECTIONS",
    "TOLERANCES",
    "install_wheels",
    "main",
    "section_status",
    "wheel_pins",
]
