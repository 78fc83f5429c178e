"""Packing encoder-decoder pairs (T5X style): 2-D best fit over (input, target) lengths, rows that
carry both segmentations, and isolation: a packed row gives each example the loss and gradients it
has alone (encoder block-diagonal, decoder block-diagonal causal, cross-attention per example)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from instructkit.data.packing import best_fit_decreasing_2d, pack_seq2seq_table
from instructkit.errors import InstructkitError
from instructkit.models.loading import load_model
from instructkit.models.tiny import tiny_tokenizer
from instructkit.train.collators import (
    Seq2SeqPackedCollator,
    Seq2SeqPaddedCollator,
    assert_seq2seq_isolation,
    seq2seq_cross_talk,
    seq2seq_forward,
)

CAP = (12, 6)
pairs = st.lists(st.tuples(st.integers(1, CAP[0]), st.integers(1, CAP[1])), min_size=0, max_size=40)


@settings(max_examples=150, deadline=None)
@given(pairs)
def test_best_fit_2d_places_every_pair_once_within_both_capacities(items):
    sources, targets = [s for s, _ in items], [t for _, t in items]
    bins = best_fit_decreasing_2d(sources, targets, CAP)
    assert sorted(i for b in bins for i in b) == list(range(len(items)))
    for b in bins:
        assert sum(sources[i] for i in b) <= CAP[0] and sum(targets[i] for i in b) <= CAP[1]
    assert len(bins) >= max(-(-sum(sources) // CAP[0]), -(-sum(targets) // CAP[1]), 0)
    assert best_fit_decreasing_2d(sources, targets, CAP) == bins  # deterministic


def test_best_fit_2d_fills_bins_where_both_dimensions_fit():
    # two long-input/short-target and two short-input/long-target pairs: they pair up across kinds
    assert sorted(map(sorted, best_fit_decreasing_2d([10, 10, 2, 2], [1, 1, 5, 5], CAP))) == [[0, 2], [1, 3]]
    with pytest.raises(ValueError, match="exceeds"):
        best_fit_decreasing_2d([13], [1], CAP)


@settings(max_examples=60, deadline=None)
@given(pairs.filter(bool))
def test_packed_rows_unpack_to_the_original_pairs(items):
    rng = np.random.default_rng(len(items))
    src = [rng.integers(3, 100, s).tolist() for s, _ in items]
    tgt = [rng.integers(3, 100, t).tolist() for _, t in items]
    table = pa.table({"input_ids": src, "labels": tgt})
    packed, stats = pack_seq2seq_table(table, CAP)
    seen = []
    for row in packed.to_pylist():
        assert len(row["input_ids"]) <= CAP[0] and len(row["labels"]) <= CAP[1]
        s_off = np.cumsum([0, *row["seq_lens"]])
        t_off = np.cumsum([0, *row["target_lens"]])
        for k, ex in enumerate(row["example_ids"]):
            assert row["input_ids"][s_off[k] : s_off[k + 1]] == src[ex]
            assert row["labels"][t_off[k] : t_off[k + 1]] == tgt[ex]  # no label changed
            assert row["position_ids"][s_off[k] : s_off[k + 1]] == list(range(len(src[ex])))
            assert row["decoder_position_ids"][t_off[k] : t_off[k + 1]] == list(range(len(tgt[ex])))
            seen.append(ex)
    assert sorted(seen) == list(range(len(items))) and stats.packs == len(packed)


@pytest.fixture(scope="module")
def t5():
    tok = tiny_tokenizer("tiny:t5-nano", ["What is 12 plus 34? Think. 46"] * 20)
    model = load_model("tiny:t5-nano", tok, tiny_seed=1)
    torch.manual_seed(0)
    with torch.no_grad():  # a random init with larger relative-position biases, so positions matter
        for module in model.modules():
            if hasattr(module, "relative_attention_bias"):
                module.relative_attention_bias.weight.normal_(0, 1.0)
    return model


def _per_example_loss_and_grads(model, batch, target_lens):
    """Summed CE per example (split by target_lens) and the gradients of their total."""
    model.zero_grad()
    logits = seq2seq_forward(model, batch).logits
    labels = batch["labels"]
    ce = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), labels.flatten(), reduction="none", ignore_index=-100
    )
    ce = ce.view(labels.shape)
    if len(target_lens) == 1:
        per = [ce.sum()]
    else:  # a packed row: split the decoder row by example
        per = list(ce[0].split(target_lens))
        per = [p.sum() for p in per]
    sum(per).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return torch.stack([p.detach() for p in per]), grads


@settings(max_examples=12, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 9), st.integers(1, 6)), min_size=2, max_size=4), st.integers(0, 10**6)
)
def test_a_packed_row_gives_each_example_its_own_loss_and_gradients(t5, lengths, seed):
    model = t5.eval()
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(seed)
    examples = [
        {
            "input_ids": torch.randint(3, vocab, (s,), generator=gen).tolist(),
            "labels": torch.randint(3, vocab, (t,), generator=gen).tolist(),
        }
        for s, t in lengths
    ]
    row = {
        "input_ids": [t for e in examples for t in e["input_ids"]],
        "labels": [t for e in examples for t in e["labels"]],
        "position_ids": [p for e in examples for p in range(len(e["input_ids"]))],
        "decoder_position_ids": [p for e in examples for p in range(len(e["labels"]))],
    }
    packed = Seq2SeqPackedCollator(model.config.decoder_start_token_id, model.config.pad_token_id)([row])
    losses, grads = _per_example_loss_and_grads(model, packed, [len(e["labels"]) for e in examples])
    alone_losses, alone_grads = [], {}
    pad = Seq2SeqPaddedCollator(model.config.pad_token_id)
    for e in examples:
        loss, g = _per_example_loss_and_grads(model, pad([e]), [len(e["labels"])])
        alone_losses.append(loss[0])
        for n, v in g.items():
            alone_grads[n] = alone_grads.get(n, 0) + v
    torch.testing.assert_close(losses, torch.stack(alone_losses), atol=1e-5, rtol=1e-5)
    assert grads.keys() == alone_grads.keys()
    # relative to the gradients' scale: a query that sees one key has a zero gradient, which fp32
    # reaches exactly in one layout and as ~1e-6 noise in the other
    scale = max(float(g.abs().max()) for g in alone_grads.values())
    worst = max(float((grads[n] - alone_grads[n]).abs().max()) for n in grads) / scale
    assert worst < 1e-5


def test_without_the_masks_packed_examples_see_each_other(t5):
    """What the pre-flight guards against: the same packed row, run without the three masks, leaks."""
    model = t5.eval()
    second = {"input_ids": [5, 6, 7, 8], "labels": [9, 10, 11]}
    outputs = []
    for first in ([20, 21, 22], [30, 31, 32]):
        ids = torch.tensor([first + second["input_ids"]])
        dec = torch.tensor([[0, 40, 41, 0, 9, 10]])
        outputs.append(model(input_ids=ids, decoder_input_ids=dec).logits[0, 3:])
    assert (outputs[0] - outputs[1]).abs().max() > 1e-3
    assert seq2seq_cross_talk(model) < 1e-5  # with them, none


def test_the_preflight_refuses_an_attention_that_cannot_take_the_masks(t5):
    assert_seq2seq_isolation(t5)  # sdpa: passes
    t5.set_attn_implementation("flex_attention")
    try:
        with pytest.raises(InstructkitError, match="cannot take the 4-D masks"):
            assert_seq2seq_isolation(t5)
    finally:
        t5.set_attn_implementation("sdpa")
