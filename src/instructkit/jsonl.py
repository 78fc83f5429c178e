"""Lines of JSON Lines and TSV files as those formats define them: split at "\n" only.

`str.splitlines` also splits at U+2028, U+2029, U+0085 and other characters that a JSON string may hold
raw (`json.dumps(..., ensure_ascii=False)` writes them so, and web text carries them): it would cut a
row in two, and the second half would fail to parse or be read as a row of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import BadRowError


def text_lines(path: Path) -> list[str]:
    """The file's lines (UTF-8), split at "\\n" only, a trailing "\\r" dropped from each."""
    return [line.removesuffix("\r") for line in Path(path).read_text(encoding="utf-8").split("\n")]


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every non-blank line of a JSON Lines file, parsed; a bad line names the file and line number."""
    records = []
    for number, line in enumerate(text_lines(path), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise BadRowError(str(path), number, "json", exc.msg) from None
    return records
