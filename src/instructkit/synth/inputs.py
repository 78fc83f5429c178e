"""Reading raw texts (JSONL/JSON/Parquet/CSV, saved datasets, hub ids, or .txt one text per line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.sources import iter_source_rows
from ..errors import BadRowError


def read_texts(
    source: str, text_field: str = "text", group_field: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Rows as {id, text, group}; a row without a usable text is an error naming file, row and field."""
    path = Path(source)
    if path.suffix == ".txt" and path.is_file():
        return _read_txt(path, limit)
    rows: list[dict[str, Any]] = []
    for raw in iter_source_rows(source):
        if limit is not None and len(rows) >= limit:
            break
        if raw.error is not None:
            raise raw.error
        text = raw.record.get(text_field)
        if not isinstance(text, str) or not text.strip():
            raise BadRowError(raw.file, raw.row, text_field, "missing or empty text")
        group = raw.record.get(group_field) if group_field else None
        rows.append({"id": len(rows), "text": text.strip(), "group": None if group is None else str(group)})
    return rows


def _read_txt(path: Path, limit: int | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(rows) >= limit:
                break
            if line.strip():
                rows.append({"id": len(rows), "text": line.strip(), "group": None})
    return rows
