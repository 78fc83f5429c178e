"""lm-evaluation-harness tasks on local files: YAMLs that `include` lm-eval's own task definition and
override only where its data is read, so prompts, few-shot sampling, filters and metrics stay lm-eval's.

`local_task_dir(data_dir, out_dir)` writes one YAML per task whose data `data_dir` (the layout of
`../shared/data`) holds, converting files whose schema differs from the hub dataset's (PIQA's labels
file, MMLU's CSVs, WikiText paragraphs) into JSON Lines beside them. Point lm-eval's
`TaskManager(include_path=out_dir)` at the folder: its tasks keep their official names and take
precedence over the hub-backed ones. `fixtures` adds `<task>.<split>.jsonl` files already in the
official schema (e.g. a few hellaswag rows) for tasks whose data is not in `data_dir`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import InstructkitError
from ..jsonl import read_records, text_lines
from .suites.io import require

# Official task YAMLs (relative to lm_eval/tasks) that fixture files may stand in for.
FIXTURE_TASKS = {
    "hellaswag": "hellaswag/hellaswag.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "winogrande": "winogrande/default.yaml",
    "piqa": "piqa/piqa.yaml",
    "wikitext": "wikitext/wikitext.yaml",
    "ifeval": "ifeval/ifeval.yaml",
}
BBH_VARIANTS = ("cot_fewshot", "cot_zeroshot", "fewshot", "zeroshot")
MGSM_VARIANTS = ("direct", "native_cot", "en_cot")
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


def lm_eval_tasks_dir() -> Path:
    """The folder of lm-eval's own task YAMLs (lm-eval is imported only here)."""
    try:
        import lm_eval.tasks
    except ImportError as exc:
        raise InstructkitError(
            "lm-eval tasks need lm-evaluation-harness: pip install 'instructkit[test]'"
        ) from exc
    return Path(lm_eval.tasks.__file__).parent


