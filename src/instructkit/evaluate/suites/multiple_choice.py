"""Loglikelihood multiple-choice benchmarks in lm-evaluation-harness's prompt formats:
PIQA, MMLU (5-shot from dev), ARC (Easy/Challenge), BoolQ and HellaSwag."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from ...errors import BadRowError, InstructkitError
from ..metrics import random_baseline
from ..spec import EvalDoc, EvalTask
from .io import read_jsonl, require, split_rows
from .kinds import multiple_choice_task


def load_piqa(local: Path | None, split: str = "valid", **_: object) -> list[EvalTask]:
    """PIQA: 'Question: {goal}\\nAnswer:' with the two solutions as continuations (local valid + labels)."""
    if local is not None:
        rows = read_jsonl(local / f"{split}.jsonl")
        labels = (local / f"{split}-labels.lst").read_text(encoding="utf-8").split()
        if len(labels) != len(rows):
            raise InstructkitError(f"{local}/{split}-labels.lst: {len(labels)} labels for {len(rows)} rows")
        rows = [dict(r, label=int(y)) for r, y in zip(rows, labels)]
    else:
        rows = split_rows(None, "validation", "baber/piqa")
    docs = [
        EvalDoc(f"piqa/{i}", f"Question: {r['goal']}\nAnswer:", [r["sol1"], r["sol2"]], int(r["label"]))
        for i, r in enumerate(rows)
    ]
    return [multiple_choice_task("piqa", docs, str(local or "baber/piqa"), random_baseline=50.0)]


def load_mmlu(
    local: Path | None,
    num_fewshot: int = 5,
    subjects: list[str] | None = None,
    split: str = "test",
    **_: object,
) -> list[EvalTask]:
    """MMLU: one task per subject, exemplars from its dev split, answers ' A'…' D' (lm-eval mmlu).

    Local files are either the original release's `<split>/<subject>_<split>.csv` (what
    ../shared/data/mmlu holds: the subjects present are the ones evaluated) or `<split>.jsonl`
    rows in the hub's layout (`subject`, `question`, `choices`, `answer`).
    """
    if local is not None and (local / split).is_dir():
        test, dev = read_mmlu_csv(local, split, subjects), read_mmlu_csv(local, "dev", subjects)
    else:
        test = split_rows(local, split, "cais/mmlu", "all")
        dev = split_rows(local, "dev", "cais/mmlu", "all")
    names = subjects or sorted({r["subject"] for r in test})
    return [
        _mmlu_task(
            s,
            [r for r in test if r["subject"] == s],
            [r for r in dev if r["subject"] == s],
            num_fewshot,
            str(local or "cais/mmlu"),
        )
        for s in names
    ]


def read_mmlu_csv(local: Path, split: str, subjects: list[str] | None) -> list[dict]:
    """Rows of the original MMLU CSV files (question, four choices, answer letter; no header) in the
    hub's layout; every requested subject must have its file."""
    folder = local / split
    found = {p.name[: -len(f"_{split}.csv")]: p for p in sorted(folder.glob(f"*_{split}.csv"))}
    missing = sorted(set(subjects or []) - set(found))
    if missing:
        raise InstructkitError(
            f"{folder}: no {split} file for MMLU subjects {missing} (present: {', '.join(found) or 'none'})"
        )
    rows = []
    for subject in subjects or list(found):
        with found[subject].open(encoding="utf-8", newline="") as handle:
            for i, record in enumerate(csv.reader(handle), 1):
                if len(record) != 6:
                    raise BadRowError(str(found[subject]), i, "columns", f"{len(record)} columns, expected 6")
                if record[5].strip() not in ("A", "B", "C", "D"):
                    raise BadRowError(str(found[subject]), i, "answer", f"{record[5]!r} is not A-D")
                answer = "ABCD".index(record[5].strip())
                rows.append(
                    {"subject": subject, "question": record[0], "choices": record[1:5], "answer": answer}
                )
    return rows


def _mmlu_task(subject: str, rows: list[dict], dev: list[dict], k: int, source: str) -> EvalTask:
    topic = subject.replace("_", " ")
    return multiple_choice_task(
        f"mmlu/{subject}",
        [_mmlu_doc(r, f"mmlu/{subject}/{i}", source, i) for i, r in enumerate(rows)],
        source,
        random_baseline=25.0,
        group="mmlu",
        exemplars=[_mmlu_doc(r, f"dev/{i}", source, i) for i, r in enumerate(dev)],
        num_fewshot=k,
        description=f"The following are multiple choice questions (with answers) about {topic}.",
    )


def _mmlu_doc(row: dict, doc_id: str, source: str, index: int) -> EvalDoc:
    choices = require(row, "choices", source, index)
    letters = "ABCD"[: len(choices)]
    body = "\n".join(f"{letter}. {c.strip()}" for letter, c in zip(letters, choices))
    gold = int(require(row, "answer", source, index))
    return EvalDoc(
        doc_id, f"{row['question'].strip()}\n{body}\nAnswer:", list(letters), gold, target=letters[gold]
    )


def load_arc(
    local: Path | None, subset: str = "ARC-Challenge", split: str = "test", **_: object
) -> list[EvalTask]:
    """ARC: 'Question: {q}\\nAnswer:' with the answer texts as continuations; acc and acc_norm."""
    rows = split_rows(local / subset if local else None, split, "allenai/ai2_arc", subset)
    docs = []
    for i, r in enumerate(rows):
        labels = list(r["choices"]["label"])
        if r["answerKey"] not in labels:
            raise BadRowError(f"arc/{subset}/{split}", i, "answerKey", f"{r['answerKey']!r} not in {labels}")
        docs.append(
            EvalDoc(
                f"arc/{r.get('id', i)}",
                f"Question: {r['question']}\nAnswer:",
                list(r["choices"]["text"]),
                labels.index(r["answerKey"]),
            )
        )
    name = "arc_challenge" if "Challenge" in subset else "arc_easy"
    source = str(local or "allenai/ai2_arc")
    return [multiple_choice_task(name, docs, source, metric="acc_norm", random_baseline=25.0)]


def load_boolq(local: Path | None, split: str = "validation", **_: object) -> list[EvalTask]:
    """BoolQ: '{passage}\\nQuestion: {question}?\\nAnswer:' → ' no' / ' yes'; acc and AUC-ROC."""
    rows = split_rows(local, split, "google/boolq", hub_split=split)
    docs = [
        EvalDoc(
            f"boolq/{i}",
            f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:",
            ["no", "yes"],
            int(bool(r["answer"])),
        )
        for i, r in enumerate(rows)
    ]
    return [multiple_choice_task("boolq", docs, str(local or "google/boolq"), random_baseline=50.0)]


def load_hellaswag(local: Path | None, split: str = "validation", **_: object) -> list[EvalTask]:
    """HellaSwag: activity label + context, four endings; acc_norm (lm-eval preprocessing)."""
    rows = split_rows(local, split, "Rowan/hellaswag")
    docs = []
    for i, r in enumerate(rows):
        ctx = r["ctx_a"] + " " + r["ctx_b"].capitalize()
        docs.append(
            EvalDoc(
                f"hellaswag/{r.get('ind', i)}",
                _hs_clean(r["activity_label"] + ": " + ctx),
                [_hs_clean(e) for e in r["endings"]],
                int(r["label"]),
            )
        )
    source = str(local or "Rowan/hellaswag")
    return [
        multiple_choice_task("hellaswag", docs, source, metric="acc_norm", random_baseline=random_baseline(4))
    ]


def _hs_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")
