"""The HF backend's fast paths, pinned on a tiny model: every shared token runs once (few-shot prefix,
context, common continuation prefixes), finished rows leave a decoding batch, and neither changes a
result compared with running each request alone; token-id prompts serve the synthesizer."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import instructkit.evaluate.backends.hf as hf
from helpers.forward_counter import ForwardCounter
from instructkit.evaluate.backends.base import encode_pair, greedy_texts
from instructkit.evaluate.backends.decode_cache import prefill_groups
from instructkit.evaluate.backends.hf import MIN_ROW_FILL, MIN_SHARED_PREFIX, HFBackend
from instructkit.evaluate.backends.prefix_tree import build_tries, common_prefix_length, pack
from instructkit.evaluate.requests import GenerationRequest, LoglikelihoodRequest, _digest

FEWSHOT = "".join(f"Q: what is {i} plus {i}?\nA: {2 * i}\n\n" for i in range(1, 9))
CHOICES = [" the answer is four", " the answer is five", " four", " seven or eight"]


def _alone(model, tokenizer, req: LoglikelihoodRequest) -> float:
    ctx, cont = encode_pair(tokenizer, req.context, req.continuation)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].float(), -1)
    return sum(logprobs[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))


def _fewshot_requests() -> list[LoglikelihoodRequest]:
    return [
        LoglikelihoodRequest(FEWSHOT + f"Q: what is {i} plus {i + 1}?\nA:", c)
        for i in range(4)
        for c in CHOICES
    ]


def test_tries_hold_each_shared_token_once(tiny_tokenizer):
    pairs = [encode_pair(tiny_tokenizer, r.context, r.continuation) for r in _fewshot_requests()]
    prefix = common_prefix_length([ctx for ctx, _ in pairs])
    tries = build_tries(pairs, prefix)
    distinct_inputs = {
        tuple((ctx + cont)[: k + 1]) for ctx, cont in pairs for k in range(prefix, len(ctx + cont) - 1)
    }
    assert len(tries) == 4  # one per question
    assert sum(len(t.tokens) for t in tries) == len(distinct_inputs)
    assert sum(len(t.scores) for t in tries) == sum(len(cont) for _, cont in pairs)
    rows = pack(tries, capacity=64)
    assert sorted(id(t) for row in rows for t in row) == sorted(id(t) for t in tries)
    assert all(sum(len(t.tokens) for t in row) <= 64 for row in rows if len(row) > 1)


def _size(row) -> int:
    return sum(len(t.tokens) for t in row)


@settings(max_examples=60, deadline=None)
@given(
    docs=st.lists(
        st.tuples(st.integers(1, 300), st.lists(st.integers(1, 40), min_size=1, max_size=4)),
        min_size=1,
        max_size=40,
    ),
    batch_size=st.integers(1, 16),
)
def test_planned_rows_hold_every_trie_once_and_stay_mostly_unpadded(
    tiny_model, tiny_tokenizer, docs, batch_size
):
    """A trie longer than a row gets a row of its own, and short rows do not pad to its width."""
    pairs, token = [], 5
    for ctx_len, cont_lens in docs:  # distinct tokens: no sharing, so trie sizes are known
        ctx = list(range(token, token + ctx_len))
        token += ctx_len
        for n in cont_lens:
            pairs.append((ctx, list(range(token, token + n))))
            token += n
    backend = HFBackend(tiny_model, tiny_tokenizer, batch_size=batch_size, row_tokens=64)
    _, tries, batches = backend.plan_rows(pairs)
    planned = [t for batch in batches for row in batch for t in row]
    assert sorted(map(id, planned)) == sorted(map(id, tries))
    for batch in batches:
        assert len(batch) <= batch_size
        widest = max(_size(row) for row in batch)
        assert all(_size(row) >= MIN_ROW_FILL * widest for row in batch)
        assert all(_size(row) <= 64 for row in batch if len(row) > 1)


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_fewshot_loglikelihoods_equal_one_at_a_time_and_run_each_token_once(
    tiny_model, tiny_tokenizer, batch_size
):
    reqs = _fewshot_requests()
    backend = HFBackend(tiny_model, tiny_tokenizer, batch_size=batch_size, row_tokens=48)
    assert backend.traits.left_padding and backend.traits.tree_masks  # probed once, before counting
    with ForwardCounter(tiny_model) as counter:
        got = backend.loglikelihood(reqs)
    for req, result in zip(reqs, got):
        assert result.logprob == pytest.approx(_alone(tiny_model, tiny_tokenizer, req), abs=1e-4)
    pairs = [backend.encode_pair(r.context, r.continuation) for r in reqs]
    prefix = common_prefix_length([ctx for ctx, _ in pairs])
    assert prefix >= MIN_SHARED_PREFIX
    distinct = {
        tuple((ctx + cont)[: k + 1]) for ctx, cont in pairs for k in range(prefix, len(ctx + cont) - 1)
    }
    padding_allowance = batch_size * 48  # pads at the end of rows (rows are at most 48 tokens wide)
    assert counter.tokens <= prefix + len(distinct) + padding_allowance
    assert counter.tokens < sum(len(ctx + cont) - 1 for ctx, cont in pairs) / 4  # lm-eval's token count


def test_fallback_rows_equal_one_at_a_time(tiny_model, tiny_tokenizer):
    """Models that cannot take a 4D mask (flash attention, sliding windows) get one row per request."""
    backend = HFBackend(tiny_model, tiny_tokenizer, batch_size=3)
    reqs = _fewshot_requests()[:6] + [LoglikelihoodRequest("", "hello there")]
    got = backend._score_rows([backend._pair(r) for r in reqs])
    for req, result in zip(reqs, got):
        assert result.logprob == pytest.approx(_alone(tiny_model, tiny_tokenizer, req), abs=1e-4)


def _reference_generation(model, tokenizer, req: GenerationRequest) -> str:
    ids = torch.tensor([tokenizer.encode(req.prompt)])
    out = model.generate(
        ids, max_new_tokens=req.max_new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id
    )
    text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    cuts = [text.find(s) for s in req.stop if s in text]
    return text[: min(cuts)] if cuts else text


def test_fewshot_generation_matches_generate_and_drops_finished_rows(tiny_model, tiny_tokenizer, monkeypatch):
    """Without drafts every fed token is accounted for: the shared prefix once, each prefill group padded
    to its longest prompt, then one token per emitted token of a live row (a finished row is never fed)."""
    monkeypatch.setattr(hf, "MAX_DRAFT", 0)
    limits = [2, 12, 5, 16]
    reqs = [
        GenerationRequest(FEWSHOT + f"Q: what is {i * 37} plus 3?\nA:", stop=("\n\n",), max_new_tokens=n)
        for i, n in enumerate(limits)
    ]
    backend = HFBackend(tiny_model, tiny_tokenizer, batch_size=4)
    assert backend.traits.left_padding and backend.traits.tree_masks  # probed once, before counting
    with ForwardCounter(tiny_model) as counter:
        got = backend.generate(reqs)
    for req, samples in zip(reqs, got):
        assert samples[0].text == _reference_generation(tiny_model, tiny_tokenizer, req)
    prompts = [backend.encode(r.prompt) for r in reqs]
    prefix = common_prefix_length(prompts)
    tails = sorted((len(p) - prefix for p in prompts), reverse=True)
    prefill = prefix + sum(len(g) * tails[g[0]] for g in prefill_groups(tails))
    decoded = sum(s[0].num_tokens - 1 for s in got)  # the last token of a row is never fed back
    assert counter.tokens == prefill + decoded


def test_token_id_prompts_and_cache_keys(tiny_model, tiny_tokenizer):
    backend = HFBackend(tiny_model, tiny_tokenizer, batch_size=2)
    prompt = "Hello, how are"
    by_text = backend.generate([GenerationRequest(prompt, max_new_tokens=6)])[0][0].text
    ids = tiny_tokenizer.encode(prompt)
    assert greedy_texts(backend, [ids, ids], 6) == [by_text, by_text]
    req = GenerationRequest(prompt, stop=("\n",), max_new_tokens=8)
    fields = {"prompt": prompt, "stop": ["\n"], "max_new_tokens": 8, "temperature": 0.0, "n": 1, "seed": 0}
    assert req.key() == _digest("gen", fields)  # text-only requests keep the cache keys they had
    assert GenerationRequest(prompt, prompt_ids=tuple(ids)).key() != GenerationRequest(prompt).key()
