"""Score a task with a backend: loglikelihood multiple choice, greedy generation, self-consistency,
open-ended ranked sampling (Flan 2022) and pass@k code, each returning per-example records and metrics."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable

from .backends.base import Backend
from .code_exec import check_program, humaneval_program
from .extract import get_extractor
from .metrics import auc_roc, exact_match, mean, pass_at_k, token_f1
from .prompting import PromptStyle, context, continuation
from .requests import GenerationRequest, LoglikelihoodRequest, Sample
from .spec import EvalDoc, EvalTask

Records = list[dict]


def score_task(
    backend: Backend,
    task: EvalTask,
    style: PromptStyle = "base",
    seed: int = 0,
    allow_code_execution: bool = False,
) -> tuple[Records, dict[str, float]]:
    """Per-example records and task metrics (0-100) for `task`'s method."""
    if task.method == "multiple_choice":
        return multiple_choice(backend, task, style)
    if task.method == "code":
        return code_pass_at_k(backend, task, style, seed, allow_code_execution)
    runner: dict[str, Callable] = {
        "generate": generation,
        "self_consistency": self_consistency,
        "open_ended": open_ended,
    }
    return runner[task.method](backend, task, style, seed)


def multiple_choice(backend: Backend, task: EvalTask, style: PromptStyle) -> tuple[Records, dict[str, float]]:
    """Pick the choice with the highest loglikelihood (acc) and per-character loglikelihood (acc_norm)."""
    requests, spans = [], []
    for doc in task.docs:
        ctx = context(task, doc, style, backend)
        spans.append((len(requests), len(doc.choices or [])))
        requests += [LoglikelihoodRequest(ctx, continuation(task, c, style)) for c in doc.choices or []]
    results = backend.loglikelihood(requests)
    records = []
    for doc, (start, count) in zip(task.docs, spans):
        lls = [r.logprob for r in results[start : start + count]]
        normed = [ll / max(1, len(c)) for ll, c in zip(lls, doc.choices or [])]  # per character, as lm-eval
        pred, pred_norm = _argmax(lls), _argmax(normed)
        records.append(
            {
                "id": doc.id,
                "loglikelihoods": lls,
                "is_greedy": [r.is_greedy for r in results[start : start + count]],
                "pred": pred,
                "pred_norm": pred_norm,
                "gold": doc.gold,
                "acc": float(pred == doc.gold),
                "acc_norm": float(pred_norm == doc.gold),
            }
        )
    metrics = {
        "acc": 100 * mean([r["acc"] for r in records]),
        "acc_norm": 100 * mean([r["acc_norm"] for r in records]),
    }
    if all(len(d.choices or []) == 2 for d in task.docs) and task.docs:
        margins = [r["loglikelihoods"][1] - r["loglikelihoods"][0] for r in records]
        metrics["auc_roc"] = 100 * auc_roc(margins, [int(r["gold"] == 1) for r in records])
    return records, metrics


def generation(
    backend: Backend, task: EvalTask, style: PromptStyle, seed: int = 0
) -> tuple[Records, dict[str, float]]:
    """Greedy decoding with stop sequences and a token limit, then extraction and matching."""
    outputs = backend.generate([_gen_request(task, d, style, backend, 1, 0.0, seed) for d in task.docs])
    extract = get_extractor(task.extractor)
    records = [
        _match(doc, samples[0].text, extract(samples[0].text)) for doc, samples in zip(task.docs, outputs)
    ]
    return records, _answer_metrics(records)


def self_consistency(
    backend: Backend, task: EvalTask, style: PromptStyle, seed: int = 0
) -> tuple[Records, dict[str, float]]:
    """`task.samples` samples at `task.temperature` per prompt; the majority extracted answer wins."""
    requests = [
        _gen_request(task, d, style, backend, task.samples, task.temperature, seed) for d in task.docs
    ]
    extract = get_extractor(task.extractor)
    records = []
    for doc, samples in zip(task.docs, backend.generate(requests)):
        votes = [extract(s.text) for s in samples]
        winner = majority_vote(votes)
        record = _match(doc, samples[votes.index(winner)].text, winner)
        record["votes"] = votes
        records.append(record)
    return records, _answer_metrics(records)


