"""The encoder-decoder backend equals lm-eval's `HFLM(backend="seq2seq")` on a tiny random T5.

Per-request log-likelihoods within 1e-4, the same is_greedy flags, identical greedy text cut at the
same stop strings; batch size changes nothing beyond float rounding (and nothing at all when
deterministic); the encoder runs once per distinct context; the one backend factory picks it by kind.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from instructkit.evaluate.backends.load import load_backend  # noqa: E402
from instructkit.evaluate.backends.seq2seq import Seq2SeqBackend  # noqa: E402
from instructkit.evaluate.requests import GenerationRequest, LoglikelihoodRequest  # noqa: E402
from instructkit.models.tiny import build_tiny_t5_model, train_tiny_t5_tokenizer  # noqa: E402

TEXTS = [
    "Question: is the cat on the mat? Answer: yes",
    "Premise: the sky is blue. Hypothesis: the sky is green. Options: yes, no, maybe",
    "Translate to French: hello world. bonjour le monde",
    "What is 12 + 7? Let's think step by step. 12 + 7 = 19. The answer is 19.",
]
CONTEXTS = [
    "Question: is the cat on the mat?\nAnswer:",
    "Premise: the sky is blue. Hypothesis: the sky is green. Does the premise entail it? ",
    "What is 12 + 7?",
]
CHOICES = [" yes", " no", " maybe", "the answer is 19"]


@pytest.fixture(scope="module")
def t5():
    """A tiny random T5 whose head is scaled down, so its distributions are not one-hot."""
    tok = train_tiny_t5_tokenizer(TEXTS * 20, vocab_size=400)
    model = build_tiny_t5_model("tiny:t5-nano", tok, seed=3).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(0.02)
    return model, tok


def _hflm(model, tok, batch_size=4):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, backend="seq2seq", tokenizer=tok, batch_size=batch_size, device="cpu")


def _instance(kind, arguments, idx=0):
    from lm_eval.api.instance import Instance

    return Instance(request_type=kind, doc={}, arguments=arguments, idx=idx)


def _ll_requests():
    pairs = [(c, x) for c in CONTEXTS for x in CHOICES] + [("", " yes"), ("hello  ", "world")]
    return pairs, [LoglikelihoodRequest(c, x) for c, x in pairs]


def test_factory_picks_the_seq2seq_backend(t5):
    model, tok = t5
    backend = load_backend("hf", model, tokenizer=tok)
    assert isinstance(backend, Seq2SeqBackend)
    assert backend.decoder_start == tok.pad_token_id


def test_loglikelihood_matches_lm_eval(t5):
    model, tok = t5
    pairs, requests = _ll_requests()
    ours = load_backend("hf", model, tokenizer=tok, batch_size=3).loglikelihood(requests)
    theirs = _hflm(model, tok).loglikelihood(
        [_instance("loglikelihood", p, i) for i, p in enumerate(pairs)], disable_tqdm=True
    )
    for (pair, mine), (logprob, greedy) in zip(zip(pairs, ours), theirs):
        assert mine.logprob == pytest.approx(logprob, abs=1e-4), pair
        assert mine.is_greedy == greedy, pair
    assert any(r.is_greedy for r in ours) or len({round(r.logprob, 3) for r in ours}) > 5


def test_encoder_runs_once_per_distinct_context(t5):
    model, tok = t5
    _, requests = _ll_requests()
    calls = []
    handle = model.get_encoder().register_forward_hook(lambda _m, args, _o: calls.append(args))
    try:
        load_backend("hf", model, tokenizer=tok, batch_size=64).loglikelihood(requests)
    finally:
        handle.remove()
    assert len(calls) == 1  # every distinct context in one encoder batch, every choice on its output


def test_batch_size_invariance(t5):
    model, tok = t5
    _, requests = _ll_requests()
    one = load_backend("hf", model, tokenizer=tok, batch_size=1).loglikelihood(requests)
    many = load_backend("hf", model, tokenizer=tok, batch_size=16).loglikelihood(requests)
    assert [r.is_greedy for r in one] == [r.is_greedy for r in many]
    assert max(abs(a.logprob - b.logprob) for a, b in zip(one, many)) < 1e-4
    det = [
        load_backend("hf", model, tokenizer=tok, batch_size=b, deterministic=True).loglikelihood(requests)
        for b in (1, 16)
    ]
    assert det[0] == det[1]


def test_greedy_generation_matches_lm_eval(t5):
    model, tok = t5
    backend = load_backend("hf", model, tokenizer=tok, batch_size=2)
    free = backend.generate([GenerationRequest(c, (), 12) for c in CONTEXTS])
    texts = [s[0].text for s in free]
    assert any(texts), texts
    # a stop string each row meets mid-way (rows differ), so the cut is per row
    stops = [t[len(t) // 2 : len(t) // 2 + 2] or "\n\n" for t in texts]
    ours = backend.generate([GenerationRequest(c, (s,), 12) for c, s in zip(CONTEXTS, stops)])
    theirs = _hflm(model, tok, batch_size=2).generate_until(
        [
            _instance("generate_until", (c, {"until": [s], "max_gen_toks": 12, "do_sample": False}), i)
            for i, (c, s) in enumerate(zip(CONTEXTS, stops))
        ],
        disable_tqdm=True,
    )
    assert [s[0].text for s in ours] == theirs
    for text, full in zip(theirs, texts):
        assert full.startswith(text)


def test_sampling_n_samples_share_one_encoder_pass(t5):
    model, tok = t5
    backend = load_backend("hf", model, tokenizer=tok, batch_size=8)
    calls = []
    handle = model.get_encoder().register_forward_hook(lambda _m, args, _o: calls.append(1))
    try:
        out = backend.generate([GenerationRequest(CONTEXTS[0], (), 6, n=4, temperature=1.0, seed=1)])
    finally:
        handle.remove()
    assert len(calls) == 1 and len(out[0]) == 4
    assert len({s.text for s in out[0]}) > 1  # the samples draw from different generators
    again = backend.generate([GenerationRequest(CONTEXTS[0], (), 6, n=4, temperature=1.0, seed=1)])
    assert [s.text for s in again[0]] == [s.text for s in out[0]]


def test_chat_style_renders_the_training_input(t5):
    """The `chat` style gives the encoder what `data prepare` gave it (no chat template), and the reply
    without the base style's leading delimiter, so evaluation scores targets exactly as trained."""
    from instructkit.errors import InstructkitError

    model, tok = t5
    backend = load_backend("hf", model, tokenizer=tok)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is it blue?"}]
    assert backend.render_chat(chat) == "Be brief.\n\nIs it blue?"
    with pytest.raises(InstructkitError, match="one user turn"):
        backend.render_chat(
            [*chat, {"role": "assistant", "content": "yes"}, {"role": "user", "content": "?"}]
        )


