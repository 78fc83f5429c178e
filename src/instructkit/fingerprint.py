"""Content fingerprints of files and folders, so caches key on what data *is*, not where it lives.

A file's sha256 is computed once and remembered in a small JSON memo keyed by (resolved path,
size, mtime, ctime, inode): re-fingerprinting an unchanged 16 GB checkpoint costs a `stat`, and any write
that changes size or mtime forces a fresh digest. The memo lives in the user cache folder
(`$INSTRUCTKIT_CACHE`, else `~/.cache/instructkit`), never beside read-only inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

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
    return cache_dir() / "file_digests.json"


_MEMO: dict[str, dict] = {}
_MEMO_SOURCE: Path | None = None  # the memo file _MEMO was read from
_DIRTY = False  # entries computed but not yet saved


def _load_memo() -> dict[str, dict]:
    """The memo, read from disk once per process and cache folder (entries merge on save)."""
    global _MEMO, _MEMO_SOURCE
    if _memo_path() != _MEMO_SOURCE:
        _MEMO, _MEMO_SOURCE = _read_memo_file(), _memo_path()
    return _MEMO


def _read_memo_file() -> dict[str, dict]:
    try:
        return json.loads(_memo_path().read_text())
    except (OSError, ValueError):
        return {}


def _save_memo(memo: dict[str, dict]) -> None:
    global _DIRTY
    _DIRTY = False
    path = _memo_path()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        merged = {**_read_memo_file(), **memo}
        tmp.write_text(json.dumps(merged))
        os.replace(tmp, path)
    except OSError:  # a read-only cache folder costs speed, never correctness
        tmp.unlink(missing_ok=True)


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
    with _LOCK:
        memo = _load_memo()
        memo[str(resolved)] = {"stat": _stat_key(stat), "sha256": digest}
        if save:
            _save_memo(memo)
        else:
            global _DIRTY
            _DIRTY = True
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
    if _DIRTY:  # one write for the whole folder, not one per file
        with _LOCK:
            _save_memo(_load_memo())
    return digest


def text_digest(*parts: str) -> str:
    """sha256 of strings joined unambiguously (for templates, configs and other in-memory inputs)."""
    encoded = (part.encode() for part in parts)
    return sha256_hex(len(e).to_bytes(8, "little") + e for e in encoded)
