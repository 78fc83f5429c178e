"""`instructkit_varlen`: torch's varlen_attn as the packed-training attention on CUDA.

The kernel itself is CUDA-only (on this CPU it raises NotImplementedError), so here: the refusal on
CPU, the choice, the call built for each torch signature, and the packing layout around the kernel,
checked with a reference kernel of the same signature (per-document sdpa) against transformers' sdpa
block mask. The GPU check (scripts/gpu_check, section `varlen`) runs the real kernel.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.varlen import varlen_attn
from transformers import MistralConfig, MistralForCausalLM

from helpers.prepared import addition_dir
from instructkit.data.prepared import read_prepared
from instructkit.errors import InstructkitError
from instructkit.models.tiny import tiny_llama_config
from instructkit.train import attention
from instructkit.train.attention import (
    DOCS,
    VARLEN,
    check_trainable_attention,
    training_attention,
    varlen_options,
)
from instructkit.train.collators import packed_attention_preflight
from instructkit.train.config import TrainConfig
from instructkit.train.setup import build_model

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU behaviour; the GPU check covers CUDA")
LENGTHS = [5, 17, 3, 16, 9, 1, 40]


def reference_varlen(
    q, k, v, cu_q, cu_k, max_q, max_k, *, return_aux=None, scale=None, window_size=(-1, -1), enable_gqa=False
):
    """torch 2.12+'s varlen_attn contract computed with sdpa per document ([T, H, D] in and out)."""
    assert cu_q is cu_k and max_q == max_k == int((cu_q[1:] - cu_q[:-1]).max())
    outs = []
    for s, e in zip(cu_q[:-1].tolist(), cu_q[1:].tolist(), strict=True):
        i = torch.arange(e - s)
        mask = torch.ones(e - s, e - s, dtype=torch.bool)
        if window_size[1] == 0:
            mask &= i[:, None] >= i[None, :]
        if window_size[0] >= 0:
            mask &= i[:, None] - i[None, :] <= window_size[0]
        qq, kk, vv = (t[s:e].transpose(0, 1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, scale=scale, enable_gqa=enable_gqa)
        outs.append(out.transpose(0, 1))
    return torch.cat(outs)


def leaky_varlen(
    q, k, v, cu_q, cu_k, max_q, max_k, *, return_aux=None, scale=None, window_size=(-1, -1), enable_gqa=False
):
    """A broken kernel that ignores document boundaries (one causal sequence): the pre-flight must catch it."""
    whole = torch.tensor([0, q.shape[0]], dtype=torch.int32)
    return reference_varlen(
        q,
        k,
        v,
        whole,
        whole,
        q.shape[0],
        q.shape[0],
        scale=scale,
        window_size=window_size,
        enable_gqa=enable_gqa,
    )


@pytest.fixture
def kernel(monkeypatch):
    """Route packed calls to a stand-in kernel on CPU fp32 (what the real one does on CUDA bf16)."""
    monkeypatch.setattr(attention, "varlen_serves", lambda query: True)

    def use(fn):
        monkeypatch.setattr(attention, "varlen_function", lambda: fn)

    return use


def _packed(lengths=LENGTHS, vocab=96):
    ids = torch.randint(0, vocab, (1, sum(lengths)), generator=torch.Generator().manual_seed(0))
    return ids, torch.cat([torch.arange(n) for n in lengths])[None]


def _llama(kv_heads):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config("nano", vocab_size=96, num_key_value_heads=kv_heads)).float()


def _logits_and_grads(model, impl, **inputs):
    model.set_attn_implementation(impl)
    model.zero_grad()
    logits = model(**inputs, use_cache=False).logits
    logits.square().mean().backward()
    return logits.detach(), [p.grad.clone() for p in model.parameters()]


def test_asking_for_varlen_on_cpu_is_refused_in_one_line(tmp_path, tiny_tokenizer):
    with pytest.raises(InstructkitError, match="needs CUDA") as caught:
        check_trainable_attention(VARLEN)
    assert "\n" not in str(caught.value) and DOCS in str(caught.value)
    data = addition_dir(tmp_path / "d", tiny_tokenizer, n=12, max_length=64)
    config = TrainConfig(
        data=str(data), output_dir=str(tmp_path / "o"), model="tiny:nano", attn_implementation=VARLEN
    )
    with pytest.raises(InstructkitError, match=f"attention {VARLEN} cannot train here: needs CUDA"):
        build_model(config, read_prepared(data))


def test_the_real_kernel_really_is_cuda_only():
    """What the refusal guards against: torch's own varlen_attn on CPU tensors."""
    q = torch.randn(8, 2, 16, dtype=torch.bfloat16)
    cu = torch.tensor([0, 3, 8], dtype=torch.int32)
    with pytest.raises((NotImplementedError, RuntimeError)):
        varlen_attn(q, q, q, cu, cu, 5, 5, window_size=(-1, 0))


