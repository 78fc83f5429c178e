"""Pairwise model-judge win rate (AlpacaEval-like): a judge backend picks the better of two outputs,
each pair judged in both orders so position bias cancels; a split verdict counts as a tie (half a win)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InstructkitError
from ..jsonl import read_records
from .backends.base import Backend
from .metrics import bootstrap_ci, mean
from .requests import GenerationRequest

JUDGE_PROMPT = (
    "You are a careful judge of AI assistants. Which output answers the instruction better?\n\n"
    "# Instruction\n{instruction}\n\n# Output (a)\n{first}\n\n# Output (b)\n{second}\n\n"
    "Answer with exactly one of: Output (a), Output (b).\nBetter output: Output ("
)
# A plain prompt is continued after "Output ("; a chat judge answers a fresh turn: "Output (b)".
_VERDICT = re.compile(r"^\s*(?:output\s*)?\(?([ab])\b", re.IGNORECASE)


def parse_verdict(text: str) -> str | None:
    """'a' or 'b' from the judge's reply ("b) …" after the prompt's "Output (", or "Output (b)"), else None."""
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
        raw = [replies[2 * i][0].text, replies[2 * i + 1][0].text]  # kept: an unparsed verdict shows why
        items.append(
            {"index": i, "verdicts": [forward, backward], "replies": raw, "b_score": _score(a_wins, b_wins)}
        )
    scores = [100 * it["b_score"] for it in items]
    return {"win_rate": mean(scores), "ci95": list(bootstrap_ci(scores)), "n": len(items), "items": items}


def _score(a_wins: int, b_wins: int) -> float:
    return 1.0 if b_wins > a_wins else 0.0 if a_wins > b_wins else 0.5


def read_samples(run: Path, task: str) -> dict[str, dict]:
    """One evaluation run's per-row records of `task` (samples/<task>.jsonl), by row id."""
    path = Path(run) / "samples" / f"{task.replace('/', '__')}.jsonl"
    if not path.is_file():
        raise InstructkitError(f"{path}: no samples for task {task!r}")
    rows = read_records(path)
    return {str(r["id"]): r for r in rows}


def judge_runs(
    judge: Backend, run_a: Path, run_b: Path, task: str, queries: dict[str, str], chat: bool = False
) -> dict[str, Any]:
    """Win rate of run B's outputs over run A's on the rows of `task` both answered (`queries`: id → prompt)."""
    rows_a, rows_b = read_samples(run_a, task), read_samples(run_b, task)
    ids = [i for i in rows_a if i in rows_b]
    if not ids:
        raise InstructkitError(f"{run_a} and {run_b}: no row of task {task!r} answered by both")
    missing = next((i for i in ids if i not in queries), None)
    if missing is not None:  # judging without the instruction would silently judge something else
        raise InstructkitError(f"task {task!r}: no prompt for row {missing!r} to show the judge")
    result = pairwise_win_rate(
        judge,
        [queries[i] for i in ids],
        [rows_a[i]["output"] for i in ids],
        [rows_b[i]["output"] for i in ids],
        chat=chat,
    )
    return {"task": task, **result, "ids": ids}
