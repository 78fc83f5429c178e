"""The bad-row policy: stop at the first bad row (default) or skip it into a rejects file, counted."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadRowError
from .prepare_config import OnError


@dataclass
class RejectLog:
    """Collects rejected rows with their reasons; raises instead when the policy is `raise`."""

    on_error: OnError = "raise"
    rows: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, error: BadRowError, data: Any = None) -> None:
        if self.on_error == "raise":
            raise error
        self.rows.append({**error.as_record(), "data": data})

    def __len__(self) -> int:
        return len(self.rows)

    def write(self, path: Path) -> Path | None:
        """Write rejects as JSONL (one row with its reason per line); none (and no stale file) when clean."""
        if not self.rows:
            Path(path).unlink(missing_ok=True)
            return None
        with open(path, "w", encoding="utf-8") as fh:
            for row in self.rows:
                fh.write(_json_line(row))
        return path


def _json_line(row: dict[str, Any]) -> str:
    """One JSON line, readable text where it can be; text that is not valid Unicode stays as `\\ud800` escapes."""
    line = json.dumps(row, ensure_ascii=False, default=str) + "\n"
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in the rejected data: escaped, the file stays UTF-8
        return json.dumps(row, ensure_ascii=True, default=str) + "\n"
    return line
