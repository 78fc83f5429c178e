"""Batched decoding's exact shortcuts: grouped prefill, a joined cache that grows in place, and
prompt-lookup drafts. Each must leave greedy text exactly as one-request-at-a-time `generate` writes it."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import MistralConfig, MistralForCausalLM
from transformers.cache_utils import DynamicLayer

import instructkit.evaluate.backends.hf as hf
from helpers.forward_counter import ForwardCounter
from instructkit.evaluate.backends.decode_cache import GrowingLayer, attention_pair_cost, prefill_groups
from instructkit.evaluate.backends.decoding import Decoder
from instructkit.evaluate.backends.hf import HFBackend
from instructkit.evaluate.backends.prompt_lookup import NgramIndex
from instructkit.evaluate.requests import GenerationRequest
from instructkit.models.tiny import tiny_llama_config


def _padded_cost(
    lengths: list[int], groups: list[list[int]], overhead: int, pair_cost: float = 0.0, masked: bool = False
) -> float:
    return sum(
        len(g) * lengths[g[0]]
        + overhead
        + (len(g) * lengths[g[0]] ** 2 / 2 * pair_cost if len(g) > 1 or masked else 0.0)
        for g in groups
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 1500), min_size=1, max_size=24).map(lambda xs: sorted(xs, reverse=True)),
    st.integers(0, 64),
    st.sampled_from([0.0, 1e-5, 6.5e-4]),
    st.booleans(),
)
def test_prefill_groups_cover_prompts_in_order_and_cost_no_more_than_either_extreme(
    lengths, overhead, pair_cost, masked
):
    groups = prefill_groups(lengths, overhead, pair_cost, masked)
    assert [i for g in groups for i in g] == list(range(len(lengths)))
    assert all(g for g in groups)
    cost = _padded_cost(lengths, groups, overhead, pair_cost, masked)
    one_batch = _padded_cost(lengths, [list(range(len(lengths)))], overhead, pair_cost, masked)
    one_each = _padded_cost(lengths, [[i] for i in range(len(lengths))], overhead, pair_cost, masked)
    assert cost <= one_batch + 1e-6 and cost <= one_each + 1e-6


def test_long_prompts_are_prefilled_alone_where_a_mask_would_cost_more_than_padding_saves():
    """gsm8k 5-shot's prompt lengths on SmolLM2-135M's shape: a two-row group needs a mask, whose
    attention over the upper triangle costs more than the one pass it saves; short prompts still group."""
    from transformers import LlamaConfig, LlamaForCausalLM

    smollm2_shape = LlamaConfig(
        vocab_size=512,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        pair_cost = attention_pair_cost(LlamaForCausalLM(smollm2_shape))
    assert 2e-4 < pair_cost < 2e-3  # 69,120 FLOPs a pair against ~106M weights outside embeddings, x2
    long = [1136, 1118, 1102, 1078, 1071, 1034, 944, 831, 821, 793]
    assert prefill_groups(long, pair_cost=pair_cost) == [[i] for i in range(len(long))]
    assert [3, 4] in prefill_groups(long)  # without the mask's cost, 1078 and 1071 would share a pass
    assert len(prefill_groups([60, 59, 58, 40, 39], pair_cost=pair_cost)) == 2


def test_prefill_groups_refuse_unsorted_lengths():
    with pytest.raises(ValueError, match="longest first"):
        prefill_groups([3, 9])


def _kv(rows: int, cols: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, cols, 4, generator=g), torch.randn(rows, 2, cols, 4, generator=g)


def test_growing_layer_behaves_as_dynamic_layer_through_updates_reorders_and_crops():
    keys, values = _kv(3, 5, 0)
    plain = _dynamic_layer(keys, values)
    growing = GrowingLayer.joined([_dynamic_layer(keys, values)], 0, 5, room=2)  # room runs out: it grows
    for step in range(6):
        k, v = _kv(3, 1 + step % 2, 10 + step)
        out_plain, out_growing = plain.update(k, v), growing.update(k, v)
        assert torch.equal(out_plain[0], out_growing[0]) and torch.equal(out_plain[1], out_growing[1])
    order = torch.tensor([2, 0])
    plain.reorder_cache(order)
    growing.reorder_cache(order)
    plain.crop(-3)
    growing.crop(-3)
    assert growing.get_seq_length() == plain.get_seq_length()
    assert torch.equal(growing.keys, plain.keys) and torch.equal(growing.values, plain.values)
    k, v = _kv(2, 1, 99)
    assert torch.equal(plain.update(k, v)[0], growing.update(k, v)[0])


def _dynamic_layer(keys: torch.Tensor, values: torch.Tensor) -> DynamicLayer:
    layer = DynamicLayer()
    layer.update(keys.clone(), values.clone())
    return layer


def test_growing_layer_select_keeps_rows_and_columns_in_order():
    keys, values = _kv(3, 6, 1)
    layer = GrowingLayer(
        torch.cat([keys, torch.zeros(3, 2, 4, 4)], 2), torch.cat([values, torch.zeros(3, 2, 4, 4)], 2), 6
    )
    rows, cols = torch.tensor([0, 2]), torch.tensor([1, 3, 5])
    layer.select(rows, cols)
    assert torch.equal(layer.keys, keys[rows][:, :, cols])
    assert torch.equal(layer.values, values[rows][:, :, cols])
    k, v = _kv(2, 1, 2)
    layer.update(k, v)
    assert torch.equal(layer.keys[:, :, -1:], k) and layer.get_seq_length() == 4


def test_joined_layers_right_align_prompts_after_the_shared_prefix():
    ks, vs = _kv(1, 3 + 2, 3)  # prefix 3, prompt 2
    kl, vl = _kv(2, 3 + 4, 4)  # prefix 3, prompt 4
    short, long = _dynamic_layer(ks, vs), _dynamic_layer(kl, vl)
    joined = GrowingLayer.joined([long, short], prefix=3, width=7, room=4)
    assert joined.keys.shape == (3, 2, 7, 4)
    assert torch.equal(joined.keys[:2], kl)
    assert torch.equal(joined.keys[2, :, :3], ks[0, :, :3])
    assert torch.equal(joined.keys[2, :, 5:], ks[0, :, 3:])  # the short prompt ends in the last column


def test_ngram_index_drafts_what_followed_the_latest_earlier_occurrence():
    index = NgramIndex([5, 6, 7, 8, 5, 6, 9])
    assert index.draft(3) == []  # 9 never occurred before
    index.append(5)
    index.append(6)
    assert index.draft(4) == [9, 5, 6]  # "5 6" last followed by 9 (at index 6), then what came after
    assert index.draft(1) == [9]
    assert index.draft(0) == []
    index.append(7)  # "5 6 7" occurred at the start: the longest suffix wins over "6 7"/"7"
    assert index.draft(2) == [8, 5]


def _reference(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    ids = torch.tensor([tokenizer.encode(prompt)])
    out = model.generate(
        ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id
    )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


PROMPTS = [
    "Q: 1 plus 1?\nA:",
    "The cat sat on the mat. " * 12 + "The cat",
    "Hello, how are",
    "one two three four five six seven eight nine ten " * 4 + "one two",
    "A",
]


@pytest.mark.parametrize("max_draft", [0, 8])
def test_prompts_of_very_different_lengths_decode_exactly_as_alone(
    tiny_model, tiny_tokenizer, monkeypatch, max_draft
):
    monkeypatch.setattr(hf, "MAX_DRAFT", max_draft)
    limits = [7, 40, 3, 40, 25]
    reqs = [GenerationRequest(p, max_new_tokens=n) for p, n in zip(PROMPTS, limits)]
    got = HFBackend(tiny_model, tiny_tokenizer, batch_size=8).generate(reqs)
    assert [s[0].text for s in got] == [
        _reference(tiny_model, tiny_tokenizer, p, n) for p, n in zip(PROMPTS, limits)
    ]


def test_drafts_keep_the_text_and_save_passes(tiny_model, tiny_tokenizer, monkeypatch):
    """The repetitive prompts make prompt lookup guess right: fewer passes than emitted tokens."""
    reqs = [GenerationRequest(p, max_new_tokens=40) for p in PROMPTS[1::2]]
    backend = HFBackend(tiny_model, tiny_tokenizer, batch_size=8)
    assert backend.traits.left_padding and backend.traits.tree_masks  # probed once, before counting
    runs = {}
    for max_draft in (0, 8):
        monkeypatch.setattr(hf, "MAX_DRAFT", max_draft)
        with ForwardCounter(tiny_model) as counter:
            texts = [s[0].text for s in backend.generate(reqs)]
        runs[max_draft] = (texts, counter.passes)
    assert runs[8][0] == runs[0][0]
    assert runs[8][1] < runs[0][1]


def test_sampled_rows_take_no_drafts(tiny_model, tiny_tokenizer):
    backend = HFBackend(tiny_model, tiny_tokenizer)
    reqs = [
        GenerationRequest("A A A A", max_new_tokens=9),
        GenerationRequest("A A A A", max_new_tokens=9, temperature=0.8, n=2),
    ]
    rows, decoder = Decoder.per_sample(backend, reqs)
    prompt = tiny_tokenizer.encode("A A A A")
    decoder.enable_drafts([prompt for _ in rows])
    assert decoder.draft(0, 8) and decoder.draft(1, 8) == [] and decoder.draft(2, 8) == []
    assert len(decoder.draft(0, 100)) <= 9 - 1  # never past the row's token limit


def test_sampled_generation_is_the_same_in_any_batch(tiny_model, tiny_tokenizer):
    reqs = [GenerationRequest(p, max_new_tokens=12, temperature=0.9, n=2, seed=3) for p in PROMPTS]
    together = HFBackend(tiny_model, tiny_tokenizer, batch_size=16).generate(reqs)
    alone = [HFBackend(tiny_model, tiny_tokenizer, batch_size=2).generate([r])[0] for r in reqs]
    assert [[s.text for s in x] for x in together] == [[s.text for s in x] for x in alone]


def test_sliding_window_models_decode_from_one_padded_batch_exactly(tiny_tokenizer):
    config = tiny_llama_config(
        "nano",
        vocab_size=len(tiny_tokenizer),
        config_class=MistralConfig,
        num_key_value_heads=2,
        sliding_window=8,
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = MistralForCausalLM(config).eval()
    backend = HFBackend(model, tiny_tokenizer, batch_size=8)
    assert not backend._full_attention()
    limits = [6, 20, 4, 20, 10]
    got = backend.generate([GenerationRequest(p, max_new_tokens=n) for p, n in zip(PROMPTS, limits)])
    assert [s[0].text for s in got] == [
        _reference(model, tiny_tokenizer, p, n) for p, n in zip(PROMPTS, limits)
    ]


def test_caches_that_cannot_be_joined_decode_from_one_padded_batch_exactly(
    tiny_model, tiny_tokenizer, monkeypatch
):
    """A full-attention model whose cache layers are not plain `DynamicLayer`s (seen as not growable)
    prefills its first group, then all prompts as one padded batch, and decodes without drafts."""
    monkeypatch.setattr(hf, "growable", lambda cache: False)
    limits = [6, 20, 4, 20, 10]
    backend = HFBackend(tiny_model, tiny_tokenizer, batch_size=8)
    assert backend.traits.left_padding and backend.traits.tree_masks  # probed once, before counting
    with ForwardCounter(tiny_model) as counter:
        got = backend.generate([GenerationRequest(p, max_new_tokens=n) for p, n in zip(PROMPTS, limits)])
    expected = [_reference(tiny_model, tiny_tokenizer, p, n) for p, n in zip(PROMPTS, limits)]
    assert [s[0].text for s in got] == expected
    assert counter.passes == 2 + max(s[0].num_tokens for s in got) - 1  # first group, batch, one per step


def test_the_models_generation_rules_apply_as_in_generate(tiny_model, tiny_tokenizer):
    """A generation config with a repetition penalty and n-gram blocking (Qwen2.5-Instruct ships a
    repetition penalty): batched rows follow it as `generate` does, take no drafts, and the results
    are not cached under the rule-free model's fingerprint."""
    import copy

    model = copy.deepcopy(tiny_model)
    plain = HFBackend(model, tiny_tokenizer, batch_size=8)
    limits = [7, 40, 3, 40, 25]
    reqs = [GenerationRequest(p, max_new_tokens=n) for p, n in zip(PROMPTS, limits)]
    before, fingerprint = [s[0].text for s in plain.generate(reqs)], plain.fingerprint()
    model.generation_config.repetition_penalty = 1.5
    model.generation_config.no_repeat_ngram_size = 3
    ruled = HFBackend(model, tiny_tokenizer, batch_size=8)
    got = [s[0].text for s in ruled.generate(reqs)]
    assert got == [_reference(model, tiny_tokenizer, p, n) for p, n in zip(PROMPTS, limits)]
    assert got != before
    assert ruled.fingerprint() != fingerprint


def test_generation_settings_left_in_the_model_config_do_not_stop_decoding(tiny_model, tiny_tokenizer):
    """transformers' `generate` refuses a model.config carrying generation settings; the backend decodes
    under the model's generation config instead, as before the rules were followed."""
    import copy

    model = copy.deepcopy(tiny_model)
    model.config.no_repeat_ngram_size = 3
    got = HFBackend(model, tiny_tokenizer).generate([GenerationRequest(PROMPTS[0], max_new_tokens=6)])
    assert got[0][0].num_tokens == 6 or got[0][0].text == _reference(
        tiny_model, tiny_tokenizer, PROMPTS[0], 6
    )
