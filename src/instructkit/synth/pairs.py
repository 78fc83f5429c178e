"""`synth pairs`: on-policy preference pairs verified by an exact answer (as Tülu 3 builds part of its data).

For each question of an exact-answer task (GSM8K train by default), the model samples `samples`
answers through an evaluation backend; the task's extractor and `acc` check (`evaluate.scoring`)
mark each right or wrong. chosen = the first right sample, rejected = the first wrong one; a question
whose samples are all right or all wrong gives no pair and is counted. Sampling is seeded per
question, so a rerun gives the same pairs; questions run in shards written atomically, so an
interrupted run resumes where it stopped (`config.json` refuses a rerun with other settings).
Outputs: `pairs.jsonl` / `heldout.jsonl` in the preference format `data prepare` reads, `summary.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InstructkitError
from ..evaluate.backends.base import Backend
from ..evaluate.backends.load import load_backend
from ..evaluate.extract import get_extractor, normalize_number
from ..evaluate.prompting import chat_messages
from ..evaluate.requests import GenerationRequest
from ..evaluate.scoring import answer_correct
from ..evaluate.spec import EvalDoc, EvalTask
from ..fingerprint import text_digest
from .pairs_config import PairsConfig
from .shards import check_plan, finished_records, is_done, read_jsonl, shard_path, write_atomic

EXACT_METHODS = ("generate", "self_consistency")  # tasks scored by an extracted answer
# Settings that change what a shard holds; the rest (batch size, holdout) may change between runs.
PLAN_KEYS = (
    "model",
    "task",
    "data_dir",
    "samples",
    "temperature",
    "seed",
    "limit",
    "max_new_tokens",
    "stop",
    "prompt_style",
    "backend",
    "shard_size",
)


def build_pairs(cfg: PairsConfig) -> dict[str, Any]:
    """Sample, check and pair every question (skipping finished shards); write the pair files; the summary."""
    out = Path(cfg.out)
    task = load_exact_task(cfg)
    _check_config(cfg, out)
    starts = range(0, len(task.docs), cfg.shard_size)
    pending = [k for k, _ in enumerate(starts) if not is_done(out, k)]
    if pending:
        from ..progress import Progress

        backend = load_backend(
            cfg.backend, cfg.model, batch_size=cfg.batch_size, max_model_len=cfg.max_model_len
        )
        done = (len(starts) - len(pending)) * cfg.shard_size
        with Progress(
            "pairs", total=len(task.docs), unit="question", completed=min(done, len(task.docs))
        ) as bar:
            for k in pending:
                docs = task.docs[k * cfg.shard_size : (k + 1) * cfg.shard_size]
                write_atomic(shard_path(out, k), sample_questions(backend, task, docs, cfg))
                bar.update(advance=len(docs), shards_done=k + 1)
    return write_pairs(out, finished_records(out), cfg.holdout)


def load_exact_task(cfg: PairsConfig) -> EvalTask:
    """The task's questions (first `limit`), with the sampling overrides; refuses a task without an exact answer."""
    path = Path(cfg.task)
    task = _file_task(path) if path.suffix == ".jsonl" else _named_task(cfg.task, cfg.data_dir)
    if task.method not in EXACT_METHODS:
        raise InstructkitError(
            f"task {task.name!r} is scored by {task.method!r}, not by an extracted exact answer "
            f"({', '.join(EXACT_METHODS)}): its samples cannot be marked right or wrong"
        )
    unanswered = next((d.id for d in task.docs if not d.answers), None)
    if unanswered is not None:
        raise InstructkitError(
            f"task {task.name!r}: question {unanswered} has no gold answer to check against"
        )
    task.docs = task.docs[: cfg.limit] if cfg.limit else task.docs
    task.max_new_tokens = cfg.max_new_tokens or task.max_new_tokens
    task.stop = tuple(s for s in cfg.stop if s) if cfg.stop is not None else task.stop  # `--stop ""`: none
    return task


def _named_task(spec: str, data_dir: str | None) -> EvalTask:
    from ..evaluate.suites.registry import parse_task_spec, tasks_from_entries

    tasks = tasks_from_entries([parse_task_spec(spec)], Path(data_dir) if data_dir else None)
    if len(tasks) != 1:
        names = ", ".join(t.name for t in tasks) or "none"
        raise InstructkitError(f"--task {spec!r} gives {len(tasks)} tasks ({names}); name exactly one")
    return tasks[0]


