"""Reading raw rows from local files, directories, saved `datasets` directories and hub ids.

Every row comes with the file it came from and its 1-based row number (the line number for JSONL,
the element index for a JSON array, the data-row index for CSV and Parquet), so a bad row can be
named exactly. Files may be compressed (`.gz`, `.bz2`, `.xz`, `.zst`). In a directory, hidden
entries (`.git/`, `.ipynb_checkpoints/`, dotfiles) are skipped and listed; a file of an unknown kind
is an error naming it, or, when asked, skipped and listed. Hub ids read as
`OWNER/NAME[:CONFIG][@SPLIT]` (default split train).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import BadRowError, InstructkitError
from ..hub import is_local, load_hub_dataset

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
ACCEPTED = f"{', '.join(FILE_SUFFIXES)}, optionally compressed as {', '.join(COMPRESSION_SUFFIXES)}"
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class RawRow:
    file: str
    row: int
    record: dict[str, Any] | None  # None when the row could not be decoded (see `error`)
    error: BadRowError | None = None


@dataclass
class SourceFiles:
    """The data files of a source, plus every directory entry left out and why ({path, reason})."""

    files: list[Path]
    skipped: list[dict[str, str]]


def is_saved_dataset(path: Path) -> bool:
    """A directory written by `Dataset.save_to_disk` (e.g. by `instructkit data build`)."""
    return path.is_dir() and (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def file_kind(path: Path) -> tuple[str, str | None] | None:
    """(data suffix, compression suffix or None) of a file name, or None when it is not a data file."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES else None
    if suffixes and suffixes[-1] in FILE_SUFFIXES:
        return suffixes[-1], compression
    return None


def list_source_files(path: Path, skip_unknown: bool = False) -> SourceFiles:
    """The data files of a file or directory source, sorted; hidden and (if asked) unknown entries listed.

    A file named directly must be of a known kind. Inside a directory, hidden entries are never data
    (a `.ipynb_checkpoints/` copy would train every row twice); files of unknown kind stop the run
    naming them, unless `skip_unknown`.
    """
    if path.is_file():
        if file_kind(path) is None:
            raise InstructkitError(f"{path}: unsupported file type (accepted: {ACCEPTED})")
        return SourceFiles([path], [])
    files: list[Path] = []
    skipped: list[dict[str, str]] = []
    unknown: list[Path] = []
    for top, dirs, names in os.walk(path, followlinks=True):
        for name in sorted(d for d in dirs if d.startswith(".")):
            skipped.append({"path": str(Path(top, name)), "reason": "hidden folder"})
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            file = Path(top, name)
            if name.startswith("."):
                skipped.append({"path": str(file), "reason": "hidden file"})
            elif file_kind(file) is not None:
                files.append(file)
            else:
                unknown.append(file)
    if unknown and not skip_unknown:
        named = ", ".join(str(f) for f in unknown[:10]) + (
            f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        )
        raise InstructkitError(
            f"{path}: files of unknown kind: {named} (accepted: {ACCEPTED}); "
            "remove them, or pass --skip-unknown-files to skip and list them"
        )
    skipped.extend({"path": str(f), "reason": f"unknown file kind (accepted: {ACCEPTED})"} for f in unknown)
    if not files:
        raise InstructkitError(f"{path}: no data files found (looked for {ACCEPTED})")
    return SourceFiles(sorted(files), sorted(skipped, key=lambda s: s["path"]))


def iter_source_rows(source: str, skip_unknown: bool = False) -> Iterator[RawRow]:
    """Yield every row of a source; undecodable rows come with an `error` instead of a record."""
    if is_local(source):
        path = Path(source).expanduser()
        if is_saved_dataset(path):
            yield from _iter_saved_dataset(path)
            return
        for file in list_source_files(path, skip_unknown).files:
            yield from iter_file_rows(file)
        return
    yield from _iter_hub(source)


def expand_sources(
    sources: list[str], skip_unknown: bool = False
) -> tuple[list[tuple[str, bool]], list[dict[str, str]]]:
    """Split directory sources into their files: ((source, came_from_a_directory) pairs, skipped entries)."""
    units: list[tuple[str, bool]] = []
    skipped: list[dict[str, str]] = []
    for source in sources:
        path = Path(source).expanduser()
        if is_local(source) and path.is_dir() and not is_saved_dataset(path):
            listing = list_source_files(path, skip_unknown)
            units.extend((str(f), True) for f in listing.files)
            skipped.extend(listing.skipped)
        else:  # a local file is named as its rows will name it, so per-file counts line up
            units.append((str(path) if is_local(source) else source, False))
    return units, skipped


def iter_file_rows(file: Path) -> Iterator[RawRow]:
    """Rows of one local file, by suffix (decompressing `.gz`/`.bz2`/`.xz`/`.zst` on the fly)."""
    kind = file_kind(file)
    if kind is None:
        raise InstructkitError(f"{file}: unsupported file type (accepted: {ACCEPTED})")
    readers = {".jsonl": _iter_jsonl, ".json": _iter_json, ".parquet": _iter_parquet, ".csv": _iter_csv}
    yield from readers[kind[0]](file)


