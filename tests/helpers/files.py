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


def jsonl(rows: list) -> bytes:
    """`rows` as JSON Lines bytes (a `bytes` row is kept as it is, for malformed lines)."""
    return b"".join(r if isinstance(r, bytes) else (json.dumps(r) + "\n").encode() for r in rows)


def write(path: Path, data: bytes | str) -> Path:
    """Write `data` to `path`, creating its folders; return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def rejects_of(out: Path) -> list[dict]:
    """The rows of a prepared folder's rejects.jsonl."""
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
