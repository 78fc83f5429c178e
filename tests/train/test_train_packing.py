"""Packed rows give the same loss and gradients as their examples run one at a time (no cross-talk).

Measured on transformers 5.23 / sdpa / CPU: the block-diagonal mask comes from `position_ids` only
with no attention mask and no KV cache. These tests go through the real call path
(PackedCollator → InstructTrainer.compute_loss → model) and also show that the leak is real when the
guard is removed, so they can fail.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM, TrainingArguments

from helpers.prepared import addition_examples, packed_feature
from instructkit.errors import InstructkitError
from instructkit.models.tiny import build_tiny_model
from instructkit.train.collators import (
    PackedCollator,
    assert_packed_isolation,
    check_packed_attention,
    packed_cross_talk,
)
from instructkit.train.trainer import InstructTrainer, causal_lm_loss


def _model(tokenizer, attn="sdpa"):
    model = build_tiny_model("tiny:nano", tokenizer, seed=3)
    model.set_attn_implementation(attn)
    return model.float()


def _trainer(model, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    return InstructTrainer(model=model, args=args, packed=True)


def _one_at_a_time(model, examples):
    """Token-mean loss of the examples run separately (no packing), and its gradients."""
    model.zero_grad()
    total, count = 0.0, 0
    for e in examples:
        ids = torch.tensor([e["input_ids"]])
        labels = torch.tensor([e["labels"]])
        n = int(labels[:, 1:].ne(-100).sum())
        loss = causal_lm_loss(model(input_ids=ids, use_cache=False), labels, num_items_in_batch=n) * n
        total, count = total + loss, count + n
    mean = total / count
    mean.backward()
    return mean.item(), {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("attn", ["sdpa", "eager", "instructkit_docs"])
def test_packed_loss_and_grads_equal_one_at_a_time(tiny_tokenizer, tmp_path, attn):
    model = _model(tiny_tokenizer, attn)
    examples = addition_examples(tiny_tokenizer)
    batch = PackedCollator("sft")([packed_feature(examples)])
    assert "attention_mask" not in batch
    trainer = _trainer(model, tmp_path)
    model.config.use_cache = True  # compute_loss must turn the cache off itself, whatever the config says
    model.zero_grad()
    n = int(batch["labels"][:, 1:].ne(-100).sum())
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n)
    loss.backward()
    packed_grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    ref, ref_grads = _one_at_a_time(model, examples)
    assert abs(loss.item() - ref) / ref < 1e-5
    for k, g in ref_grads.items():
        assert torch.allclose(packed_grads[k], g, rtol=1e-4, atol=1e-6), k


@pytest.mark.parametrize("leak", ["attention_mask", "use_cache"])
def test_without_the_guard_packed_examples_attend_to_each_other(tiny_tokenizer, leak):
    """The guard matters: an all-ones mask or the KV cache silently disables the packed mask."""
    model = _model(tiny_tokenizer).eval()
    examples = addition_examples(tiny_tokenizer)
    batch = PackedCollator("sft")([packed_feature(examples)])
    extra = {"attention_mask": torch.ones_like(batch["input_ids"]), "use_cache": False}
    if leak == "use_cache":
        extra = {"use_cache": True}
    n = int(batch["labels"][:, 1:].ne(-100).sum())
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], **extra)
    leaky = causal_lm_loss(out, batch["labels"], n).item()
    ref, _ = _one_at_a_time(model, examples)
    assert abs(leaky - ref) / ref > 1e-3


def test_trainer_refuses_attention_mask_on_packed_rows(tiny_tokenizer, tmp_path):
    model = _model(tiny_tokenizer)
    batch = PackedCollator("sft")([packed_feature(addition_examples(tiny_tokenizer))])
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    with pytest.raises(RuntimeError, match="attention_mask"):
        _trainer(model, tmp_path).compute_loss(model, batch)


def test_collator_never_predicts_an_example_from_the_previous_one(tiny_tokenizer):
    examples = addition_examples(tiny_tokenizer, 4)
    feature = packed_feature(examples)
    feature["labels"] = list(feature["input_ids"])  # even if the row labels every token
    batch = PackedCollator("sft")([feature, feature])
    starts = batch["position_ids"][0] == 0
    assert int(starts.sum()) == 8
    assert (batch["labels"][0][starts] == -100).all()
    assert batch["input_ids"].shape == (1, 2 * len(feature["input_ids"]))


class LeakyLlama(LlamaForCausalLM):
    """A model that (like some remote-code models) always builds its own padding mask."""

    def forward(self, input_ids=None, **kwargs):
        kwargs["attention_mask"] = torch.ones_like(input_ids)
        return super().forward(input_ids=input_ids, **kwargs)


def test_isolation_check_passes_for_tiny_llama_and_catches_a_leaky_model(tiny_tokenizer):
    model = _model(tiny_tokenizer)
    assert packed_cross_talk(model) < 1e-6
    assert_packed_isolation(model)
    leaky = LeakyLlama(model.config)
    assert packed_cross_talk(leaky) > 1e-2
    with pytest.raises(InstructkitError, match="attend to each other"):
        assert_packed_isolation(leaky)


def test_unknown_attention_implementation_is_refused(tiny_tokenizer):
    model = _model(tiny_tokenizer)
    model.config._attn_implementation = "my_custom_kernel"
    with pytest.raises(InstructkitError, match="does not isolate packed examples"):
        check_packed_attention(model)
