"""Atomic writes: a reader (or a rerun after a crash) sees the old result or the new one, never half.

Everything the toolkit writes as a unit (a prepared dataset folder, a corpus, a converted model, a
checkpoint file, a synthesis shard) goes through these two helpers.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `out`; on success it replaces `out` whole, on error it goes."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; when the block ends it is fsynced and renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    try:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through `atomic_file`: a reader sees the old file or the new one, never half."""
    with atomic_file(path) as handle:
        handle.write(text)
    return Path(path)
