"""Per-document attention (`instructkit_docs`): exact, isolated, never an L×L mask, picked by default.

Loss/gradient parity with one-at-a-time runs through the trainer is in test_train_packing.py
(parametrized over attention implementations); here: the attention itself against transformers'
sdpa on the model shapes it must handle, the no-dense-mask property, and the training choice.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LlamaForCausalLM, MistralConfig, MistralForCausalLM

from helpers.prepared import addition_dir, addition_examples, packed_feature
from instructkit.data.prepared import read_prepared
from instructkit.errors import InstructkitError
from instructkit.models.tiny import tiny_llama_config
from instructkit.train import attention
from instructkit.train.attention import (
    BUCKET_MIN,
    DOCS,
    bucket_length,
    check_trainable_attention,
    dense_is_cheaper,
    fixed_row_options,
    plan_documents,
    training_attention,
)
from instructkit.train.collators import PackedCollator, assert_packed_isolation, packed_cross_talk
from instructkit.train.config import TrainConfig
from instructkit.train.setup import build_model

LENGTHS = [5, 17, 3, 16, 16, 9, 1, 40]  # equal, near-equal (one bucket, padded) and odd lengths


def _packed_row(lengths=LENGTHS, vocab=96, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (1, sum(lengths)), generator=gen)
    pos = torch.cat([torch.arange(n) for n in lengths])[None]
    return ids, pos


def _llama(kv_heads=2):
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config("nano", vocab_size=96, num_key_value_heads=kv_heads)).float()


def _logits(model, attn, **inputs):
    model.set_attn_implementation(attn)
    return model(**inputs, use_cache=False).logits


@pytest.fixture(params=["none", "padded", "dense"])
def grouping(request, monkeypatch):
    """Per document (the CPU choice), batched in padded length buckets (the GPU choice), or one call
    with a block-diagonal mask (what the cost model picks for short rows); each path forced."""
    if request.param == "dense":
        monkeypatch.setattr(attention, "DOC_CALL_COST", 10**12)
    else:
        monkeypatch.setattr(attention, "DOC_CALL_COST", 0)
        monkeypatch.setattr(attention, "GROUPING", request.param)
    return request.param


@pytest.mark.parametrize("kv_heads", [4, 2])  # plain and grouped-query attention
def test_packed_logits_and_grads_match_sdpa_block_mask(kv_heads, grouping):
    model = _llama(kv_heads)
    ids, pos = _packed_row()
    grads = {}
    for attn in ("sdpa", DOCS):
        model.zero_grad()
        logits = _logits(model, attn, input_ids=ids, position_ids=pos)
        logits.square().mean().backward()
        grads[attn] = (logits.detach(), [p.grad.clone() for p in model.parameters()])
    assert torch.allclose(grads[DOCS][0], grads["sdpa"][0], atol=1e-5)
    for mine, ref in zip(grads[DOCS][1], grads["sdpa"][1], strict=True):
        assert torch.allclose(mine, ref, rtol=1e-4, atol=1e-6)


def test_padded_and_unpacked_batches_behave_like_sdpa(grouping):
    """Without packing it is plain sdpa: padded batches (mask given) and equal rows (batch > 1)."""
    model = _llama()
    ids = torch.randint(0, 96, (3, 21), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    for inputs in ({"input_ids": ids}, {"input_ids": ids, "attention_mask": mask}):
        ref, mine = _logits(model, "sdpa", **inputs), _logits(model, DOCS, **inputs)
        keep = inputs.get("attention_mask", mask.new_ones(mask.shape)).bool()
        assert torch.allclose(mine[keep], ref[keep], atol=1e-5)


def test_generation_with_kv_cache_is_unchanged():
    model = _llama().eval()
    prompt = torch.randint(0, 96, (1, 9), generator=torch.Generator().manual_seed(2))
    outputs = []
    for attn in ("sdpa", DOCS):
        model.set_attn_implementation(attn)
        outputs.append(model.generate(prompt, max_new_tokens=6, do_sample=False))
    assert torch.equal(*outputs)


def test_sliding_window_is_kept_inside_each_document(grouping):
    config = tiny_llama_config(
        "nano", vocab_size=96, config_class=MistralConfig, num_key_value_heads=2, sliding_window=6
    )
    torch.manual_seed(0)
    model = MistralForCausalLM(config).float()
    ids, pos = _packed_row([12, 4, 20, 7])
    ref = _logits(model, "sdpa", input_ids=ids, position_ids=pos)
    assert torch.allclose(_logits(model, DOCS, input_ids=ids, position_ids=pos), ref, atol=1e-5)


def test_isolation_preflight_passes(tiny_tokenizer):
    from instructkit.models.tiny import build_tiny_model

    model = build_tiny_model("tiny:nano", tiny_tokenizer, seed=3)
    model.set_attn_implementation(DOCS)
    assert packed_cross_talk(model) < 1e-6
    assert_packed_isolation(model)


class TensorShapes(TorchDispatchMode):
    """Records the shape of every tensor an op produces (the real ops still run)."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out


