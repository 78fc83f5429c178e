"""HF backend invariants: shared-context loglikelihoods equal one-at-a-time full passes, batch size never
changes results, tokenisation follows lm-eval's split, decoding matches transformers' greedy generate."""

from __future__ import annotations

import pytest
import torch

from helpers.eval_requests import CHOICES, loglikelihood_alone
from instructkit.evaluate.backends.hf import HFBackend
from instructkit.evaluate.requests import GenerationRequest, LoglikelihoodRequest


def _requests() -> list[LoglikelihoodRequest]:
    reqs = []
    for i in range(6):
        ctx = f"Question: what is {i} plus {3 * i}? " + "word " * (2 * i) + "Answer:"
        reqs += [LoglikelihoodRequest(ctx, c) for c in CHOICES]
    return reqs + [LoglikelihoodRequest("", "hello there"), LoglikelihoodRequest("Sort the list: ", "1 2 3")]


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_shared_context_loglikelihood_equals_one_at_a_time(tiny_model, tiny_tokenizer, batch_size):
    backend = HFBackend(tiny_model, tiny_tokenizer, batch_size=batch_size)
    reqs = _requests()
    got = backend.loglikelihood(reqs)
    for req, result in zip(reqs, got):
        assert result.logprob == pytest.approx(loglikelihood_alone(tiny_model, backend, req), abs=1e-4)


def test_batch_size_does_not_change_scores(tiny_model, tiny_tokenizer):
    reqs = _requests()
    one = HFBackend(tiny_model, tiny_tokenizer, batch_size=1).loglikelihood(reqs)
    many = HFBackend(tiny_model, tiny_tokenizer, batch_size=16, max_batch_tokens=400).loglikelihood(reqs)
    assert [r.is_greedy for r in one] == [r.is_greedy for r in many]
    assert [r.num_tokens for r in one] == [r.num_tokens for r in many]
    assert max(abs(a.logprob - b.logprob) for a, b in zip(one, many)) < 1e-4


def test_encode_pair_moves_trailing_space_like_lm_eval(tiny_model, tiny_tokenizer):
    backend = HFBackend(tiny_model, tiny_tokenizer)
    ctx, cont = backend.encode_pair("Answer: ", "yes")
    whole = tiny_tokenizer.encode("Answer: yes")
    assert ctx + cont == whole
    assert ctx == tiny_tokenizer.encode("Answer:")


def test_greedy_generation_matches_transformers_generate(tiny_model, tiny_tokenizer):
    backend = HFBackend(tiny_model, tiny_tokenizer, batch_size=4)
    prompts = ["Hello, how are", "What is 12 plus 35? The answer is", "Sort"]
    got = backend.generate([GenerationRequest(p, max_new_tokens=10) for p in prompts])
    for prompt, samples in zip(prompts, got):
        ids = torch.tensor([tiny_tokenizer.encode(prompt)])
        ref = tiny_model.generate(
            ids, max_new_tokens=10, do_sample=False, eos_token_id=tiny_tokenizer.eos_token_id
        )
        assert samples[0].text == tiny_tokenizer.decode(ref[0, ids.shape[1] :], skip_special_tokens=True)


def test_generation_is_batch_size_independent_and_seeded(tiny_model, tiny_tokenizer):
    reqs = [
        GenerationRequest("Hello, how are", max_new_tokens=8),
        GenerationRequest("Translate to French: cat", max_new_tokens=6, temperature=0.7, n=3, seed=5),
        GenerationRequest("Is the following sentence positive", max_new_tokens=12, stop=(" ",)),
    ]
    one = HFBackend(tiny_model, tiny_tokenizer, batch_size=1).generate(reqs)
    many = HFBackend(tiny_model, tiny_tokenizer, batch_size=16).generate(reqs)
    assert [[s.text for s in r] for r in one] == [[s.text for s in r] for r in many]
    assert len(one[1]) == 3
    assert " " not in one[2][0].text  # cut at the stop sequence


def test_stop_sequence_cuts_output(tiny_model, tiny_tokenizer):
    backend = HFBackend(tiny_model, tiny_tokenizer)
    free = backend.generate([GenerationRequest("Hello, how are", max_new_tokens=8)])[0][0].text
    stop = free.strip()[:2]
    cut = backend.generate([GenerationRequest("Hello, how are", stop=(stop,), max_new_tokens=8)])[0][0].text
    assert cut == free[: free.find(stop)]
