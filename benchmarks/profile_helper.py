"""Where a training step's time goes: torch.profiler self CPU time per category, for any HF Trainer.

`StepProfiler(after, steps)` profiles the optimizer steps after step `after` for `steps` steps: it opens a
`bench::<category>` record_function around the model's modules (by name: attention, q/k/v/o projections,
MLP, LM head), the trainer's loss, data fetching, gradient clipping and causal-mask building, then sums
self CPU time per category; backward ops count in the category of the forward op that recorded them.
Used by benchmarks/bench_train_real.py (instructkit vs TRL); `profile_table` renders the result.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from unittest import mock

import torch

# Profile categories: record_function scopes opened around modules and trainer methods.
CATEGORIES = {
    "attention": "attention (sdpa / per-document, RoPE, mask)",
    "proj": "q/k/v/o projections",
    "mlp": "MLP (gate/up/down, SiLU)",
    "head": "LM head + loss",
    "backbone": "embeddings, norms, residuals",
    "data": "data (fetch, collate)",
    "optim": "optimizer (AdamW, clipping, grad accumulation)",
    "other": "other (Trainer loop, logging, unattributed)",
}
SCOPE = "bench::"


def module_category(name: str) -> str | None:
    """The category of a Llama-family module by its name, or None (not scoped)."""
    last = name.rsplit(".", 1)[-1]
    if last in ("q_proj", "k_proj", "v_proj", "o_proj"):
        return "proj"
    return {"self_attn": "attention", "mlp": "mlp", "lm_head": "head"}.get(last)


@contextlib.contextmanager
def category_scopes(trainer) -> Iterator[None]:
    """Open a `bench::<category>` record_function around the modules, the loss, data fetching,
    gradient clipping and causal-mask building while profiling; everything is restored on exit."""
    from transformers.models.llama import modeling_llama

    stack: list = []

    def enter(label: str) -> Callable:
        def hook(*_):
            scope = torch.profiler.record_function(SCOPE + label)
            scope.__enter__()
            stack.append(scope)

        return hook

    def leave(*_):
        stack.pop().__exit__(None, None, None)

    def scoped(fn: Callable, label: str) -> Callable:
        def wrapper(*args, **kwargs):
            with torch.profiler.record_function(SCOPE + label):
                return fn(*args, **kwargs)

        return wrapper

    model = trainer.model
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    modules = [(n, m) for n, m in model.named_modules() if module_category(n)]
    modules.append(("backbone", causal.base_model))
    handles = []
    for name, module in modules:
        label = module_category(name) or "backbone"
        handles.append(module.register_forward_pre_hook(enter(label)))
        handles.append(module.register_forward_hook(leave))
    patches = [
        mock.patch.object(trainer, "compute_loss", scoped(trainer.compute_loss, "head")),
        mock.patch.object(trainer, "get_batch_samples", scoped(trainer.get_batch_samples, "data")),
        mock.patch.object(
            trainer.accelerator, "clip_grad_norm_", scoped(trainer.accelerator.clip_grad_norm_, "optim")
        ),
        mock.patch.object(
            modeling_llama, "create_causal_mask", scoped(modeling_llama.create_causal_mask, "attention")
        ),
    ]
    try:
        for p in patches:
            p.start()
        yield
    finally:
        for p in patches:
            p.stop()
        for h in handles:
            h.remove()


def event_label(event, cache: dict) -> str | tuple[str, int]:
    """The innermost scope above a profiler event: a category, or ("bwd", sequence_nr) for an op run
    by the autograd engine (attributed later to the category of the forward op that recorded it)."""
    chain, node, found = [], event, "other"
    while node is not None:
        if node.id in cache:
            found = cache[node.id]
            break
        chain.append(node.id)
        name = node.name
        if name.startswith(SCOPE):
            found = name[len(SCOPE) :]
            break
        if name.startswith("Optimizer."):
            found = "optim"
            break
        if name.startswith("autograd::engine::evaluate_function:"):
            found = "optim" if "AccumulateGrad" in name else ("bwd", node.sequence_nr)
            break
        node = node.cpu_parent
    for i in chain:
        cache[i] = found
    return found


def categorize(events) -> dict[str, float]:
    """Self CPU seconds per category; backward ops go to the category of their forward op."""
    cache: dict = {}
    labels = [(e, event_label(e, cache)) for e in events]
    forward: dict[int, str] = {}
    for e, label in labels:
        if isinstance(label, str) and e.sequence_nr >= 0:
            forward.setdefault(e.sequence_nr, label)
    seconds: dict[str, float] = defaultdict(float)
    for e, label in labels:
        if isinstance(label, tuple):
            label = forward.get(label[1], "other")
        seconds[label] += e.self_cpu_time_total / 1e6
    return dict(seconds)


class StepProfiler:
    """Profile steps (after, after + steps] of a Trainer run: per-category self CPU seconds per step."""

    def __init__(self, after: int, steps: int):
        self.after, self.steps = after, steps
        self.profiler: torch.profiler.profile | None = None
        self.scopes = contextlib.ExitStack()
        self.per_step: dict[str, float] = {}  # category -> self CPU seconds per profiled step
        self.wall = 0.0  # wall seconds per profiled step

    def attach(self, trainer) -> None:
        """Open the category scopes around the trainer's model and methods (no-op when not profiling)."""
        if self.steps:
            self.scopes.enter_context(category_scopes(trainer))

    def step_ended(self, step: int, step_seconds: list[float]) -> bool:
        """Call after every optimizer step with the step times so far; True once the profile is complete."""
        if not self.steps:
            return False
        if step == self.after:
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.profiler.__enter__()
        elif self.profiler is not None and step == self.after + self.steps:
            self.profiler.__exit__(None, None, None)
            self.wall = sum(step_seconds[-self.steps :]) / self.steps
            seconds = categorize(self.profiler.events())
            self.per_step = {k: v / self.steps for k, v in seconds.items()}
            self.profiler = None
            self.scopes.close()
            return True
        return False


def profile_table(columns: list[tuple[str, dict[str, float], float]]) -> list[str]:
    """Markdown rows: self CPU time per step by category, one column per (label, per-step seconds, wall)."""
    if not columns:
        return []
    head = " | ".join(label for label, _, _ in columns)
    lines = [f"| category | {head} |", "|---" + "|---:" * len(columns) + "|"]
    for key, name in CATEGORIES.items():
        cells = []
        for _, profile, _ in columns:
            total = sum(profile.values()) or 1.0
            s = profile.get(key, 0.0)
            cells.append(f"{1000 * s:,.0f} ms ({100 * s / total:.0f}%)")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    totals = " | ".join(f"{sum(p.values()):.2f} s / {wall:.2f} s" for _, p, wall in columns)
    lines.append(f"| profiled op time / wall time per step | {totals} |")
    return lines
