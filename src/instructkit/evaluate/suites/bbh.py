"""BIG-Bench Hard: 27 tasks, 3-shot, answer-only ("direct") or chain-of-thought with the official prompts.

The official `cot-prompts/<task>.txt` files hold 3 exemplars each; the direct prompts are the same
exemplars with the reasoning removed ("A: <answer>"), as in the BBH paper's answer-only setting.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ...errors import InstructkitError
from ..spec import EvalDoc, EvalTask
from .kinds import reasoning_task, variant

_EXEMPLAR = re.compile(r"Q: (.*?)\nA: (.*?)(?=\n\nQ: |\Z)", re.DOTALL)
_OPTION = re.compile(r"^\([A-R]\) ", re.MULTILINE)
_SO_ANSWER = re.compile(r"So the answer is (.*)\.\s*$", re.DOTALL)


def bbh_task_names(local: Path) -> list[str]:
    """The task names present in a local BBH checkout (bbh/<task>.json)."""
    return sorted(p.stem for p in (local / "bbh").glob("*.json"))


def load_bbh(
    local: Path | None, cot: bool = False, tasks: list[str] | None = None, **_: object
) -> list[EvalTask]:
    """One EvalTask per BBH task (exact match after "the answer is" for CoT, first line for direct)."""
    if local is None:
        raise InstructkitError(
            "BBH needs the official prompts: pass --data-dir with a bbh/ folder "
            "(bbh/<task>.json and cot-prompts/<task>.txt) from suzgunmirac/BIG-Bench-Hard"
        )
    return [_task(local, name, cot) for name in tasks or bbh_task_names(local)]


def _task(local: Path, name: str, cot: bool) -> EvalTask:
    data_path, prompt_path = local / "bbh" / f"{name}.json", local / "cot-prompts" / f"{name}.txt"
    if not data_path.is_file() or not prompt_path.is_file():
        raise InstructkitError(f"BBH task {name!r}: need {data_path} and {prompt_path}")
    examples = json.loads(data_path.read_text(encoding="utf-8"))["examples"]
    prompt = parse_prompt(prompt_path.read_text(encoding="utf-8"), cot)
    suffix = " Let's think step by step." if cot else ""
    docs = [
        EvalDoc(f"{name}/{i}", f"Q: {ex['input']}\nA:{suffix}", answers=[ex["target"]])
        for i, ex in enumerate(examples)
    ]
    return reasoning_task(
        f"{variant('bbh', cot)}/{name}",
        docs,
        str(data_path),
        cot=cot,
        fewshot_text=prompt,
        num_fewshot=3,
        extractor="answer_is" if cot else "first_line",
        stop=("\n\nQ:", "\nQ:") if cot else ("\n",),
        group=variant("bbh", cot),
        random_baseline=bbh_random_baseline(examples),
    )


def bbh_random_baseline(examples: list[dict]) -> float:
    """Chance accuracy: 1/options for '(A)…' option lists, 1/labels for small label sets, else 0."""
    counts = [len(_OPTION.findall(ex["input"])) for ex in examples]
    if all(counts):
        return 100.0 * sum(1 / c for c in counts) / len(counts)
    labels = {ex["target"] for ex in examples}
    return 100.0 / len(labels) if len(labels) <= 3 else 0.0


def parse_prompt(text: str, cot: bool) -> str:
    """Task description + 3 exemplars; CoT keeps the reasoning, direct keeps only the final answer."""
    body = text.split("-----", 1)[-1].strip()
    description, _, rest = body.partition("\n\nQ: ")
    exemplars = _EXEMPLAR.findall("Q: " + rest)
    if len(exemplars) != 3:
        raise InstructkitError(f"BBH prompt: expected 3 exemplars, found {len(exemplars)}")
    shots = [f"Q: {q}\nA: {a.strip() if cot else _final_answer(a)}" for q, a in exemplars]
    return "\n\n".join([description.strip(), *shots])


def _final_answer(answer: str) -> str:
    match = _SO_ANSWER.search(answer.strip())
    if not match:
        raise InstructkitError(f"BBH prompt: no 'So the answer is' in exemplar answer {answer[:60]!r}")
    return match.group(1).strip()
