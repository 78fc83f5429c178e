"""Pairwise model-judge win rate (AlpacaEval-like): a judge backend picks the better of two outputs,
each pair judged in both orders so position bias cancels; a split verdict counts as a tie (half a win)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .backends.base import Backend
from .metrics import bootstrap_ci, mean
from .requests import GenerationRequest

JUDGE_PROMPT = (
    "You are a careful judge of AI assistants. Which output answers the instruction better?\n\n"
    "# Instruction\n{instruction}\n\n# Output (a)\n{first}\n\n# Output (b)\n{second}\n\n"
    "Answer with exactly one of: Output (a), Output (b).\nBetter output: Output ("
)
_VERDICT = re.compile(r"^\s*\(?([ab])\b", re.IGNORECASE)


def parse_verdict(text: str) -> str | None:
    """'a' or 'b' from the judge's reply (which continues after 'Output ('), else None."""
    match = _VERDICT.match(text)
    return match.group(1).lower() if match else None


def pairwise_win_rate(
    judge: Backend,
    instructions: Sequence[str],
    outputs_a: Sequence[str],
    outputs_b: Sequence[str],
    chat: bool = False,
) -> dict[str, Any]:
    """Win rate of B over A in percent (ties = 0.5), with a bootstrap interval and per-item verdicts."""
    prompts = []
    for inst, a, b in zip(instructions, outputs_a, outputs_b):
        prompts += [
            JUDGE_PROMPT.format(instruction=inst, first=a, second=b),
            JUDGE_PROMPT.format(instruction=inst, first=b, second=a),
        ]
    if chat:
        prompts = [judge.render_chat([{"role": "user", "content": p}]) for p in prompts]
    replies = judge.generate([GenerationRequest(p, stop=("\n",), max_new_tokens=8) for p in prompts])
    items = []
    for i in range(len(instructions)):
        forward, backward = parse_verdict(replies[2 * i][0].text), parse_verdict(replies[2 * i + 1][0].text)
        b_wins = (forward == "b") + (backward == "a")  # B shown second, then first
        a_wins = (forward == "a") + (backward == "b")
        items.append({"index": i, "verdicts": [forward, backward], "b_score": _score(a_wins, b_wins)})
    scores = [100 * it["b_score"] for it in items]
    return {"win_rate": mean(scores), "ci95": list(bootstrap_ci(scores)), "n": len(items), "items": items}


def _score(a_wins: int, b_wins: int) -> float:
    return 1.0 if b_wins > a_wins else 0.0 if a_wins > b_wins else 0.5
