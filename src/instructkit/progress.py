"""Progress for long work, readable wherever it lands: a live bar on a terminal, a plain line every N
seconds in a log file (so the last line before a crash says where the run was), or one JSON object
per line for tools. Settings are process-wide and set once by the CLI (`--quiet`, `--log-format`,
`--log-interval`); library callers get terminal-or-lines by default.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]
DEFAULT_LOG_INTERVAL = 30.0  # seconds; `--log-interval` and $INSTRUCTKIT_LOG_INTERVAL override it


@dataclass
class LogSettings:
    """How progress is shown: quiet, text or JSON lines, and the seconds between plain log lines."""

    quiet: bool = False
    log_format: LogFormat = "text"
    interval: float = float(os.environ.get("INSTRUCTKIT_LOG_INTERVAL", DEFAULT_LOG_INTERVAL))
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


def format_number(value: float | int | None, missing: str = "not logged") -> str:
    """A number for a status line: 4 significant digits below 1000 (2.346, 0.0001234), whole and
    grouped above (12,345); `missing` for None, so no line ever reads 'loss None'."""
    if value is None:
        return missing
    return _field_text(float(value)) if isinstance(value, float) else f"{value:,}"


def _json_value(value: Any) -> Any:
    """A float rounded as the text lines show it (970.1, not 970.117706576464); others unchanged."""
    if isinstance(value, float) and math.isfinite(value):
        return float(round(value)) if abs(value) >= 1000 else float(f"{value:.4g}")
    return value


def _json_line(record: dict[str, Any]) -> str:
    """One JSON object per line; `time` keeps its milliseconds, other floats are rounded."""
    return (
        json.dumps({k: v if k == "time" else _json_value(v) for k, v in record.items()}, default=str) + "\n"
    )


def log_event(stage: str, message: str, **fields: Any) -> None:
    """One status line (`[stage] message`) or, with JSON logs, one event object; silent when quiet."""
    if SETTINGS.quiet:
        return
    out = SETTINGS.out()
    if SETTINGS.log_format == "json":
        out.write(_json_line({"time": round(time.time(), 3), "stage": stage, "message": message, **fields}))
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
            out.write(_json_line(record))
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


# Environment switches the libraries read when first imported: no progress bars of their own, no
# advisory warnings; their errors still show. Set only where the user has not set them.
THIRD_PARTY_QUIET = {
    "TQDM_DISABLE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def plain_output() -> bool:
    """True when output is for a file or a tool: quiet, JSON, or standard error not a terminal."""
    return SETTINGS.quiet or SETTINGS.log_format == "json" or not _is_terminal(SETTINGS.out())


def silence_third_party() -> None:
    """Make redirected, JSON and quiet output hold only instructkit's lines: third-party progress bars
    (datasets, transformers, huggingface_hub, tqdm) off, and Python warnings and library log records
    written by `log_event` (a JSON object, or `[warning] ...`). Call before the libraries are imported
    (the CLI's root callback does); those already imported are told directly."""
    for key, value in THIRD_PARTY_QUIET.items():
        os.environ.setdefault(key, value)
    _quiet_imported_libraries()
    # code that turns the bars back on after a quiet step is refused by the variable above, with a warning
    warnings.filterwarnings("ignore", message="Cannot enable progress bars", category=UserWarning)
    logging.captureWarnings(True)
    root = logging.getLogger()
    if not any(isinstance(h, EventHandler) for h in root.handlers):
        root.addHandler(EventHandler(logging.WARNING))


def _quiet_imported_libraries() -> None:
    """The same switches for libraries imported before the settings (they read them at import)."""
    datasets = sys.modules.get("datasets")
    if datasets is not None:
        datasets.disable_progress_bars()
        datasets.utils.logging.set_verbosity_error()
    transformers = sys.modules.get("transformers")
    if transformers is not None:
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    hub = sys.modules.get("huggingface_hub")
    if hub is not None:
        hub.utils.disable_progress_bars()


WARNING_SOURCE = re.compile(r"^\S.*?:\d+: (?=\w+:)")  # "/path/file.py:12: " before "UserWarning: ..."


class EventHandler(logging.Handler):
    """Writes log records (library warnings, Python warnings) as instructkit events: one JSON object
    or one `[warning] message` line, never a multi-line traceback-like block."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            first = (record.getMessage().strip().splitlines() or [""])[0]
            stage = "warning" if record.name == "py.warnings" else record.name.split(".")[0]
            log_event(stage, WARNING_SOURCE.sub("", first).strip(), level=record.levelname.lower())
        except Exception:  # a log line must never crash the run
            self.handleError(record)


class JsonLinesStream:
    """Standard error under `--log-format json`: a line that is already a JSON object passes through;
    any other line (a library message, a `print` or rich console that bypassed `log_event`) becomes
    {"time", "stage": "stderr", "message"}, so every line of the stream parses (`jq` reads it)."""

    def __init__(self, stream: TextIO):
        self.stream, self._partial = stream, ""

    def write(self, text: str) -> int:
        self._partial += text.replace("\r", "\n")  # a progress bar redraws with carriage returns
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def _emit(self, line: str) -> None:
        if not line.strip():
            return
        if not _is_json_object(line):
            line = _json_line({"time": round(time.time(), 3), "stage": "stderr", "message": line.strip()})[
                :-1
            ]
        self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()

    def close_line(self) -> None:
        """Emit a last line that has no newline yet (at exit)."""
        line, self._partial = self._partial, ""
        if line.strip():
            try:
                self._emit(line)
                self.flush()
            except ValueError:  # the stream was closed before exit
                pass

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, ... of the real stream
        return getattr(self.stream, name)


def _is_json_object(line: str) -> bool:
    if not line.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def json_stderr() -> None:
    """Route standard error through `JsonLinesStream` (idempotent; the CLI calls it for JSON logs)."""
    if not isinstance(sys.stderr, JsonLinesStream):
        sys.stderr = JsonLinesStream(sys.stderr)
        atexit.register(sys.stderr.close_line)
