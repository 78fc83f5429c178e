"""Context-based task data → (dataset, context, instruction, response) rows, from files or generators.

Accepted columns (first match wins): context | paragraph | passage | article; instruction | question |
prompt; response | answer | completion | output; dataset | task. A prompt/completion row without a
context column (the P3/T0 files) has its context cut out of the prompt: the longest paragraph block
of at least `MIN_CONTEXT_WORDS` words, its template's label and quotes removed; rows without one are
skipped and counted. A file's dataset is
its `dataset` column, else its entry in a `clusters.json` beside it, else the file's name.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..data.sources import iter_source_rows
from ..errors import InstructkitError

CONTEXT_KEYS = ("context", "paragraph", "passage", "article")
INSTRUCTION_KEYS = ("instruction", "question", "prompt")
RESPONSE_KEYS = ("response", "answer", "completion", "output")
DATASET_KEYS = ("dataset", "task")
MIN_CONTEXT_WORDS = 40
END_MARKERS = ("<|endoftext|>",)


def read_task_rows(source: str, skipped: Counter | None = None) -> list[dict[str, str]]:
    """Rows of one source; `procedural:NAME[:N]` and `paragraphs:NAME[:N]` draw from the offline generators."""
    skipped = skipped if skipped is not None else Counter()
    if source.startswith(("procedural:", "paragraphs:")):
        return _generated_rows(source)
    rows = []
    for raw in iter_source_rows(source):
        if raw.error is not None:
            raise raw.error
        row = normalize_row(raw.record, catalog_dataset(raw.file))
        if isinstance(row, str):
            skipped[row] += 1
        else:
            rows.append(row)
    return rows


def catalog_dataset(file: str) -> str:
    """The dataset a file's rows come from: its `dataset` in a `clusters.json` beside it (the P3/T0
    subset: one file per prompt template, so all templates of one dataset, and their shared passages,
    stay one dataset), else the file's stem."""
    path = Path(file)
    return _catalog(str(path.parent)).get(path.name) or path.stem


@lru_cache(maxsize=32)
def _catalog(folder: str) -> dict[str, str]:
    path = Path(folder) / "clusters.json"
    if not path.is_file():
        return {}
    entries = json.loads(path.read_text(encoding="utf-8"))
    return {e["file"]: e["dataset"] for e in entries if isinstance(e, dict) and e.get("dataset")}


def normalize_row(record: dict[str, Any], default_dataset: str) -> dict[str, str] | str:
    """The row in the common schema, or the reason it cannot be used."""
    instruction, response = _first(record, INSTRUCTION_KEYS), _first(record, RESPONSE_KEYS)
    if not instruction or not response:
        return "no_instruction_or_response"
    response = _strip_end(response)
    context = _first(record, CONTEXT_KEYS)
    if not context:
        context, instruction = split_context(instruction)
        if not context:
            return "no_context"
    dataset = _first(record, DATASET_KEYS) or default_dataset
    return {
        "dataset": dataset,
        "context": context.strip(),
        "instruction": instruction.strip(),
        "response": response.strip(),
    }


def split_context(prompt: str, min_words: int = MIN_CONTEXT_WORDS) -> tuple[str, str]:
    """(context, instruction without it): the prompt's longest blank-line block, if long enough."""
    blocks = [b for b in prompt.split("\n") if b.strip()]
    if not blocks:
        return "", prompt
    k = max(range(len(blocks)), key=lambda i: len(blocks[i].split()))
    if len(blocks[k].split()) < min_words:
        return "", prompt
    return clean_context(blocks[k]), "\n".join(b.strip() for i, b in enumerate(blocks) if i != k)


CONTEXT_LABEL = re.compile(r"^(?:context|background|paragraph|passage|article|story|text)\s*:\s*", re.I)


def clean_context(block: str) -> str:
    """The passage without its template's decoration (`Context: "…",`), so the same passage cut out of
    two templates is one text: grouped as one example and held out as one."""
    text = CONTEXT_LABEL.sub("", block.strip()).rstrip(",").strip()
    if len(text) > 1 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text


def _first(record: dict[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def _strip_end(text: str) -> str:
    for marker in END_MARKERS:
        if text.endswith(marker):
            text = text[: -len(marker)]
    return text


def _generated_rows(source: str) -> list[dict[str, str]]:
    """`procedural:reading_where:300` (the procedural task catalog) or `paragraphs:people:300` (ours)."""
    kind, name, *size = source.split(":")
    n = int(size[0]) if size else 200
    if kind == "paragraphs":
        from .paragraphs import GENERATORS, generate_paragraph_rows

        if name not in GENERATORS:
            raise InstructkitError(f"unknown paragraph generator {name!r} (known: {', '.join(GENERATORS)})")
        return generate_paragraph_rows(name, n)
    from ..data.procedural import generate

    rows = [normalize_row(r, name) for r in generate(name, n)]
    usable = [r for r in rows if isinstance(r, dict)]
    if not usable:
        raise InstructkitError(
            f"procedural generator {name!r} has no context field (paragraph/context/passage)"
        )
    return usable
