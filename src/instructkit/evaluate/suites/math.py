"""Math word problems: GSM8K (8-shot CoT, last number), MGSM (8-shot CoT, native-language exemplars,
one task per language) and AQuA-RAT (5 options; loglikelihood without CoT, option letter with CoT)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from ...errors import BadRowError, InstructkitError
from ...settings_io import parse_yaml
from ..extract import normalize_number
from ..metrics import random_baseline
from ..spec import EvalDoc, EvalTask
from .io import read_jsonl, require, split_rows
from .kinds import multiple_choice_task, reasoning_task, variant

MGSM_LANGUAGES = ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")
_GSM_STOP = ("\n\nQ:", "\nQ:", "\n\n")


def gsm8k_exemplars() -> list[EvalDoc]:
    """The 8 standard chain-of-thought exemplars (Wei et al. 2022)."""
    rows = parse_yaml((Path(__file__).parent / "gsm8k_cot_exemplars.yaml").read_text(encoding="utf-8"))
    return [
        EvalDoc(f"exemplar/{i}", f"Q: {r['question']}\nA:", target=r["target"]) for i, r in enumerate(rows)
    ]


def load_gsm8k(
    local: Path | None, split: str = "test", cot: bool = True, num_fewshot: int = 8, **_: object
) -> list[EvalTask]:
    """GSM8K; the gold answer is the number after '####'; predictions are the last number generated."""
    rows = split_rows(local, split, "openai/gsm8k", "main")
    docs = []
    for i, row in enumerate(rows):
        answer = str(require(row, "answer", f"gsm8k/{split}", i)).split("####")[-1]
        docs.append(
            EvalDoc(
                f"gsm8k/{i}",
                f"Q: {require(row, 'question', f'gsm8k/{split}', i)}\nA:",
                answers=[normalize_number(answer)],
            )
        )
    exemplars = gsm8k_exemplars() if cot else [_direct(e) for e in gsm8k_exemplars()]
    return [
        reasoning_task(
            variant("gsm8k", cot),
            docs,
            str(local or "openai/gsm8k"),
            cot=cot,
            exemplars=exemplars,
            num_fewshot=num_fewshot,
            extractor="answer_is_number",
            stop=_GSM_STOP,
            group="gsm8k",
        )
    ]


def _direct(ex: EvalDoc) -> EvalDoc:
    answer = re.findall(r"The answer is (.+?)\.$", ex.target)[-1]
    return EvalDoc(ex.id, ex.query, target=f"The answer is {answer}.")


def load_mgsm(
    local: Path | None,
    languages: list[str] | None = None,
    cot: bool = True,
    num_fewshot: int = 8,
    **_: object,
) -> list[EvalTask]:
    """One task per language; exemplars in the same language (`Question:` / step-by-step answer)."""
    if local is None:
        raise InstructkitError("MGSM reads the url-nlp files: pass --data-dir with an mgsm/ folder")
    exemplars = read_jsonl(local / "mgsm_exemplars.jsonl")
    return [
        _mgsm_task(local, lang, [e for e in exemplars if e["lang"] == lang], cot, num_fewshot)
        for lang in languages or MGSM_LANGUAGES
    ]


def _mgsm_task(local: Path, lang: str, exemplars: list[dict], cot: bool, num_fewshot: int) -> EvalTask:
    if not exemplars:
        raise InstructkitError(f"{local / 'mgsm_exemplars.jsonl'}: no exemplars for language {lang!r}")
    q_prefix, a_prefix = _prefix(exemplars[0]["q"]), _prefix(exemplars[0]["a"])
    shots = [
        EvalDoc(
            f"exemplar/{e['idx']}",
            f"{e['q']}\n{a_prefix}",
            target=e["a"][len(a_prefix) :].strip() if cot else str(e["number_answer"]),
        )
        for e in sorted(exemplars, key=lambda e: e["idx"])
    ]
    path = local / f"mgsm_{lang}.tsv"
    docs = []
    with path.open(encoding="utf-8", newline="") as handle:
        for i, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if len(row) != 2:
                raise BadRowError(
                    str(path), i, "columns", f"expected question<TAB>answer, got {len(row)} columns"
                )
            docs.append(
                EvalDoc(
                    f"mgsm_{lang}/{i}", f"{q_prefix} {row[0]}\n{a_prefix}", answers=[normalize_number(row[1])]
                )
            )
    return reasoning_task(
        f"{variant('mgsm', cot)}/{lang}",
        docs,
        str(path),
        cot=cot,
        exemplars=shots,
        num_fewshot=num_fewshot,
        extractor="last_number",
        stop=(f"\n\n{q_prefix}", f"\n{q_prefix}", "\n\n"),
        group=variant("mgsm", cot),
    )


def _prefix(text: str) -> str:
    """The localised label before the first colon ('Frage:', 'Schritt-für-Schritt-Antwort:', '問題：')."""
    match = re.match(r"^(.*?[:：])", text)
    if not match:
        raise InstructkitError(f"MGSM exemplar has no 'label:' prefix: {text[:40]!r}")
    return match.group(1)


def load_aqua(
    local: Path | None, split: str = "test", cot: bool = False, num_fewshot: int = 4, **_: object
) -> list[EvalTask]:
    """AQuA-RAT: direct = loglikelihood over the 5 option texts; CoT = rationale exemplars from dev."""
    if local is None:
        raise InstructkitError("AQuA reads deepmind/AQuA files: pass --data-dir with an aqua/ folder")
    source = str(local / f"{split}.json")
    docs = [_aqua_doc(row, f"aqua/{i}") for i, row in enumerate(_aqua_rows(local / f"{split}.json"))]
    if not cot:
        return [
            multiple_choice_task(
                "aqua_direct", docs, source, random_baseline=random_baseline(5), group="aqua"
            )
        ]
    shots = [
        _aqua_doc(row, f"exemplar/{i}") for i, row in enumerate(_aqua_rows(local / "dev.json")[:num_fewshot])
    ]
    for shot, row in zip(shots, _aqua_rows(local / "dev.json")):
        shot.target = f"{row['rationale'].strip()} The answer is ({row['correct']})."
    return [
        reasoning_task(
            "aqua_cot",
            docs,
            source,
            cot=True,
            exemplars=shots,
            num_fewshot=num_fewshot,
            extractor="option_letter",
            stop=("\n\nQ:", "\nQ:"),
            random_baseline=random_baseline(5),
            group="aqua",
        )
    ]


def _aqua_rows(path: Path) -> list[dict]:
    # The files are JSON Lines despite the .json name.
    return read_jsonl(path) if path.is_file() else _missing(path)


def _missing(path: Path) -> list[dict]:
    raise InstructkitError(f"{path}: missing")


def _aqua_doc(row: dict, doc_id: str) -> EvalDoc:
    options = [re.sub(r"^[A-E]\)", "", o).strip() for o in row["options"]]
    letters = [o.split(")")[0] for o in row["options"]]
    listing = " ".join(f"({letter}) {text}" for letter, text in zip(letters, options))
    query = f"Q: {row['question']}\nAnswer Choices: {listing}\nA:"
    return EvalDoc(
        doc_id, query, choices=options, gold=letters.index(row["correct"]), answers=[row["correct"]]
    )
