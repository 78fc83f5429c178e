"""Generation benchmarks loaded from the hub: TyDiQA-GoldP (1-shot, per language, EM/F1) and HumanEval."""

from __future__ import annotations

from pathlib import Path

from ..spec import EvalDoc, EvalTask
from .io import split_rows

TYDIQA_INSTRUCTION = "Answer the following question based on the information in the given passage."
HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def load_tydiqa(
    local: Path | None,
    num_fewshot: int = 1,
    languages: list[str] | None = None,
    split: str = "validation",
    **_: object,
) -> list[EvalTask]:
    """TyDiQA-GoldP: one task per language (from the id prefix); exemplars from the same language's train."""
    rows = split_rows(local, split, "google-research-datasets/tydiqa", "secondary_task")
    train = (
        split_rows(local, "train", "google-research-datasets/tydiqa", "secondary_task") if num_fewshot else []
    )
    langs = languages or sorted({_lang(r) for r in rows})
    return [
        EvalTask(
            name=f"tydiqa/{lang}",
            method="generate",
            metric="f1",
            num_fewshot=num_fewshot,
            docs=[_tydi_doc(r) for r in rows if _lang(r) == lang],
            exemplars=[_tydi_doc(r, True) for r in train if _lang(r) == lang],
            description=TYDIQA_INSTRUCTION,
            extractor="first_line",
            stop=("\n",),
            max_new_tokens=50,
            group="tydiqa",
            source=str(local or "google-research-datasets/tydiqa"),
        )
        for lang in langs
    ]


def _lang(row: dict) -> str:
    return str(row["id"]).split("-")[0]


def _tydi_doc(row: dict, exemplar: bool = False) -> EvalDoc:
    answers = list(row["answers"]["text"])
    query = f"Passage: {row['context']}\nQuestion: {row['question']}\nAnswer:"
    return EvalDoc(str(row["id"]), query, answers=answers, target=answers[0] if exemplar and answers else "")


def load_humaneval(
    local: Path | None, samples: int = 1, temperature: float = 0.8, **_: object
) -> list[EvalTask]:
    """HumanEval: complete the function; pass@k over `samples` completions (greedy when samples=1)."""
    rows = split_rows(local, "test", "openai/openai_humaneval")
    docs = [
        EvalDoc(
            r["task_id"],
            r["prompt"],
            answers=[r["canonical_solution"]],
            meta={"test": r["test"], "entry_point": r["entry_point"]},
        )
        for r in rows
    ]
    return [
        EvalTask(
            "humaneval",
            "code",
            docs,
            metric="pass@1",
            stop=HUMANEVAL_STOP,
            max_new_tokens=512,
            samples=samples,
            temperature=temperature,
            group="humaneval",
            target_delimiter="",
            source=str(local or "openai/openai_humaneval"),
        )
    ]