def test_packed_training_prefers_varlen_where_it_can_run(monkeypatch):
    assert training_attention(None, packed=True) == DOCS  # here: no CUDA
    monkeypatch.setattr(attention, "varlen_unavailable", lambda: None)
    assert training_attention(None, packed=True) == VARLEN
    assert training_attention(None, packed=False) == "sdpa"
    assert training_attention("eager", packed=True) == "eager"


def test_varlen_options_follow_each_torch_signature():
    def v210(q, k, v, cu_q, cu_k, max_q, max_k, is_causal=False, return_aux=None): ...

    def v211(q, k, v, cu_q, cu_k, max_q, max_k, *, return_aux=None, scale=None, window_size=(-1, -1)): ...

    default = 16**-0.5
    assert varlen_options(v210, True, None, default, 16, False) == {"is_causal": True}
    assert varlen_options(v210, True, None, 0.5, 16, False) is None  # a scale it cannot take
    assert varlen_options(v210, True, 6, None, 16, False) is None  # no sliding window
    assert varlen_options(v211, True, 6, 0.5, 16, False) == {"window_size": (5, 0), "scale": 0.5}
    assert varlen_options(v211, True, None, None, 16, True) is None  # no enable_gqa: caller repeats kv
    assert varlen_options(varlen_attn, True, None, None, 16, True) == {
        "window_size": (-1, 0),  # exactly the tuple torch compares with to mean causal
        "scale": None,
        "enable_gqa": True,
    }
    assert varlen_options(varlen_attn, False, None, None, 16, False)["window_size"] == (-1, -1)


@pytest.mark.parametrize("kv_heads", [4, 2])  # plain and grouped-query attention
def test_packed_logits_and_grads_match_the_sdpa_block_mask(kernel, kv_heads):
    kernel(reference_varlen)
    model = _llama(kv_heads)
    ids, pos = _packed()
    ref_logits, ref_grads = _logits_and_grads(model, "sdpa", input_ids=ids, position_ids=pos)
    logits, grads = _logits_and_grads(model, VARLEN, input_ids=ids, position_ids=pos)
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    for mine, ref in zip(grads, ref_grads, strict=True):
        assert torch.allclose(mine, ref, rtol=1e-4, atol=1e-6)


def test_older_varlen_without_gqa_gets_repeated_kv_heads(kernel):
    def v211(q, k, v, cu_q, cu_k, max_q, max_k, *, return_aux=None, scale=None, window_size=(-1, -1)):
        assert q.shape[1] == k.shape[1]  # repeated before the call
        return reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, scale=scale, window_size=window_size)

    kernel(v211)
    model = _llama(2)
    ids, pos = _packed()
    ref, _ = _logits_and_grads(model, "sdpa", input_ids=ids, position_ids=pos)
    assert torch.allclose(
        _logits_and_grads(model, VARLEN, input_ids=ids, position_ids=pos)[0], ref, atol=1e-5
    )


def test_sliding_window_stays_inside_each_document(kernel):
    kernel(reference_varlen)
    config = tiny_llama_config(
        "nano", vocab_size=96, config_class=MistralConfig, num_key_value_heads=2, sliding_window=6
    )
    torch.manual_seed(0)
    model = MistralForCausalLM(config).float()
    ids, pos = _packed([12, 4, 20, 7])
    ref, _ = _logits_and_grads(model, "sdpa", input_ids=ids, position_ids=pos)
    assert torch.allclose(
        _logits_and_grads(model, VARLEN, input_ids=ids, position_ids=pos)[0], ref, atol=1e-5
    )


def test_padded_batches_and_generation_take_sdpa(kernel):
    kernel(leaky_varlen)  # would show in the logits if it were called
    model = _llama(2).eval()
    ids = torch.randint(0, 96, (3, 21), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    with torch.no_grad():
        model.set_attn_implementation("sdpa")
        a = model(input_ids=ids, attention_mask=mask).logits
        model.set_attn_implementation(VARLEN)
        b = model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(a[mask.bool()], b[mask.bool()], atol=1e-5)


def test_preflight_keeps_an_isolated_varlen_and_drops_a_leaky_one(kernel, capsys):
    model = _llama(2)
    kernel(reference_varlen)
    model.set_attn_implementation(VARLEN)
    assert packed_attention_preflight(model, None) == VARLEN
    kernel(leaky_varlen)
    assert packed_attention_preflight(model, None) == DOCS
    assert f"{VARLEN} failed the packed isolation check" in capsys.readouterr().err
    model.set_attn_implementation(VARLEN)
    with pytest.raises(InstructkitError, match="attend to each other"):  # asked for explicitly: no fallback
        packed_attention_preflight(model, VARLEN)


def test_doctor_reports_why_varlen_cannot_run_here():
    from instructkit.cli import doctor_checks as doctor

    assert doctor.VARLEN == VARLEN
    ok, detail = doctor.varlen_status()
    assert not ok and detail.startswith("unavailable: needs CUDA")
