"""Section `loss`: the LM head + cross-entropy of one long row, as InstructTrainer computes it.

One projection of every labelled position (`token_loss_sum(F.linear(...))`, the path for ordinary rows)
against `chunked_token_loss_sum` (the path for rows over LOSS_CHUNK_TOKENS): peak memory of forward +
backward, time, and parity of the loss and gradients. Beside TRL's chunked loss where TRL is carried.
"""

from __future__ import annotations

from ..config import TOLERANCES
from ..context import Ctx, Skip, check
from ..helpers import timed_step

ONE, CHUNKED = "one projection", "chunked"


def section_loss(ctx: Ctx) -> None:
    ctx.case("LM head + loss: chunked vs one projection", loss_case, ctx)
    ctx.case("TRL chunked loss", trl_case)


def loss_case(ctx: Ctx) -> dict:
    """fp32 master weights under bf16 autocast on CUDA (fp32 on CPU), as training runs them."""
    import torch
    import torch.nn.functional as F

    from instructkit.train.trainer import chunked_token_loss_sum, token_loss_sum

    tokens, hidden_size, vocab, chunk = ctx.sizes.loss_shape
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(tokens, hidden_size, generator=gen).to(ctx.device).requires_grad_()
    weight = (0.02 * torch.randn(vocab, hidden_size, generator=gen)).to(ctx.device).requires_grad_()
    targets = torch.randint(0, vocab, (tokens,), generator=gen).to(ctx.device)
    precision = "bf16" if ctx.cuda else "fp32"
    paths = {
        ONE: lambda: token_loss_sum(F.linear(hidden, weight), targets),
        CHUNKED: lambda: chunked_token_loss_sum(hidden, weight, targets, chunk_size=chunk),
    }

    def step(path):
        hidden.grad = weight.grad = None
        with torch.autocast(ctx.device, dtype=torch.bfloat16, enabled=ctx.cuda):
            loss = paths[path]()
        loss.backward()
        return loss.detach()

    metrics: dict = {"tokens": tokens, "vocab": vocab, "chunk": chunk, "precision": precision}
    metrics["logits_GB"] = tokens * vocab * (2 if ctx.cuda else 4) / 2**30
    results = {}
    for path in paths:
        metrics[f"ms_{path}"], metrics[f"peak_memory_GB_{path}"] = timed_step(
            lambda path=path: step(path), ctx
        )
        loss = step(path)
        results[path] = [loss.float().cpu(), hidden.grad.float().cpu(), weight.grad.float().cpu()]
    tol = TOLERANCES["loss"][precision]
    errors = [float((a - b).abs().max() / b.abs().max()) for a, b in zip(results[CHUNKED], results[ONE])]
    metrics |= {"loss_rel": errors[0], "grad_hidden_rel": errors[1], "grad_weight_rel": errors[2]}
    checks = [check("chunked vs one projection: loss and gradients (max rel)", max(errors), tol)]
    if ctx.cuda:
        saving = metrics[f"peak_memory_GB_{ONE}"] / max(metrics[f"peak_memory_GB_{CHUNKED}"], 1e-9)
        metrics["memory_saving"] = saving
        checks.append(check("peak memory one projection / chunked", saving, 1.0, ">"))
    return {"metrics": metrics, "checks": checks}


def trl_case() -> dict:
    """TRL is a benchmark dependency, not one of instructkit's, so the wheel bundle does not carry it."""
    try:
        import trl
    except ImportError:
        raise Skip("skipped: TRL is not carried (not an instructkit runtime dependency)") from None
    raise Skip(f"skipped: TRL {trl.__version__} present, but its chunked loss lives inside SFTTrainer")
