"""Content fingerprints of files and folders, so caches key on what data *is*, not where it lives.

A file's sha256 is computed once and remembered in a memo keyed by (resolved path, size, mtime, ctime,
inode): re-fingerprinting an unchanged 16 GB checkpoint costs a `stat`, and any write that changes size
or mtime forces a fresh digest. The memo is an append-only JSON-lines log (a new digest costs one short
append, not a rewrite of every entry; the last line for a path wins, a torn line is skipped), compacted
to the entries of files that still exist when it has grown well past them. It lives in the user cache
folder (`$INSTRUCTKIT_CACHE`, else `~/.cache/instructkit`), never beside read-only inputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .atomic import write_atomic
from .jsonl import text_lines

_CHUNK = 1 << 22
_LOCK = threading.Lock()


def cache_dir() -> Path:
    """The toolkit's user cache folder (created on demand)."""
    root = os.environ.get("INSTRUCTKIT_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "instructkit"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _memo_path() -> Path:
    return cache_dir() / "file_digests.jsonl"


# From this many lines on, the log is rewritten with only live entries when it holds twice as many lines.
COMPACT_AFTER = 5000

_MEMO: dict[str, dict] = {}
_MEMO_SOURCE: Path | None = None  # the memo file _MEMO was read from
_UNSAVED: dict[str, dict] = {}  # entries computed but not yet appended


def _load_memo() -> dict[str, dict]:
    """The memo, read from disk once per process and cache folder (compacted there when overgrown)."""
    global _MEMO, _MEMO_SOURCE
    if _memo_path() != _MEMO_SOURCE:
        _MEMO, lines = _read_memo_file()
        _MEMO_SOURCE = _memo_path()
        if lines >= COMPACT_AFTER:
            _compact(_MEMO, lines)
    return _MEMO


def _read_memo_file() -> tuple[dict[str, dict], int]:
    """Entries by path (the last line for a path wins) and the number of lines read."""
    memo: dict[str, dict] = {}
    try:
        lines = [line for line in text_lines(_memo_path()) if line]
    except (OSError, UnicodeDecodeError):
        return memo, 0
    for line in lines:
        try:
            entry = json.loads(line)
            memo[entry["path"]] = {"stat": entry["stat"], "sha256": entry["sha256"]}
        except (ValueError, KeyError, TypeError):  # a torn or foreign line: that digest is recomputed
            continue
    return memo, len(lines)


def _memo_line(path: str, entry: dict) -> str:
    return json.dumps({"path": path, **entry}) + "\n"


def _compact(memo: dict[str, dict], lines: int) -> None:
    """Forget entries of files that no longer exist; rewrite the log with the rest when it holds over
    twice as many lines (atomically: a reader sees the old log or the new one)."""
    live = {path: entry for path, entry in memo.items() if os.path.exists(path)}
    memo.clear()
    memo.update(live)
    if lines <= 2 * len(live):
        return
    with contextlib.suppress(OSError):  # a read-only cache folder costs speed, never correctness
        write_atomic(_memo_path(), "".join(_memo_line(p, e) for p, e in live.items()))


def _save_memo() -> None:
    """Append the unsaved entries in one write."""
    if not _UNSAVED:
        return
    text = "".join(_memo_line(p, e) for p, e in _UNSAVED.items())
    _UNSAVED.clear()
    with contextlib.suppress(OSError), open(_memo_path(), "a", encoding="utf-8") as log:
        log.write(text)  # a read-only cache folder costs speed, never correctness


def sha256_hex(data: str | bytes | Iterable[bytes]) -> str:
    """Hex sha256 of text (UTF-8), bytes, or byte chunks taken in order: the toolkit's one sha256."""
    digest = hashlib.sha256()
    if isinstance(data, str):
        data = data.encode()
    for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
        digest.update(chunk)
    return digest.hexdigest()


def file_chunks(path: str | Path, size: int = _CHUNK) -> Iterator[bytes]:
    """A file's bytes in blocks of `size`, so a large file is hashed without reading it whole."""
    with open(path, "rb") as handle:
        while chunk := handle.read(size):
            yield chunk


def _cached_digest(resolved: Path, stat: os.stat_result) -> str | None:
    entry = _load_memo().get(str(resolved))
    if entry and entry.get("stat") == _stat_key(stat):
        return entry["sha256"]
    return None


def _stat_key(stat: os.stat_result) -> list[int]:
    """What must be unchanged for a remembered digest to hold: size, mtime, ctime and inode.

    ctime catches a same-size rewrite that restored the mtime (`cp -p`, `rsync -t`); the inode a
    file replaced by another one.
    """
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def file_digest(path: str | Path, save: bool = True) -> str:
    """sha256 of a file's bytes, memoized by (resolved path, size, mtime, ctime, inode)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    with _LOCK:
        cached = _cached_digest(resolved, stat)
    if cached is not None:
        return cached
    digest = sha256_hex(file_chunks(resolved))
    entry = {"stat": _stat_key(stat), "sha256": digest}
    with _LOCK:
        _load_memo()[str(resolved)] = _UNSAVED[str(resolved)] = entry
        if save:
            _save_memo()
    return digest


def _files_under(root: Path) -> list[Path]:
    """Every regular file under a folder, in a stable order (hidden ones included: they may be data)."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def path_digest(
    path: str | Path, exclude: Iterable[str] = (), keep: Callable[[str], bool] | None = None
) -> str:
    """Digest of a file, or of a folder's relative file names and their contents.

    `exclude` lists relative names (files or folders) left out, e.g. a cache the folder holds;
    `keep`, when given, decides for each relative file name whether it counts.
    """
    root = Path(path)
    if root.is_file():
        return file_digest(root)
    skip = set(exclude)

    def counted(relative: str) -> bool:
        excluded = relative in skip or relative.split("/", 1)[0] in skip
        return not excluded and (keep is None or keep(relative))

    files = [(file, file.relative_to(root).as_posix()) for file in _files_under(root)]
    digest = sha256_hex(
        relative.encode() + b"\0" + file_digest(file, save=False).encode() + b"\n"
        for file, relative in files
        if counted(relative)
    )
    with _LOCK:  # one write for the whole folder, not one per file
        _save_memo()
    return digest


def text_digest(*parts: str) -> str:
    """sha256 of strings joined unambiguously (for templates, configs and other in-memory inputs)."""
    encoded = (part.encode() for part in parts)
    return sha256_hex(len(e).to_bytes(8, "little") + e for e in encoded)
