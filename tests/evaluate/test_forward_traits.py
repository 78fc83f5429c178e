"""Architectures that place tokens by column (alibi), read every token (recurrent, convolutional), attend
through local windows or return no KV cache: the backend's probes send each to an exact path, so its
log-likelihoods and greedy text equal one-request-at-a-time transformers on every one of them."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from instructkit.evaluate.backends.forward_traits import ForwardTraits, attends_whole_sequence
from instructkit.evaluate.backends.hf import HFBackend
from instructkit.evaluate.requests import GenerationRequest

SMALL = {"num_hidden_layers": 2, "num_attention_heads": 4}
# name: (config class, fields, expected traits (kv_cache, left_padding, masked_gaps, tree_masks))
ARCHITECTURES = {
    "llama": (tf.LlamaConfig, {**SMALL, "hidden_size": 32, "intermediate_size": 64}, (1, 1, 1, 1)),
    "mpt_alibi_by_column": (tf.MptConfig, {"d_model": 32, "n_layers": 2, "n_heads": 4}, (1, 1, 0, 0)),
    "bloom_alibi_from_2d_mask": (
        tf.BloomConfig,
        {"hidden_size": 32, "n_layer": 2, "n_head": 4},
        (1, 1, 1, 0),
    ),
    "gpt_neo_local_window": (
        tf.GPTNeoConfig,
        {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "window_size": 8}
        | {"attention_types": [[["global", "local"], 1]]},
        (1, 1, 0, 0),
    ),
    "mamba_recurrent": (
        tf.MambaConfig,
        {"hidden_size": 32, "state_size": 4, "num_hidden_layers": 2},
        (0, 0, 0, 0),
    ),
    "rwkv_no_cache": (
        tf.RwkvConfig,
        {"hidden_size": 32, "num_hidden_layers": 2, "attention_hidden_size": 32, "intermediate_size": 64},
        (0, 0, 0, 0),
    ),
    "lfm2_convolutions": (
        tf.Lfm2Config,
        {**SMALL, "hidden_size": 32, "intermediate_size": 64, "num_key_value_heads": 2}
        | {"layer_types": ["conv", "full_attention"]},
        (1, 1, 0, 0),
    ),
}
CONTEXTS = ["Answer each question with one word. " * 6 + q for q in ("Q: what is red? A:", "Q: 1 plus 1? A:")]
CONTINUATIONS = [" apple", " blue sky and sea", " two"]
PROMPTS = ["Q: 1 plus 1?\nA:", "The cat sat on the mat. " * 8 + "The cat", "Hello, how are", "A"]
LIMITS = [7, 30, 3, 20]


def _model(name: str, tokenizer) -> torch.nn.Module:
    config_class, fields, _ = ARCHITECTURES[name]
    ids = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    config = config_class(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, **ids, **fields)
    config.initializer_range = 0.3  # peaked logits: greedy choices are not near-ties
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(config).eval()


def _alone_logprob(model, ctx: list[int], cont: list[int]) -> float:
    with torch.inference_mode():
        logprobs = model(input_ids=torch.tensor([ctx + cont])).logits[0].float().log_softmax(-1)
    return sum(logprobs[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))


def _alone_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_probes_find_what_each_architecture_honours(name, tiny_tokenizer):
    backend = HFBackend(_model(name, tiny_tokenizer), tiny_tokenizer)
    assert backend.traits == ForwardTraits(*map(bool, ARCHITECTURES[name][2]))


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_loglikelihoods_equal_each_request_alone(name, deterministic, tiny_tokenizer):
    model = _model(name, tiny_tokenizer)
    backend = HFBackend(model, tiny_tokenizer, batch_size=8, deterministic=deterministic)
    pairs = [backend.encode_pair(c, x) for c in CONTEXTS for x in CONTINUATIONS]
    got = [r.logprob for r in backend.loglikelihood_tokens(pairs)]
    assert got == pytest.approx([_alone_logprob(model, c, x) for c, x in pairs], abs=1e-4)


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_greedy_text_equals_generate_alone(name, deterministic, tiny_tokenizer):
    model = _model(name, tiny_tokenizer)
    got = HFBackend(model, tiny_tokenizer, batch_size=8, deterministic=deterministic).generate(
        [GenerationRequest(p, max_new_tokens=n) for p, n in zip(PROMPTS, LIMITS)]
    )
    assert [s[0].text for s in got] == [
        _alone_greedy(model, tiny_tokenizer, p, n) for p, n in zip(PROMPTS, LIMITS)
    ]


def _plain_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Greedy decoding by full forward passes, no cache and no generation config: the plain reference."""
    ids = tokenizer(prompt).input_ids
    new: list[int] = []
    with torch.inference_mode():
        while len(new) < max_new_tokens and (not new or new[-1] != tokenizer.eos_token_id):
            new.append(int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax()))
    return tokenizer.decode(new, skip_special_tokens=True)


