"""Open-ended instructions (Self-Instruct's 252 user-oriented tasks): sampled, ranked, then judged pairwise."""

from __future__ import annotations

from pathlib import Path

from ...errors import InstructkitError
from ..spec import EvalDoc, EvalTask
from .io import read_jsonl


def load_open_ended(
    local: Path | None, samples: int = 5, temperature: float = 0.7, max_new_tokens: int = 256, **_: object
) -> list[EvalTask]:
    """Each instruction (+ its first instance input) is one doc; the instance output is a reference."""
    if local is None:
        raise InstructkitError(
            "open-ended evaluation reads self_instruct/user_oriented_instructions.jsonl: "
            "pass --data-dir with a self_instruct/ folder"
        )
    path = local / "user_oriented_instructions.jsonl"
    docs = []
    for row in read_jsonl(path):
        instance = (row.get("instances") or [{}])[0]
        query = row["instruction"] + (f"\n\n{instance['input']}" if instance.get("input") else "")
        docs.append(
            EvalDoc(str(row["id"]), query, answers=[instance["output"]] if instance.get("output") else [])
        )
    return [
        EvalTask(
            "open_ended",
            "open_ended",
            docs,
            metric="f1",
            samples=samples,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            stop=(),
            group="open_ended",
            source=str(path),
        )
    ]