def _file_task(path: Path) -> EvalTask:
    """A JSONL file of {question, answer} rows: the question is the user turn, answers match by last number."""
    from ..errors import BadRowError

    if not path.is_file():
        raise InstructkitError(f"{path}: no such file")
    docs = []
    for i, row in enumerate(read_jsonl(path), 1):
        for key in ("question", "answer"):
            if not isinstance(row.get(key), (str, int, float)) or str(row[key]).strip() == "":
                raise BadRowError(str(path), i, key, "missing or empty")
        docs.append(
            EvalDoc(
                f"{path.stem}/{i - 1}", str(row["question"]), answers=[normalize_number(str(row["answer"]))]
            )
        )
    return EvalTask(path.stem, "generate", docs, extractor="last_number", stop=(), source=str(path))


def question_seed(seed: int, doc_id: str) -> int:
    """The sampling seed of one question: from the run's seed and the question's id, not its position in a batch."""
    return int(text_digest(str(seed), doc_id)[:8], 16)


def sample_questions(backend: Backend, task: EvalTask, docs: list[EvalDoc], cfg: PairsConfig) -> list[dict]:
    """One record per question: its prompt messages, each sample with its extracted answer and verdict, the pair."""
    extract = get_extractor(task.extractor)
    prompts = [chat_messages(task, doc, cfg.prompt_style) for doc in docs]
    requests = [
        GenerationRequest(
            backend.render_chat(messages),
            tuple(task.stop),
            task.max_new_tokens,
            cfg.temperature,
            cfg.samples,
            question_seed(cfg.seed, doc.id),
        )
        for doc, messages in zip(docs, prompts)
    ]
    records = []
    for doc, messages, samples in zip(docs, prompts, backend.generate(requests)):
        checked = [
            {"text": s.text.strip(), "pred": (pred := extract(s.text)), "correct": answer_correct(doc, pred)}
            for s in samples
        ]
        records.append({"id": doc.id, "prompt": messages, "answers": doc.answers, "samples": checked})
    return records


def pick_pair(samples: list[dict]) -> tuple[int, int] | None:
    """(chosen, rejected) sample indexes: the first right and the first wrong non-empty sample, or None."""
    right = next((i for i, s in enumerate(samples) if s["correct"] and s["text"]), None)
    wrong = next((i for i, s in enumerate(samples) if not s["correct"] and s["text"]), None)
    return None if right is None or wrong is None else (right, wrong)


def preference_row(record: dict, chosen: int, rejected: int) -> dict[str, Any]:
    """The preference row `data prepare` reads: prompt messages, then one assistant reply per side."""
    good, bad = record["samples"][chosen], record["samples"][rejected]
    return {
        "prompt": record["prompt"],
        "chosen": [{"role": "assistant", "content": good["text"]}],
        "rejected": [{"role": "assistant", "content": bad["text"]}],
        "id": record["id"],
        "answer": record["answers"][0],
        "chosen_answer": good["pred"],
        "rejected_answer": bad["pred"],
    }


def write_pairs(out: Path, records: list[dict], holdout: int) -> dict[str, Any]:
    """pairs.jsonl (training) and heldout.jsonl (the last `holdout` pairs) from the shard records; summary.json."""
    rows, no_right, no_wrong = [], 0, 0
    for record in records:
        pair = pick_pair(record["samples"])
        if pair is None:
            right = any(s["correct"] and s["text"] for s in record["samples"])
            no_right, no_wrong = no_right + (not right), no_wrong + right
            continue
        rows.append(preference_row(record, *pair))
    if not rows and records:
        from ..progress import log_event

        log_event("pairs", "no pairs: every question's samples were all right or all wrong (raise --samples)")
    if holdout >= len(rows) and holdout:
        raise InstructkitError(
            f"--holdout {holdout} asks for every pair or more, but only {len(rows)} pairs were made "
            "(raise --samples or --limit, or hold out fewer)"
        )
    cut = len(rows) - holdout
    write_atomic(out / "pairs.jsonl", rows[:cut])
    write_atomic(out / "heldout.jsonl", rows[cut:])
    samples = [s for r in records for s in r["samples"]]
    summary = {
        "questions": len(records),
        "pairs": cut,
        "heldout_pairs": holdout,
        "skipped_all_right": no_wrong,  # no wrong (non-empty) sample to reject
        "skipped_all_wrong": no_right,  # no right (non-empty) sample to choose
        "sample_accuracy": sum(s["correct"] for s in samples) / max(1, len(samples)),
        "pairs_file": str(out / "pairs.jsonl"),
        "heldout_file": str(out / "heldout.jsonl"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _check_config(cfg: PairsConfig, out: Path) -> None:
    """Write config.json on the first run; refuse a rerun whose plan settings differ."""
    check_plan(out, cfg.model_dump(include=set(PLAN_KEYS)), cfg.model_dump(), "samples")
