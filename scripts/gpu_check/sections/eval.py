"""Section `eval`: HFBackend on the device vs the CPU fp32 reference, and its throughput."""

from __future__ import annotations

import time

from ..config import TOLERANCES
from ..context import Ctx, check, no_cuda_skip

EVAL_CORPUS = [
    "What is 12 plus 35? The answer is 47.",
    "Write a short poem about the sea. The waves roll in and out.",
    "Is the following sentence positive or negative? I loved this movie. positive",
    "Read the paragraph and answer: where did Alice go? Alice went to the market.",
    "Sort the list: 3 1 2. Answer: 1 2 3",
    "Translate to French: cat -> chat. dog -> chien.",
] * 30
CHOICES = [" yes", " no thanks", " maybe later today, friend", " 4"]


def section_eval(ctx: Ctx) -> None:
    """HFBackend on the device vs the CPU fp32 reference (batch size 1), then throughput."""
    from instructkit.models.tiny import build_tiny_model, train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer(EVAL_CORPUS, vocab_size=512)
    model = build_tiny_model(ctx.sizes.eval_preset, tokenizer, seed=0).eval()
    _sharpen(model)
    ll_reqs, gen_reqs = _eval_requests(ctx.sizes.eval_requests)
    reference = _cpu_reference(model, tokenizer, ll_reqs, gen_reqs)
    for dtype in ("fp32", "bf16"):
        ctx.case(
            f"{dtype} vs CPU fp32", eval_case, ctx, model, tokenizer, reference, dtype, ll_reqs, gen_reqs
        )
    ctx.case(
        "throughput/equivalence-model/fp32", eval_throughput, ctx, model, tokenizer, "fp32", ll_reqs, gen_reqs
    )
    for name, preset in ctx.sizes.eval_throughput.items():
        big = build_tiny_model(preset, tokenizer, seed=1).eval()
        ctx.case(f"throughput/{name}/bf16", eval_throughput, ctx, big, tokenizer, "bf16", ll_reqs, gen_reqs)


def _sharpen(model) -> None:
    """Scale the tied embedding so a random model's next-token distribution is peaked (greedy text is stable)."""
    import torch

    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10.0)


def _eval_requests(n: int):
    from instructkit.evaluate.requests import GenerationRequest, LoglikelihoodRequest

    ll = []
    for i in range(n):
        ctx = f"Question: what is {i} plus {3 * i}? " + "word " * (i % 7) + "Answer:"
        ll += [LoglikelihoodRequest(ctx, c) for c in CHOICES]
    ll.append(LoglikelihoodRequest("", "hello there"))
    prompts = ["Hello, how are", "What is 12 plus 35? The answer is", "Sort", "Translate to French: cat"]
    gen = [
        GenerationRequest(prompts[i % len(prompts)] + " " * (i // len(prompts)), max_new_tokens=16)
        for i in range(n)
    ]
    return ll, gen


def _cpu_reference(model, tokenizer, ll_reqs, gen_reqs) -> dict:
    """The CPU fp32 answers, one request per batch (batch size cannot change them: a pinned invariant)."""
    import copy

    from instructkit.evaluate.backends.hf import HFBackend

    backend = HFBackend(copy.deepcopy(model).float().to("cpu"), tokenizer, batch_size=1)
    return {"ll": backend.loglikelihood(ll_reqs), "gen": [s[0].text for s in backend.generate(gen_reqs)]}


def _device_backend(ctx: Ctx, model, tokenizer, dtype: str, batch_size: int = 16):
    import copy

    import torch

    from instructkit.evaluate.backends.hf import HFBackend

    weights = copy.deepcopy(model).to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    return HFBackend(weights.to(ctx.device).eval(), tokenizer, batch_size=batch_size)


def eval_case(ctx: Ctx, model, tokenizer, reference: dict, dtype: str, ll_reqs, gen_reqs) -> dict:
    """Log-likelihoods within tolerance of the CPU reference; greedy texts identical (bf16: mostly)."""
    if dtype == "bf16":
        no_cuda_skip(ctx, "bf16")
    backend = _device_backend(ctx, model, tokenizer, dtype)
    got = backend.loglikelihood(ll_reqs)
    texts = [s[0].text for s in backend.generate(gen_reqs)]
    tol = TOLERANCES["eval"][dtype]
    ratio = max(
        abs(a.logprob - b.logprob) / (tol["ll_abs"] + tol["ll_rel"] * abs(b.logprob))
        for a, b in zip(got, reference["ll"])
    )
    max_abs = max(abs(a.logprob - b.logprob) for a, b in zip(got, reference["ll"]))
    greedy_flags = sum(a.is_greedy == b.is_greedy for a, b in zip(got, reference["ll"])) / len(got)
    match = sum(a == b for a, b in zip(texts, reference["gen"])) / len(texts)
    checks = [
        check("max |Δll| / (abs + rel·|ll|) tolerance", ratio, 1.0),
        check("greedy text match share", match, tol["greedy_match"], ">="),
    ]
    if dtype == "fp32":
        checks.append(check("is_greedy flags agree (share)", greedy_flags, 1.0, "=="))
    metrics = {
        "requests": len(got),
        "generations": len(texts),
        "max_abs_ll_diff": max_abs,
        "greedy_flag_agreement": greedy_flags,
    }
    return {"metrics": metrics, "checks": checks}


def eval_throughput(ctx: Ctx, model, tokenizer, dtype: str, ll_reqs, gen_reqs) -> dict:
    """Log-likelihood requests/s and generated tokens/s of HFBackend on the device (after one warm-up batch)."""
    import torch

    if dtype == "bf16":
        no_cuda_skip(ctx, "bf16")
    backend = _device_backend(ctx, model, tokenizer, dtype, batch_size=32)
    backend.loglikelihood(ll_reqs[:8])

    def timed(fn, *a):
        if ctx.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn(*a)
        if ctx.cuda:
            torch.cuda.synchronize()
        return out, time.perf_counter() - start

    lls, t_ll = timed(backend.loglikelihood, ll_reqs)
    gens, t_gen = timed(backend.generate, gen_reqs)
    new_tokens = sum(s[0].num_tokens for s in gens)
    metrics = {
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "loglikelihood_requests_per_s": len(lls) / t_ll,
        "generated_tokens_per_s": new_tokens / t_gen,
        "batch_size": 32,
    }
    return {"metrics": metrics, "checks": [check("generated tokens", new_tokens, 0, ">")]}
