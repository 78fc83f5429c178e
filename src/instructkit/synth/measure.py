"""`synth evaluate`: response accuracy (token F1 given context and instruction) and pair statistics.

Response accuracy follows the paper: the synthesizer reads a context and a gold instruction and
writes the response; F1 against the gold response is averaged per dataset, then over datasets
seen and unseen in the synthesizer's training. Pair statistics come from free generation on the
evaluation contexts (pairs per text, parse-failure rate, share of answers found in the context).
"""

from __future__ import annotations

from collections import defaultdict
from statistics import mean
from typing import Any

from ..evaluate.backends.base import Backend, greedy_texts
from ..evaluate.backends.load import load_backend
from ..evaluate.metrics import token_f1
from .config import MeasureSettings
from .markup import END, SynthFormat, encode_question
from .parser import parse_pairs
from .quality import pair_statistics
from .rounds import build_prompt


def response_f1(
    backend: Backend, tokenizer, rows: list[dict[str, str]], max_new_tokens: int = 48
) -> list[float]:
    """F1 of the generated response of each row (context, instruction, response)."""
    fmt = SynthFormat.for_tokenizer(tokenizer)
    prompts = [encode_question(tokenizer, fmt, r["context"], r["instruction"]) for r in rows]
    predictions = greedy_texts(backend, prompts, max_new_tokens, stop=END)
    return [token_f1(p, [r["response"]]) for p, r in zip(predictions, rows)]


def free_pairs(
    backend: Backend, tokenizer, contexts: list[str], budget: int, max_new_tokens: int
) -> dict[str, Any]:
    """Pair statistics of single-round generation on `contexts`."""
    fmt = SynthFormat.for_tokenizer(tokenizer)
    prompts = [build_prompt(tokenizer, fmt, [], c, budget).ids for c in contexts]
    records = []
    for context, output in zip(contexts, greedy_texts(backend, prompts, max_new_tokens)):
        parsed = parse_pairs(output, fmt.eos or None)
        records.append(
            {"text": context, "pairs": [p.to_dict() for p in parsed.pairs], "failures": dict(parsed.failures)}
        )
    return pair_statistics(records)


def evaluate_synthesizer(
    model: str,
    rows: list[dict[str, str]],
    seen: set[str] | None = None,
    settings: MeasureSettings | None = None,
) -> dict[str, Any]:
    """Response F1 per dataset (and seen/unseen means) plus pair statistics, for the model at `model`.

    `settings` (default: `MeasureSettings()`, the defaults `synth evaluate` shows) sets the backend,
    its batch and length budget, and the generation lengths.
    """
    from ..models.loading import load_tokenizer

    s = settings or MeasureSettings()
    engine = load_backend(s.backend, model, batch_size=s.batch_size, max_model_len=s.max_model_len)
    tokenizer = load_tokenizer(model)
    scores = response_f1(engine, tokenizer, rows, s.max_new_tokens)
    by_dataset: dict[str, list[float]] = defaultdict(list)
    for row, score in zip(rows, scores):
        by_dataset[row["dataset"]].append(score)
    per_dataset = {name: round(mean(v), 4) for name, v in sorted(by_dataset.items())}
    contexts = list(dict.fromkeys(r["context"] for r in rows))[: s.pair_texts]
    report: dict[str, Any] = {
        "model": model,
        "rows": len(rows),
        "response_f1": round(mean(scores), 4) if scores else 0.0,
        "response_f1_by_dataset": per_dataset,
        "row_f1": [round(x, 4) for x in scores],  # in `rows` order: what paired tests compare
        "pair_statistics": free_pairs(
            engine, tokenizer, contexts, s.max_model_len - s.pair_max_new_tokens, s.pair_max_new_tokens
        ),
    }
    if seen is not None:
        for split, names in (
            ("seen", [d for d in per_dataset if d in seen]),
            ("unseen", [d for d in per_dataset if d not in seen]),
        ):
            report[f"response_f1_{split}"] = round(mean(per_dataset[d] for d in names), 4) if names else None
            report[f"{split}_datasets"] = names
    return report
