"""Chunked LM head + cross-entropy: the same loss and gradients as the one-shot projection, without
ever keeping a [tokens, vocabulary] logits tensor for the backward pass; taken by the trainer on long
rows of a plain-head model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainingArguments

from helpers.prepared import addition_examples, packed_feature
from instructkit.models.tiny import build_tiny_model
from instructkit.train import trainer as trainer_module
from instructkit.train.collators import PackedCollator
from instructkit.train.trainer import InstructTrainer, chunked_token_loss_sum, lm_head_split, token_loss_sum

N, H, V = 37, 16, 50


def _inputs(bias: bool):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(N, H, generator=gen, requires_grad=True)
    weight = torch.randn(V, H, generator=gen, requires_grad=True)
    b = torch.randn(V, generator=gen, requires_grad=True) if bias else None
    targets = torch.randint(0, V, (N,), generator=gen)
    targets[::3] = -100
    return hidden, weight, b, targets


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("chunk", [1, 8, N, 1000])  # one row per chunk, ragged last chunk, exact, one chunk
def test_chunked_loss_and_gradients_equal_the_unchunked_ones(bias, chunk):
    hidden, weight, b, targets = _inputs(bias)
    params = [t for t in (hidden, weight, b) if t is not None]
    ref = token_loss_sum(F.linear(hidden, weight, b), targets)
    ref_grads = torch.autograd.grad(ref, params)
    got = chunked_token_loss_sum(hidden, weight, targets, chunk_size=chunk, bias=b)
    grads = torch.autograd.grad(got, params)
    assert got.dtype == torch.float32
    assert abs((got - ref).item()) / abs(ref.item()) < 1e-6
    for g, r in zip(grads, ref_grads, strict=True):
        assert _rel(g, r) < 1e-6


def _saved_shapes(fn) -> list[tuple[int, ...]]:
    """Shapes of the tensors autograd keeps for the backward pass while `fn` runs."""
    shapes: list[tuple[int, ...]] = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return shapes


def test_no_logits_are_kept_for_the_backward_pass():
    hidden, weight, _, targets = _inputs(False)
    unchunked = _saved_shapes(lambda: token_loss_sum(F.linear(hidden, weight), targets))
    chunked = _saved_shapes(lambda: chunked_token_loss_sum(hidden, weight, targets, chunk_size=8))
    assert any(s[-1] == V and s[0] > 8 for s in unchunked)  # the [N, V] logits (or their softmax)
    assert not any(len(s) > 1 and s[-1] == V and s[0] != V for s in chunked)  # only the weight itself


def test_the_trainer_chunks_long_rows_with_the_same_loss_and_gradients(tiny_tokenizer, tmp_path, monkeypatch):
    model = build_tiny_model("tiny:nano", tiny_tokenizer, seed=3).float()
    batch = PackedCollator("sft")([packed_feature(addition_examples(tiny_tokenizer, 6))])
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = InstructTrainer(model=model, args=args, packed=True)
    assert lm_head_split(model) is not None
    results = []
    for threshold in (10**9, 16):  # the usual path, then every row "long" with chunks of 8 positions
        monkeypatch.setattr(trainer_module, "LOSS_CHUNK_TOKENS", threshold)
        monkeypatch.setattr(trainer_module, "LOSS_CHUNK", 8)
        keep = batch["labels"].ne(-100)
        assert trainer._chunk_loss(keep, return_outputs=False) == (threshold == 16)
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=50)
        loss.backward()
        results.append((loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    (ref, ref_grads), (got, grads) = results
    assert abs(float(got - ref)) / abs(float(ref)) < 1e-6
    for k, g in ref_grads.items():
        assert _rel(grads[k], g) < 1e-5, k


def test_a_lora_adapted_head_is_not_split(tiny_tokenizer):
    from instructkit.train.lora import apply_lora

    model = build_tiny_model("tiny:nano", tiny_tokenizer, seed=3)
    assert lm_head_split(apply_lora(model, 4, 8, 0.0, "all-linear")) is not None  # all-linear skips the head
    adapted = apply_lora(build_tiny_model("tiny:nano", tiny_tokenizer, seed=3), 4, 8, 0.0, ["lm_head"])
    assert lm_head_split(adapted) is None


@pytest.mark.parametrize("threshold", [10**9, 16])
def test_chunked_rows_train_in_the_runs_precision(tiny_tokenizer, tmp_path, monkeypatch, threshold):
    """The chunked path calls the decoder itself, so it must apply the autocast accelerate wraps the
    model's forward in: with bf16 the layers compute in bf16 on either path."""
    from helpers.prepared import addition_dir
    from instructkit.data.prepared import read_prepared

    monkeypatch.setattr(trainer_module, "LOSS_CHUNK_TOKENS", threshold)
    data = read_prepared(addition_dir(tmp_path / "d", tiny_tokenizer, n=12, max_length=64))
    model = build_tiny_model("tiny:nano", tiny_tokenizer, seed=0)
    args = TrainingArguments(
        output_dir=str(tmp_path / "o"),
        max_steps=1,
        bf16=True,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
    )
    trainer = InstructTrainer(
        model=model, args=args, train_dataset=data.dataset, data_collator=PackedCollator("sft"), packed=True
    )
    dtypes = set()
    model.model.layers[0].self_attn.q_proj.register_forward_hook(lambda m, i, o: dtypes.add(o.dtype))
    trainer.train()
    assert dtypes == {torch.bfloat16}