def local_task_dir(data_dir: Path, out_dir: Path, fixtures: Path | None = None) -> list[str]:
    """Write task YAMLs (and converted data) for every task `data_dir` and `fixtures` hold; return the
    task names written. Tasks whose files are absent are skipped."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    official = lm_eval_tasks_dir()
    written: list[str] = []
    for name, include, data_files, extra in _shared_tasks(data_dir, out_dir / "data", official):
        _write_yaml(out_dir / f"{name}.yaml", include, data_files, extra)
        written.append(name)
    if fixtures is not None:
        for name, include, data_files in _fixture_tasks(Path(fixtures), official):
            _write_yaml(out_dir / f"{name}.yaml", include, data_files, {})
            written.append(name)
    return written


def _write_yaml(path: Path, include: Path, data_files: dict[str, Path], extra: dict[str, Any]) -> None:
    """A task YAML: the official definition, its data read by the `json` builder from local files.

    A split the official task names but the local files lack (PIQA's `train`) is set to null, since
    lm-eval reads every named split when it builds the task; few-shot exemplars then come from the
    next split lm-eval falls back to (zero-shot tasks are unaffected).
    """
    import yaml
    from lm_eval.tasks._yaml_loader import load_yaml

    official = load_yaml(include, resolve_func=False, recursive=True)
    missing = {key: None for key in SPLIT_KEYS if official.get(key) and official[key] not in data_files}
    files = {split: str(file.resolve()) for split, file in data_files.items()}
    config = {
        "include": str(include),
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": files, **extra},
        **missing,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def _shared_tasks(data: Path, converted: Path, official: Path) -> Iterable[tuple]:
    """(task name, official YAML, {split: file}, extra dataset kwargs) for each task present."""
    if (data / "piqa" / "valid.jsonl").is_file():
        yield "piqa", official / "piqa/piqa.yaml", {"validation": _piqa(data / "piqa", converted)}, {}
    for subject, splits in _mmlu(data / "mmlu", converted).items():
        include = official / f"mmlu/default/mmlu_{subject}.yaml"
        if include.is_file():
            yield f"mmlu_{subject}", include, splits, {}
    gsm = data / "gsm8k"
    if (gsm / "test.jsonl").is_file():
        train = {"train": gsm / "train.jsonl"} if (gsm / "train.jsonl").is_file() else {}
        yield "gsm8k", official / "gsm8k/gsm8k.yaml", {**train, "test": gsm / "test.jsonl"}, {}
        yield "gsm8k_cot", official / "gsm8k/gsm8k-cot.yaml", {"test": gsm / "test.jsonl"}, {}
    for file in sorted((data / "bbh" / "bbh").glob("*.json")):
        for variant in BBH_VARIANTS:
            include = official / f"bbh/{variant}/{file.stem}.yaml"
            if include.is_file():
                yield f"bbh_{variant}_{file.stem}", include, {"test": file}, {"field": "examples"}
    if (data / "ifeval" / "input_data.jsonl").is_file():
        yield "ifeval", official / "ifeval/ifeval.yaml", {"train": data / "ifeval/input_data.jsonl"}, {}
    for lang, splits in _mgsm(data / "mgsm", converted).items():
        for variant in MGSM_VARIANTS:
            include = official / f"mgsm/{variant}/mgsm_{variant}_{lang}.yaml"
            if include.is_file():
                yield f"mgsm_{variant}_{lang}", include, splits, {}
    wiki = data / "raw_text" / "wikitext-2_test_paragraphs.jsonl"
    if wiki.is_file():
        yield "wikitext", official / "wikitext/wikitext.yaml", {"test": _wikitext(wiki, converted)}, {}


def _fixture_tasks(fixtures: Path, official: Path) -> Iterable[tuple[str, Path, dict[str, Path]]]:
    """`<task>.<split>.jsonl` files grouped by task, for the tasks in FIXTURE_TASKS."""
    grouped: dict[str, dict[str, Path]] = {}
    for file in sorted(fixtures.glob("*.jsonl")):
        name, _, split = file.name.removesuffix(".jsonl").partition(".")
        if name not in FIXTURE_TASKS or not split:
            raise InstructkitError(
                f"{file}: fixture files are named <task>.<split>.jsonl with task one of "
                f"{', '.join(FIXTURE_TASKS)}"
            )
        grouped.setdefault(name, {})[split] = file
    for name, splits in grouped.items():
        yield name, official / FIXTURE_TASKS[name], splits


def _piqa(folder: Path, converted: Path) -> Path:
    """valid.jsonl + valid-labels.lst → the hub schema (goal, sol1, sol2, label)."""
    rows = read_records(folder / "valid.jsonl")
    labels = (folder / "valid-labels.lst").read_text("utf-8").split()
    if len(labels) != len(rows):
        raise InstructkitError(
            f"{folder / 'valid-labels.lst'}: {len(labels)} labels for {len(rows)} rows of valid.jsonl"
        )
    out = [
        {"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(x)}
        for r, x in zip(rows, labels)
    ]
    return _write_jsonl(converted / "piqa" / "validation.jsonl", out)


def _mmlu(folder: Path, converted: Path) -> dict[str, dict[str, Path]]:
    """Each subject with both `dev/<s>_dev.csv` and `test/<s>_test.csv` → the `cais/mmlu` schema
    (question, subject, choices, answer index) as `dev` and `test` splits."""
    subjects: dict[str, dict[str, Path]] = {}
    for test in sorted((folder / "test").glob("*_test.csv")):
        subject = test.name.removesuffix("_test.csv")
        dev = folder / "dev" / f"{subject}_dev.csv"
        if dev.is_file():
            subjects[subject] = {
                split: _write_jsonl(converted / "mmlu" / subject / f"{split}.jsonl", _mmlu_rows(src, subject))
                for split, src in (("dev", dev), ("test", test))
            }
    return subjects


def _mmlu_rows(path: Path, subject: str) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        for n, record in enumerate(csv.reader(handle), start=1):
            if len(record) != 6 or record[5] not in ("A", "B", "C", "D"):
                raise InstructkitError(
                    f"{path}: record {n} needs 6 fields (question, A-D, answer letter), got {record!r}"
                )
            answer = "ABCD".index(record[5])
            rows.append({"question": record[0], "subject": subject, "choices": record[1:5], "answer": answer})
    return rows


def _mgsm(folder: Path, converted: Path) -> dict[str, dict[str, Path]]:
    """Each language's `mgsm_<lang>.tsv` (question, answer number) and its 8 rows of
    `mgsm_exemplars.jsonl` → the `juletxara/mgsm` schema lm-eval reads (question, answer, answer_number,
    equation_solution): `test` rows without an answer, `train` exemplars with their step-by-step one."""
    exemplars: dict[str, list[dict[str, Any]]] = {}
    shots = folder / "mgsm_exemplars.jsonl"
    for n, row in enumerate(read_records(shots) if shots.is_file() else [], start=1):
        lang, question, answer, number, solution = (
            require(row, field, str(shots), n)
            for field in ("lang", "q", "a", "number_answer", "equation_solution")
        )
        exemplars.setdefault(lang, []).append(
            {"question": question, "answer": answer, "answer_number": number, "equation_solution": solution}
        )
    languages: dict[str, dict[str, Path]] = {}
    for tsv in sorted(folder.glob("mgsm_*.tsv")):
        lang = tsv.stem.removeprefix("mgsm_")
        out = converted / "mgsm" / lang
        splits = {}
        if exemplars.get(lang):  # first: the `json` builder takes its column types from the first split,
            splits["train"] = _write_jsonl(out / "train.jsonl", exemplars[lang])  # and test has no answers
        splits["test"] = _write_jsonl(out / "test.jsonl", _mgsm_rows(tsv))
        languages[lang] = splits
    return languages


def _mgsm_rows(path: Path) -> list[dict[str, Any]]:
    """TSV rows (question, answer number) as test rows; "2,125" is the integer 2125 (the hub schema's
    `answer_number` is an integer)."""
    rows = []
    for n, line in enumerate(text_lines(path), start=1):
        if not line:
            continue
        fields = line.split("\t")
        number = fields[-1].strip().replace(",", "") if len(fields) == 2 else ""
        if not number.lstrip("-").isdigit():
            raise InstructkitError(f"{path}: row {n} needs question<TAB>integer answer, got {line[:80]!r}")
        rows.append(
            {"question": fields[0], "answer": None, "answer_number": int(number), "equation_solution": None}
        )
    return rows


def _wikitext(path: Path, converted: Path) -> Path:
    """WikiText-2 test paragraphs → the document-level schema's `page` field."""
    rows = read_records(path)
    return _write_jsonl(converted / "wikitext" / "test.jsonl", [{"page": r["text"]} for r in rows])


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path
