"""Progress for long work, readable wherever it lands: a live bar on a terminal, a plain line every N
seconds in a log file (so the last line before a crash says where the run was), or one JSON object
per line for tools. Settings are process-wide and set once by the CLI (`--quiet`, `--log-format`,
`--log-interval`); library callers get terminal-or-lines by default.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]


@dataclass
class LogSettings:
    """How progress is shown: quiet, text or JSON lines, and the seconds between plain log lines."""

    quiet: bool = False
    log_format: LogFormat = "text"
    interval: float = float(os.environ.get("INSTRUCTKIT_LOG_INTERVAL", "30"))
    stream: TextIO | None = None  # None: standard error at the time of writing

    def out(self) -> TextIO:
        return self.stream or sys.stderr


SETTINGS = LogSettings()


def configure(
    quiet: bool | None = None, log_format: LogFormat | None = None, interval: float | None = None
) -> LogSettings:
    """Change the process-wide settings (the CLI calls this once, before any command runs)."""
    if quiet is not None:
        SETTINGS.quiet = quiet
    if log_format is not None:
        SETTINGS.log_format = log_format
    if interval is not None:
        SETTINGS.interval = interval
    return SETTINGS


def _is_terminal(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _field_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def log_event(stage: str, message: str, **fields: Any) -> None:
    """One status line (`[stage] message`) or, with JSON logs, one event object; silent when quiet."""
    if SETTINGS.quiet:
        return
    out = SETTINGS.out()
    if SETTINGS.log_format == "json":
        out.write(
            json.dumps({"time": round(time.time(), 3), "stage": stage, "message": message, **fields}) + "\n"
        )
    else:
        out.write(f"[{stage}] {message}\n")
    out.flush()


class Progress:
    """Progress of one stage over `total` units, with named fields (loss, tok/s, ...) shown beside it."""

    def __init__(self, stage: str, total: int | None, unit: str = "it", completed: int = 0):
        self.stage, self.total, self.unit = stage, total, unit
        self.completed = self._start_completed = completed
        self.fields: dict[str, Any] = {}
        self.start = self._last_line = time.monotonic()
        self._bar = None
        out = SETTINGS.out()
        if SETTINGS.quiet:
            return
        if SETTINGS.log_format == "text" and _is_terminal(out):
            self._start_bar(out)
        else:
            self._line("started")

    def _start_bar(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn(f"[bold]{self.stage}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[extra]}"),
            TimeRemainingColumn(),
            console=Console(file=out),
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(self.stage, total=self.total, completed=self.completed, extra="")

    def update(self, completed: int | None = None, advance: int = 0, **fields: Any) -> None:
        """Move to `completed` (or by `advance`) and record the latest field values."""
        self.completed = completed if completed is not None else self.completed + advance
        self.fields.update({k: v for k, v in fields.items() if v is not None})
        if self._bar is not None:
            extra = "  ".join(f"{k} {_field_text(v)}" for k, v in self.fields.items())
            self._bar.update(self._task, completed=self.completed, extra=extra)
        elif not SETTINGS.quiet and time.monotonic() - self._last_line >= SETTINGS.interval:
            self._line("progress")

    def eta_seconds(self) -> float | None:
        """Remaining time at the current rate (None before any progress or without a total)."""
        done = self.completed - self._start_completed
        if not self.total or done <= 0:
            return None
        rate = done / max(time.monotonic() - self.start, 1e-9)
        return max(self.total - self.completed, 0) / rate

    def _line(self, event: str) -> None:
        self._last_line = time.monotonic()
        elapsed = self._last_line - self.start
        eta = self.eta_seconds()
        out = SETTINGS.out()
        if SETTINGS.log_format == "json":
            record = {
                "time": round(time.time(), 3),
                "stage": self.stage,
                "event": event,
                "completed": self.completed,
                "total": self.total,
                "unit": self.unit,
                "elapsed_s": round(elapsed, 1),
                "eta_s": None if eta is None else round(eta, 1),
                **self.fields,
            }
            out.write(json.dumps(record) + "\n")
        else:
            total = f"/{self.total}" if self.total else ""
            percent = f" ({100 * self.completed / self.total:.0f}%)" if self.total else ""
            extra = "".join(f" {k} {_field_text(v)}" for k, v in self.fields.items())
            timing = f" elapsed {_duration(elapsed)}" + (f" eta {_duration(eta)}" if eta is not None else "")
            out.write(f"[{self.stage}] {self.unit} {self.completed}{total}{percent}{extra}{timing}\n")
        out.flush()

    def close(self) -> None:
        """Finish: stop the bar, or write the final line."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif not SETTINGS.quiet:
            self._line("done")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