def test_a_saved_t5_folder_loads_as_seq2seq(t5, tmp_path):
    """A folder holding encoder-decoder weights is detected from its config, no flag needed."""
    model, tok = t5
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    _, requests = _ll_requests()
    loaded = load_backend("hf", str(tmp_path), dtype="float32", batch_size=4)
    assert isinstance(loaded, Seq2SeqBackend)
    in_memory = load_backend("hf", model, tokenizer=tok, batch_size=4).loglikelihood(requests)
    assert [r.logprob for r in loaded.loglikelihood(requests)] == pytest.approx(
        [r.logprob for r in in_memory], abs=1e-5
    )


def test_lm_eval_adapter_on_a_t5_matches_hflm_seq2seq(t5):
    """instructkit's lm-eval `LM` over the encoder-decoder backend encodes and truncates pairs as HFLM's
    seq2seq path does (context and continuation apart), not as a causal model's."""
    from instructkit.evaluate.lm_eval_model import lm_from_backend

    model, tok = t5
    pairs, _ = _ll_requests()
    instances = [_instance("loglikelihood", p, i) for i, p in enumerate(pairs)]
    ours = lm_from_backend(load_backend("hf", model, tokenizer=tok, batch_size=4)).loglikelihood(instances)
    theirs = _hflm(model, tok).loglikelihood(instances, disable_tqdm=True)
    assert [g for _, g in ours] == [g for _, g in theirs]
    assert [lp for lp, _ in ours] == pytest.approx([lp for lp, _ in theirs], abs=1e-4)


S2S_SMALL = {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_ffn_dim": 64}
S2S_SMALL |= {"decoder_ffn_dim": 64, "encoder_attention_heads": 4, "decoder_attention_heads": 4}
SEQ2SEQ_ARCHITECTURES = {
    "bart": ("BartConfig", S2S_SMALL),
    "pegasus": ("PegasusConfig", S2S_SMALL),
    "marian": ("MarianConfig", S2S_SMALL),
    "longt5_local": ("LongT5Config", {"d_model": 32, "d_ff": 64, "num_layers": 2, "num_heads": 4, "d_kv": 8}),
}


@pytest.mark.parametrize("name", sorted(SEQ2SEQ_ARCHITECTURES))
def test_other_encoder_decoders_score_and_decode_as_plain_transformers(t5, name):
    """BART-style models (learned positions, their own decoder start) and LongT5's local attention:
    log-likelihoods equal one plain forward per request and greedy text greedy `generate` under the
    model's generation config (one beam: the backend never searches beams)."""
    import transformers

    _, tok = t5
    config_name, fields = SEQ2SEQ_ARCHITECTURES[name]
    ids = {"eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    config = getattr(transformers, config_name)(
        vocab_size=len(tok), decoder_start_token_id=tok.pad_token_id, **ids, **fields
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForSeq2SeqLM.from_config(config).eval()
    backend = Seq2SeqBackend(model, tok, batch_size=4)
    pairs, reqs = _ll_requests()
    for req, got in zip(reqs, backend.loglikelihood(reqs)):
        ctx, cont = backend.encode_pair(req.context, req.continuation)
        dec = torch.tensor([[backend.decoder_start, *cont[:-1]]])
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ctx]), decoder_input_ids=dec).logits[0].log_softmax(-1)
        assert got.logprob == pytest.approx(sum(logits[i, t].item() for i, t in enumerate(cont)), abs=1e-4)
    plain = {
        "num_beams": 1
    }  # the model's other generation rules (forced tokens, n-grams) apply on both sides
    for context, sample in zip(
        CONTEXTS, backend.generate([GenerationRequest(c, max_new_tokens=12) for c in CONTEXTS])
    ):
        x = torch.tensor([backend.encode(context)])
        out = model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=12, do_sample=False, **plain
        )
        assert sample[0].text == tok.decode(out[0, 1:], skip_special_tokens=True)