def open_ended(
    backend: Backend, task: EvalTask, style: PromptStyle, seed: int = 0
) -> tuple[Records, dict[str, float]]:
    """Flan 2022: k samples at τ, drop degenerate ones (score above half the median), keep the likeliest."""
    requests = [
        _gen_request(task, d, style, backend, task.samples, task.temperature or 0.7, seed) for d in task.docs
    ]
    records = []
    for doc, samples in zip(task.docs, backend.generate(requests)):
        best = rank_open_ended(samples)
        record = {
            "id": doc.id,
            "output": best.text,
            "logprob": best.logprob,
            "candidates": [{"text": s.text, "logprob": s.logprob} for s in samples],
        }
        if doc.answers:
            record["f1"] = token_f1(best.text, doc.answers)
        records.append(record)
    metrics = {"f1": 100 * mean([r["f1"] for r in records])} if records and "f1" in records[0] else {}
    return records, metrics


def rank_open_ended(samples: list[Sample]) -> Sample:
    """The highest log-probability sample after dropping those scoring above half the median (repeats)."""
    median = statistics.median(s.logprob for s in samples)
    kept = [s for s in samples if s.logprob <= median / 2] or list(samples)
    return max(kept, key=lambda s: s.logprob)


def code_pass_at_k(
    backend: Backend, task: EvalTask, style: PromptStyle, seed: int = 0, allow_code_execution: bool = False
) -> tuple[Records, dict[str, float]]:
    """HumanEval-style: n completions per problem, run against its tests; unbiased pass@1 and pass@k."""
    temperature = task.temperature if task.samples > 1 else 0.0
    requests = [_gen_request(task, d, style, backend, task.samples, temperature, seed) for d in task.docs]
    records = []
    for doc, samples in zip(task.docs, backend.generate(requests)):
        passed = [
            check_program(
                humaneval_program(doc.query, s.text, doc.meta["test"], doc.meta["entry_point"]),
                allow=allow_code_execution,
            )
            for s in samples
        ]
        records.append({"id": doc.id, "outputs": [s.text for s in samples], "passed": passed})
    n = task.samples
    metrics = {
        f"pass@{k}": 100 * mean([pass_at_k(n, sum(r["passed"]), k) for r in records])
        for k in sorted({1, min(10, n), n})
        if k <= n
    }
    return records, metrics


def majority_vote(votes: list[str]) -> str:
    """Most frequent answer; ties go to the one seen first; empty answers vote only if nothing else does."""
    counts = Counter(v for v in votes if v) or Counter(votes)
    top = max(counts.values())
    return next(v for v in votes if counts.get(v) == top)


def _gen_request(
    task: EvalTask, doc: EvalDoc, style: PromptStyle, backend: Backend, n: int, temperature: float, seed: int
) -> GenerationRequest:
    return GenerationRequest(
        context(task, doc, style, backend), tuple(task.stop), task.max_new_tokens, temperature, n, seed
    )


def _match(doc: EvalDoc, output: str, answer: str) -> dict:
    return {
        "id": doc.id,
        "output": output,
        "pred": answer,
        "answers": doc.answers,
        "acc": float(answer_correct(doc, answer)),
        "em": exact_match(answer, doc.answers),
        "f1": token_f1(answer, doc.answers),
    }


def answer_correct(doc: EvalDoc, answer: str) -> bool:
    """The exact-answer check of `acc`: the extracted answer equals one gold answer (whitespace aside)."""
    return any(answer.strip() == a.strip() for a in doc.answers)


def _answer_metrics(records: Records) -> dict[str, float]:
    return {m: 100 * mean([r[m] for r in records]) for m in ("acc", "em", "f1")}


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i)) if values else -1