def _has_square(shapes, length):
    return any(sum(d == length for d in s) >= 2 for s in shapes)


def test_a_pack_of_many_documents_never_builds_a_dense_mask():
    """No tensor of the forward+backward is L×L; with transformers' sdpa the packed mask is."""
    model = _llama()
    lengths = [60, 70, 64, 58, 66] * 4  # 20 documents, 1272 tokens: per-document calls are cheaper
    ids, pos = _packed_row(lengths)
    seen = {}
    for attn in ("sdpa", DOCS):
        model.set_attn_implementation(attn)
        with TensorShapes() as mode:
            model(input_ids=ids, position_ids=pos, use_cache=False).logits.sum().backward()
        seen[attn] = _has_square(mode.shapes, sum(lengths))
    assert seen == {"sdpa": True, DOCS: False}


def test_short_rows_of_many_documents_take_one_masked_call():
    """By the measured cost model: a short row of many documents runs one block-diagonal call."""
    short = plan_documents(list(range(0, 495, 45)), 495)
    long = plan_documents(list(range(0, 1280, 64)), 1280)
    assert dense_is_cheaper(short, 495) and not dense_is_cheaper(long, 1280)
    model = _llama()
    ids, pos = _packed_row([45] * 11)
    model.set_attn_implementation(DOCS)
    with TensorShapes() as mode:
        model(input_ids=ids, position_ids=pos, use_cache=False).logits.sum().backward()
    assert _has_square(mode.shapes, 495)