def test_models_without_a_cache_decode_plainly_reproducibly_and_stop_at_stop_strings(tiny_tokenizer):
    model = _model("rwkv_no_cache", tiny_tokenizer)
    backend = HFBackend(model, tiny_tokenizer)
    greedy = _plain_greedy(model, tiny_tokenizer, PROMPTS[1], 30)
    assert backend.generate([GenerationRequest(PROMPTS[1], max_new_tokens=30)])[0][0].text == greedy
    stop = greedy[len(greedy) // 2 : len(greedy) // 2 + 2]
    cut = backend.generate([GenerationRequest(PROMPTS[1], max_new_tokens=30, stop=(stop,))])[0][0]
    assert cut.text == greedy[: greedy.index(stop)]
    sampled = GenerationRequest(PROMPTS[1], max_new_tokens=12, temperature=0.8, n=3, seed=5)
    state = torch.get_rng_state()
    first, again = backend.generate([sampled]), backend.generate([sampled])
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    assert [s.text for s in first[0]] == [s.text for s in again[0]]
    assert len(first[0]) == 3 and all(s.num_tokens == 12 and s.logprob < 0 for s in first[0])
    model.generation_config.repetition_penalty = 3.0  # the model's own generation rules apply, as in HFLM
    model.generation_config.no_repeat_ngram_size = 2
    ruled = HFBackend(model, tiny_tokenizer).generate([GenerationRequest(PROMPTS[1], max_new_tokens=30)])
    assert ruled[0][0].text == _alone_greedy(model, tiny_tokenizer, PROMPTS[1], 30) != greedy


def test_window_settings_are_read_from_every_config_spelling():
    assert attends_whole_sequence(tf.LlamaConfig())
    assert not attends_whole_sequence(tf.MistralConfig(sliding_window=16))
    assert attends_whole_sequence(tf.Qwen2Config(sliding_window=16, use_sliding_window=False))
    assert not attends_whole_sequence(
        tf.GPTNeoConfig(attention_types=[[["global", "local"], 1]], num_layers=2)
    )
    assert attends_whole_sequence(tf.GPTNeoConfig(attention_types=[[["global"], 2]], num_layers=2))
    assert not attends_whole_sequence(tf.RecurrentGemmaConfig(attention_window_size=16))
    assert not attends_whole_sequence(
        tf.Lfm2Config(layer_types=["conv", "full_attention"], num_hidden_layers=2)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_the_real_model_keeps_every_fast_path_in_every_dtype(smollm2, tiny_tokenizer, dtype):
    """Low-precision noise from a change of shape (up to ~3% of the largest logit in bfloat16) must not
    pass for a misplaced token: SmolLM2-135M passes every probe in each dtype."""
    model = tf.AutoModelForCausalLM.from_pretrained(str(smollm2.directory), dtype=dtype).eval()
    traits = HFBackend(model, tiny_tokenizer).traits
    assert traits == ForwardTraits(True, True, True, True), traits.slower_paths()


def test_a_model_left_in_training_mode_is_evaluated_without_dropout(tiny_tokenizer):
    """A model handed over straight from training (dropout on) scores as in eval mode, every time."""
    config = tf.LlamaConfig(
        vocab_size=len(tiny_tokenizer), attention_dropout=0.5, **SMALL, hidden_size=32, intermediate_size=64
    )
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(config).train()
    pairs = [(tiny_tokenizer(CONTEXTS[0]).input_ids, tiny_tokenizer(" apple").input_ids)]
    first = HFBackend(model, tiny_tokenizer).loglikelihood_tokens(pairs)[0].logprob
    assert not model.training
    again = HFBackend(model, tiny_tokenizer).loglikelihood_tokens(pairs)[0].logprob
    assert first == pytest.approx(again, abs=1e-6) == _alone_logprob(model, *pairs[0])
