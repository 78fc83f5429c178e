"""Section `packing`: packed vs one-at-a-time loss, per-token loss and gradients through the real trainer."""

from __future__ import annotations

import contextlib

from ..config import TOLERANCES
from ..context import Ctx, Skip, check, no_cuda_skip
from ..helpers import (
    arrow_rows,
    attention_implementations,
    autocast,
    grad_rel_error,
    llama,
    model_config,
    synthetic_rows,
    to_device,
)


def section_packing(ctx: Ctx) -> None:
    """Packed vs one-at-a-time, per attention implementation and dtype (sdpa first, compiled kernels last)."""
    from instructkit.train.attention import DOCS, VARLEN

    impls = attention_implementations(ctx)
    order = ["sdpa", DOCS, VARLEN, "flash_attention_2", "flash_attention_3", "flex_attention"]
    for impl in order:
        for dtype in ("fp32", "bf16"):
            ctx.case(f"{impl}/{dtype}", packing_case, ctx, impl, dtype, impls[impl])


def packing_case(ctx: Ctx, impl: str, dtype: str, unavailable: str | None) -> dict:
    """Pre-flight isolation, then loss, per-token loss and gradients: packed (real path) vs one at a time."""
    import torch

    from instructkit.train.attention import DOCS, VARLEN
    from instructkit.train.collators import assert_packed_isolation, packed_cross_talk

    if unavailable:
        raise Skip(unavailable)
    if dtype == "bf16":
        no_cuda_skip(ctx, "bf16")
    if dtype == "fp32" and impl.startswith("flash"):
        raise Skip("skipped: flash-attention has no fp32 kernel")
    if dtype == "fp32" and impl == VARLEN:
        raise Skip(f"skipped: varlen kernels are half precision; fp32 calls take the {DOCS} path (its row)")
    model = llama(ctx.sizes.pack_model, impl, ctx.device, seed=3)
    with autocast(ctx.device, dtype) if impl == VARLEN else contextlib.nullcontext():  # varlen: bf16 only
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
    rows = synthetic_rows(n, lo, hi, model_config(ctx.sizes.pack_model).vocab_size, seed=7)
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
    """Per-token losses of the packed row with an all-ones attention mask (the known cross-talk). instructkit's
    own attentions still isolate there (the all-ones mask is dropped, documents come from position_ids),
    so for them sdpa stands in: the control only shows that the comparison catches a leak."""
    import torch

    from instructkit.data.prepared import IGNORE_INDEX as IGNORE
    from instructkit.train.attention import DOCS, VARLEN
    from instructkit.train.trainer import next_token_targets

    batch = to_device(batch, ctx.device)
    targets = next_token_targets(batch["labels"])
    keep = targets.ne(IGNORE)
    impl = model.config._attn_implementation
    if impl in (DOCS, VARLEN):
        model.set_attn_implementation("sdpa")
    try:
        with torch.no_grad(), autocast(ctx.device, dtype):
            out = model(
                input_ids=batch["input_ids"],
                position_ids=batch["position_ids"],
                attention_mask=torch.ones_like(batch["input_ids"]),
                use_cache=False,
            )
    finally:
        model.set_attn_implementation(impl)
    return _token_losses(out.logits[keep], targets[keep])
