"""Small file writers shared by the tests."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl(path: Path, rows: list) -> str:
    """Write `rows` as JSON Lines (a `bytes` row is written as it is, for malformed lines); return the path."""
    with open(path, "wb") as fh:
        for row in rows:
            fh.write(row if isinstance(row, bytes) else (json.dumps(row) + "\n").encode())
    return str(path)
