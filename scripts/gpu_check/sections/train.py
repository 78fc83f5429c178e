"""Section `train`: tokens/s and MFU of InstructTrainer over (model, method, packed, checkpointing)."""

from __future__ import annotations

import math
import re

from ..context import Ctx, check
from ..helpers import arrow_rows, llama, model_config, synthetic_rows


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
    vocab = min(model_config(spec).vocab_size for spec in ctx.sizes.train_models.values())
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


def flops_per_token(model, data: dict, trainable_share: float) -> float:
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
    config = model.config
    attention = 6 * config.num_hidden_layers * config.hidden_size * data["mean_sq_over_mean"]
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

    sizes, spec = ctx.sizes, ctx.sizes.train_models[model_name]
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
    model = llama(spec, "sdpa", ctx.device)
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
    per_token = flops_per_token(base, data, trainable / max(tokens, 1))
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