def test_buckets_cover_every_token_once_with_bounded_padding():
    starts, total = [0, 5, 22, 25, 41, 57, 66, 67], 107
    plan = plan_documents(starts, total)
    tokens = sorted(t for s, n in plan.spans for t in range(s, s + n))
    assert tokens == list(range(total))
    assert all(
        n <= m <= max(n * 9 // 8, BUCKET_MIN * -(-n // BUCKET_MIN)) for m, d in plan.buckets for _, n in d
    )
    assert len(plan.buckets) < len(plan.spans)  # 16, 16 and 17 share one call
    assert all(n <= bucket_length(n) <= n * 9 // 8 for n in range(128, 5000, 37))


@pytest.mark.skipif(torch.cuda.is_available(), reason="flex_attention trains on a GPU")
def test_flex_attention_is_refused_for_training_on_cpu():
    with pytest.raises(InstructkitError, match="flex_attention cannot train on CPU"):
        check_trainable_attention("flex_attention")
    check_trainable_attention(DOCS)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU default")
def test_cpu_training_defaults(tmp_path, tiny_tokenizer):
    """Packed data trains with per-document attention; flex is refused before the model loads."""
    assert training_attention(None, packed=False) == "sdpa"
    data = addition_dir(tmp_path / "d", tiny_tokenizer, n=12, max_length=64)
    config = TrainConfig(data=str(data), output_dir=str(tmp_path / "o"), model="tiny:nano")
    model, _ = build_model(config, read_prepared(data))
    assert model.config._attn_implementation == DOCS
    flex = TrainConfig(
        data=str(data),
        output_dir=str(tmp_path / "o"),
        model="tiny:nano",
        attn_implementation="flex_attention",
    )
    with pytest.raises(InstructkitError, match="FlexAttention does not support backward on CPU"):
        build_model(flex, read_prepared(data))


def test_fixed_length_rows_for_flex_add_isolated_unlabelled_filler(tiny_tokenizer):
    """flex rows are filled to one static length; the filler changes no logit and no loss."""

    feature = packed_feature(addition_examples(tiny_tokenizer, 3))
    plain = PackedCollator("sft")([feature])
    filled = PackedCollator("sft", fixed_length=64, max_document=24)([feature])
    n = plain["input_ids"].shape[1]
    assert filled["input_ids"].shape == (1, 64) and n < 64
    assert (filled["labels"][0, n:] == -100).all() and filled["position_ids"][0, n] == 0
    assert int(filled["position_ids"].max()) < 24
    model = _llama().eval()
    model.set_attn_implementation(DOCS)
    with torch.no_grad():
        a = model(input_ids=plain["input_ids"] % 96, position_ids=plain["position_ids"]).logits
        b = model(input_ids=filled["input_ids"] % 96, position_ids=filled["position_ids"]).logits
    assert torch.allclose(a[0], b[0, :n], atol=1e-5)
    assert fixed_row_options(model, {"max_length": 32}, 4) == {}
    model.config._attn_implementation = "flex_attention"
    assert fixed_row_options(model, {"max_length": 32}, 4) == {"fixed_length": 128, "max_document": 32}


def test_document_boundaries_can_come_from_flash_attention_kwargs():
    """cu_seq_lens_q (what DataCollatorWithFlattening passes for flash-attention) splits documents
    even where position_ids run on: each document equals running it alone at those positions."""
    model = _llama()
    ids, _ = _packed_row()
    plain = torch.arange(ids.shape[1])[None]
    cu = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
    mine = _logits(model, DOCS, input_ids=ids, position_ids=plain, cu_seq_lens_q=cu)
    model.set_attn_implementation("sdpa")
    alone = [
        model(input_ids=ids[:, s:e], position_ids=plain[:, s:e], use_cache=False).logits
        for s, e in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)
    ]
    assert torch.allclose(mine, torch.cat(alone, dim=1), atol=1e-5)


@pytest.mark.parametrize(
    ("config_name", "fields", "says"),
    [
        ("MptConfig", {"d_model": 32, "n_layers": 2, "n_heads": 4}, "cannot run packed rows"),
        ("BloomConfig", {"hidden_size": 32, "n_layer": 2, "n_head": 4}, "attend to each other"),
        ("MambaConfig", {"hidden_size": 32, "state_size": 4, "num_hidden_layers": 2}, "attend to each other"),
    ],
)
def test_models_that_cannot_isolate_packed_rows_are_refused_in_one_line(config_name, fields, says):
    """Alibi models and recurrent models under per-document attention: either the forward pass fails
    on a packed row (MPT builds alibi from a mask packed rows do not have) or examples see each other
    (Bloom, Mamba); both end in one error naming --pack."""
    import transformers

    config = getattr(transformers, config_name)(vocab_size=96, **fields)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attention.register())
    with pytest.raises(InstructkitError, match=f"{says}.*without --pack"):
        assert_packed_isolation(model)


def test_a_model_without_per_document_attention_is_refused_before_training(tmp_path, tiny_tokenizer):
    """GPT-Neo keeps a fixed table of attention classes: loading it for packed rows fails inside
    transformers, and the run stops with one line naming the attention and --pack."""
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    config = GPTNeoConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        attention_types=[[["global", "local"], 1]],
        eos_token_id=tiny_tokenizer.eos_token_id,
    )
    GPTNeoForCausalLM(config).save_pretrained(tmp_path / "neo")
    tiny_tokenizer.save_pretrained(tmp_path / "neo")
    data = addition_dir(tmp_path / "d", tiny_tokenizer, n=12, max_length=64)
    train = TrainConfig(data=str(data), output_dir=str(tmp_path / "o"), model=str(tmp_path / "neo"))
    with pytest.raises(InstructkitError, match=f"cannot take the attention '{DOCS}'.*without --pack"):
        build_model(train, read_prepared(data))
