"""Evaluation parity on a real pretrained model (SmolLM2-135M-Instruct, fp32, CPU) and real data.

The fast paths (shared few-shot prefix, token tries, shrinking decode batches) must give what a plain
one-request-at-a-time transformers run gives, and what lm-evaluation-harness gives on the same prompts
when it is installed (the `bench` extra; those tests skip without it). Kept small: 10 PIQA rows and 2
GSM8K 8-shot generations of 24 tokens. Speed is measured by benchmarks/bench_eval.py, not here.
"""

from __future__ import annotations

import pytest
import torch

from instructkit.evaluate.backends.hf import HFBackend
from instructkit.evaluate.prompting import context, continuation
from instructkit.evaluate.requests import GenerationRequest, LoglikelihoodRequest
from instructkit.evaluate.suites.registry import load_benchmark

pytestmark = pytest.mark.slow
GSM_NEW_TOKENS = 24


@pytest.fixture(scope="module")
def backend(smollm2):
    torch.manual_seed(0)
    return HFBackend.from_pretrained(str(smollm2.directory), dtype="float32", device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def piqa_requests(shared_data) -> list[LoglikelihoodRequest]:
    task = load_benchmark("piqa", shared_data)[0]
    return [
        LoglikelihoodRequest(context(task, d, "base"), continuation(task, c, "base"))
        for d in task.docs[:10]
        for c in d.choices
    ]


@pytest.fixture(scope="module")
def gsm_requests(shared_data) -> list[GenerationRequest]:
    task = load_benchmark("gsm8k", shared_data, cot=True, num_fewshot=8)[0]
    return [
        GenerationRequest(context(task, d, "base"), tuple(task.stop), GSM_NEW_TOKENS) for d in task.docs[:2]
    ]


@pytest.fixture(scope="module")
def our_piqa(backend, piqa_requests) -> list:
    """Our batched log-likelihoods, computed once and compared with each reference below."""
    return backend.loglikelihood(piqa_requests)


@pytest.fixture(scope="module")
def our_gsm(backend, gsm_requests) -> list:
    """Our batched few-shot generations (the costliest call here), computed once for both references."""
    return backend.generate(gsm_requests)


def _one_at_a_time(backend: HFBackend, req: LoglikelihoodRequest) -> float:
    ctx, cont = backend.encode_pair(req.context, req.continuation)
    with torch.inference_mode():
        logits = backend.model(torch.tensor([ctx + cont])).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    return sum(logprobs[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))


def _generate_alone(backend: HFBackend, req: GenerationRequest) -> str:
    ids = torch.tensor([backend.encode(req.prompt)])
    with torch.inference_mode():
        out = backend.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=req.max_new_tokens,
            do_sample=False,
            eos_token_id=backend.tokenizer.eos_token_id,
            pad_token_id=backend.pad_id,
        )
    text = backend.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    cuts = [text.find(s) for s in req.stop if s in text]
    return text[: min(cuts)] if cuts else text


def _pairs_of_choices(values: list[float]) -> list[int]:
    return [int(values[i + 1] > values[i]) for i in range(0, len(values), 2)]


def test_piqa_loglikelihoods_equal_one_request_at_a_time(backend, piqa_requests, our_piqa):
    got = [r.logprob for r in our_piqa]
    ref = [_one_at_a_time(backend, r) for r in piqa_requests]
    assert max(abs(a - b) for a, b in zip(got, ref)) < 1e-4
    assert _pairs_of_choices(got) == _pairs_of_choices(ref)


def test_gsm8k_fewshot_generation_equals_generate_one_at_a_time(backend, gsm_requests, our_gsm):
    assert [s[0].text for s in our_gsm] == [_generate_alone(backend, r) for r in gsm_requests]
    assert all(s[0].num_tokens >= 1 for s in our_gsm)


def test_piqa_loglikelihoods_equal_lm_eval(backend, piqa_requests, our_piqa):
    lm, instance = _lm_eval(backend)
    theirs = lm.loglikelihood(
        [instance("loglikelihood", (r.context, r.continuation), i) for i, r in enumerate(piqa_requests)]
    )
    ours = our_piqa
    assert max(abs(a.logprob - b[0]) for a, b in zip(ours, theirs)) < 1e-4
    assert [a.is_greedy for a in ours] == [bool(b[1]) for b in theirs]
    assert _pairs_of_choices([a.logprob for a in ours]) == _pairs_of_choices([b[0] for b in theirs])


def test_gsm8k_generation_equals_lm_eval(backend, gsm_requests, our_gsm):
    lm, instance = _lm_eval(backend)
    args = [
        (r.prompt, {"until": list(r.stop), "max_gen_toks": r.max_new_tokens, "do_sample": False})
        for r in gsm_requests
    ]
    theirs = lm.generate_until([instance("generate_until", a, i) for i, a in enumerate(args)])
    assert [s[0].text for s in our_gsm] == theirs


def _lm_eval(backend: HFBackend):
    """lm-eval's HFLM around the very same model object, and a request builder."""
    pytest.importorskip("lm_eval", reason="lm-eval is the optional `bench` extra (pip install -e '.[bench]')")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=backend.model, tokenizer=backend.tokenizer, batch_size=8, device="cpu")

    def instance(kind: str, arguments: tuple, idx: int) -> Instance:
        return Instance(request_type=kind, doc={}, arguments=arguments, idx=idx)

    return lm, instance
