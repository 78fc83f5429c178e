"""Reading raw rows from local files, directories, saved `datasets` directories and hub ids.

Every row comes with the file it came from and its 1-based row number (the line number for JSONL),
so a bad row can be named exactly. Hub ids read as `OWNER/NAME[:CONFIG][@SPLIT]` (default split train).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadRowError, InstructkitError
from ..hub import is_local, load_hub_dataset

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass(frozen=True)
class RawRow:
    file: str
    row: int
    record: dict[str, Any] | None  # None when the row could not be decoded (see `error`)
    error: BadRowError | None = None


def is_saved_dataset(path: Path) -> bool:
    """A directory written by `Dataset.save_to_disk` (e.g. by `instructkit data build`)."""
    return path.is_dir() and (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def source_files(path: Path) -> list[Path]:
    """The data files of a file or directory source, sorted for a stable order."""
    if path.is_file():
        if path.suffix.lower() not in FILE_SUFFIXES:
            raise InstructkitError(f"{path}: unsupported file type (accepted: {', '.join(FILE_SUFFIXES)})")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FILE_SUFFIXES)
    if not files:
        raise InstructkitError(f"{path}: no data files found (looked for {', '.join(FILE_SUFFIXES)})")
    return files


def iter_source_rows(source: str) -> Iterator[RawRow]:
    """Yield every row of a source; undecodable rows come with an `error` instead of a record."""
    if is_local(source):
        path = Path(source).expanduser()
        if is_saved_dataset(path):
            yield from _iter_saved_dataset(path)
            return
        for file in source_files(path):
            yield from iter_file_rows(file)
        return
    yield from _iter_hub(source)


def expand_sources(sources: list[str]) -> list[tuple[str, bool]]:
    """Split directory sources into their files: (source, came_from_a_directory) pairs."""
    units: list[tuple[str, bool]] = []
    for source in sources:
        path = Path(source).expanduser()
        if is_local(source) and path.is_dir() and not is_saved_dataset(path):
            units.extend((str(f), True) for f in source_files(path))
        else:
            units.append((source, False))
    return units


def iter_file_rows(file: Path) -> Iterator[RawRow]:
    """Rows of one local file, by suffix."""
    suffix = file.suffix.lower()
    if suffix == ".jsonl":
        yield from _iter_jsonl(file)
    elif suffix == ".json":
        yield from _iter_json(file)
    elif suffix == ".parquet":
        yield from _iter_arrow(file, _read_parquet(file))
    elif suffix == ".csv":
        yield from _iter_arrow(file, _read_csv(file))


def _iter_jsonl(file: Path) -> Iterator[RawRow]:
    with open(file, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            yield _decode_json_line(str(file), number, raw)


def _decode_json_line(file: str, number: int, raw: bytes) -> RawRow:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RawRow(
            file,
            number,
            None,
            BadRowError(file, number, "<row>", f"not valid UTF-8 ({exc.reason} at byte {exc.start})"),
        )
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return RawRow(
            file,
            number,
            None,
            BadRowError(file, number, "<row>", f"invalid JSON: {exc.msg} at column {exc.colno}"),
        )
    if not isinstance(record, dict):
        return RawRow(
            file,
            number,
            None,
            BadRowError(file, number, "<row>", f"expected a JSON object, got {type(record).__name__}"),
        )
    return RawRow(file, number, record)


def _iter_json(file: Path) -> Iterator[RawRow]:
    """A JSON array of objects, or JSON Lines under a .json name (as some public datasets ship)."""
    raw = file.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        yield from _iter_jsonl(file)
        return
    if isinstance(data, dict):
        yield _decode_json_line(str(file), 1, raw)
        return
    if not isinstance(data, list):
        raise BadRowError(str(file), None, "<file>", "expected a JSON array of objects or JSON Lines")
    for number, record in enumerate(data, start=1):
        if isinstance(record, dict):
            yield RawRow(str(file), number, record)
        else:
            yield RawRow(
                str(file),
                number,
                None,
                BadRowError(str(file), number, "<row>", f"expected an object, got {type(record).__name__}"),
            )


def _read_parquet(file: Path):
    import pyarrow.parquet as pq

    return pq.read_table(file)


def _read_csv(file: Path):
    import pyarrow.csv as pacsv

    try:
        return pacsv.read_csv(file, convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    except Exception as exc:  # pyarrow reports encoding and shape problems as ArrowInvalid
        raise BadRowError(str(file), None, "<file>", f"cannot read CSV: {exc}") from exc


def _iter_arrow(file: Path, table) -> Iterator[RawRow]:
    number = 0
    for batch in table.to_batches(max_chunksize=4096):
        for record in batch.to_pylist():
            number += 1
            yield RawRow(str(file), number, record)


def _iter_saved_dataset(path: Path) -> Iterator[RawRow]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    for number, record in enumerate(ds, start=1):
        yield RawRow(str(path), number, record)


def parse_hub_source(source: str) -> tuple[str, str | None, str]:
    """`owner/name[:config][@split]` → (name, config, split)."""
    name, _, split = source.partition("@")
    name, _, config = name.partition(":")
    return name, config or None, split or "train"


def _iter_hub(source: str) -> Iterator[RawRow]:
    name, config, split = parse_hub_source(source)
    if not name or name.startswith((".", "/", "~")):
        raise InstructkitError(f"{source}: no such file or directory")
    ds = load_hub_dataset(name, config, split)
    for number, record in enumerate(ds, start=1):
        yield RawRow(source, number, record)