def open_binary(file: Path) -> IO[bytes]:
    """Open a file for reading bytes, decompressing by its last suffix."""
    suffix = file.suffix.lower()
    if suffix == ".gz":
        return gzip.open(file, "rb")
    if suffix == ".bz2":
        return bz2.open(file, "rb")
    if suffix == ".xz":
        return lzma.open(file, "rb")
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raise InstructkitError(
                f"{file}: reading .zst files needs the `zstandard` package (pip install zstandard)"
            ) from None
        return io.BufferedReader(zstandard.open(file, "rb"))  # line iteration needs a buffered reader
    return open(file, "rb")


def _decompress_error(file: Path, row: int, exc: Exception) -> RawRow:
    """A row standing for the unreadable rest of a damaged compressed file (rows before it are kept)."""
    error = BadRowError(str(file), row, "<file>", f"cannot read the rest of the file: {exc}")
    return RawRow(str(file), row, None, error)


# Errors a damaged compressed stream raises while being read.
STREAM_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, lzma.LZMAError)


def _iter_jsonl(file: Path) -> Iterator[RawRow]:
    number = 0
    with open_binary(file) as fh:
        try:
            for number, raw in enumerate(fh, start=1):
                if number == 1 and raw.startswith(UTF8_BOM):
                    raw = raw[len(UTF8_BOM) :]
                if raw.strip():
                    yield _decode_json_line(str(file), number, raw)
        except STREAM_ERRORS as exc:
            yield _decompress_error(file, number + 1, exc)


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


def _read_bytes(file: Path) -> bytes:
    with open_binary(file) as fh:
        try:
            data = fh.read()
        except STREAM_ERRORS as exc:
            raise BadRowError(str(file), None, "<file>", f"cannot decompress: {exc}") from exc
    return data[len(UTF8_BOM) :] if data.startswith(UTF8_BOM) else data


def _iter_json(file: Path) -> Iterator[RawRow]:
    """A JSON array of objects, one object, or JSON Lines under a .json name (as some public datasets ship)."""
    raw = _read_bytes(file)
    if not raw.lstrip().startswith(b"["):
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            yield from _iter_json_lines(str(file), raw)
            return
        if not isinstance(data, dict):
            raise BadRowError(str(file), None, "<file>", "expected a JSON array of objects or JSON Lines")
        yield RawRow(str(file), 1, data)
        return
    yield from _iter_json_array(str(file), raw)


def _iter_json_lines(file: str, raw: bytes) -> Iterator[RawRow]:
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if line.strip():
            yield _decode_json_line(file, number, line)


def _iter_json_array(file: str, raw: bytes) -> Iterator[RawRow]:
    """Elements of a JSON array; a file that does not parse is one bad row reported at its real line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        yield RawRow(file, line, None, BadRowError(file, line, "<file>", f"not valid UTF-8 at line {line}"))
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        yield _json_syntax_error(file, text, exc)
        return
    for number, record in enumerate(data, start=1):
        if isinstance(record, dict):
            yield RawRow(file, number, record)
        else:
            error = BadRowError(file, number, "<row>", f"expected an object, got {type(record).__name__}")
            yield RawRow(file, number, None, error)


def _json_syntax_error(file: str, text: str, exc: json.JSONDecodeError) -> RawRow:
    """Name the line of a JSON syntax error; a trailing comma is reported where the comma is."""
    pos, reason = exc.pos, f"invalid JSON: {exc.msg}"
    before = text[:pos].rstrip()
    if pos < len(text) and text[pos] in "]}" and before.endswith(","):
        pos, reason = len(before) - 1, f"invalid JSON: trailing comma before {text[exc.pos]!r}"
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    error = BadRowError(
        file, line, "<file>", f"{reason} (line {line}, column {column}); no row of this file was read"
    )
    return RawRow(file, line, None, error)


def _iter_csv(file: Path) -> Iterator[RawRow]:
    """CSV rows as strings, exactly as written (no type inference: `007` stays `007`); header row first."""
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # long texts are normal in instruction data
    with io.TextIOWrapper(
        open_binary(file), encoding="utf-8-sig", errors="surrogateescape", newline=""
    ) as fh:
        reader = csv.reader(fh)
        number = 0
        try:
            header = next(reader, None)
            if header is None:
                return
            for values in reader:
                if values:
                    number += 1
                    yield _csv_row(str(file), number, header, values)
        except (csv.Error, *STREAM_ERRORS) as exc:
            yield RawRow(
                str(file),
                number + 1,
                None,
                BadRowError(str(file), number + 1, "<file>", f"cannot read CSV: {exc}"),
            )


def _csv_row(file: str, number: int, header: list[str], values: list[str]) -> RawRow:
    if len(values) != len(header):
        reason = f"expected {len(header)} fields (as in the header), got {len(values)}"
        return RawRow(file, number, None, BadRowError(file, number, "<row>", reason))
    for name, value in zip(header, values):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return RawRow(file, number, None, BadRowError(file, number, name, "not valid UTF-8"))
    return RawRow(file, number, dict(zip(header, values)))


def _iter_parquet(file: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    compressed = file_kind(file)[1] is not None
    with open_binary(file) as fh:
        try:  # pyarrow reports damaged files as ArrowInvalid; decompressors as OSError/EOFError/LZMAError
            table = pq.read_table(io.BytesIO(fh.read()) if compressed else fh)
        except Exception as exc:
            raise BadRowError(str(file), None, "<file>", f"cannot read Parquet: {exc}") from exc
    yield from _iter_arrow(file, table)


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
