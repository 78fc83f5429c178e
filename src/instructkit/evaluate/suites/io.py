"""Rows of a benchmark split from a local file (JSON Lines / JSON / TSV) or, without one, from the hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import BadRowError, InstructkitError
from ...hub import load_hub_dataset


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse a JSON Lines file, naming file and line on a bad row."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for i, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise BadRowError(str(path), i, "json", str(exc)) from None
    return rows


def split_rows(
    local: Path | None, split: str, hub_id: str, hub_config: str | None = None, hub_split: str | None = None
) -> list[dict[str, Any]]:
    """Rows of `split`: `<local>/<split>.jsonl` when a local directory is given, else the hub dataset."""
    if local is not None:
        path = local / f"{split}.jsonl"
        if not path.is_file():
            raise InstructkitError(f"{path}: missing (expected the {split!r} split as JSON Lines)")
        return read_jsonl(path)
    return [dict(r) for r in load_hub_dataset(hub_id, hub_config, split=hub_split or split)]


def require(row: dict[str, Any], field: str, where: str, index: int) -> Any:
    """row[field], or a BadRowError naming the file, row and field."""
    if field not in row:
        raise BadRowError(where, index, field, "missing field")
    return row[field]
