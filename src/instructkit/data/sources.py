"""Reading raw rows from local files, directories, saved `datasets` directories and hub ids.

Every row comes with the file it came from and its 1-based row number (the line number for JSONL,
the element index for a JSON array, the data-row index for CSV and Parquet), so a bad row can be
named exactly. Files may be compressed (`.gz`, `.bz2`, `.xz`, `.zst`). In a directory, hidden
entries (`.git/`, `.ipynb_checkpoints/`, dotfiles) are skipped and listed, each real file is read
once (links and hard links to what is read anyway are listed; link loops are never followed twice);
a file of an unknown kind is an error naming it, or, when asked, skipped and listed. Bad bytes
(invalid UTF-8, a lone surrogate escape, a damaged compressed stream) are a bad row naming the
file, the row or line where reading stopped, and the field, never a crash.
Hub ids read as `OWNER/NAME[:CONFIG][@SPLIT]` (default split train); a source that is not on disk and
cannot be a hub id (`hub.path_reason`: `data/x.jsonl`, `runs/a/b`, `./x`) is "no such file or folder".
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import json
import lzma
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import BadRowError, InstructkitError
from ..hub import check_reference, is_local, load_hub_dataset

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
ACCEPTED = f"{', '.join(FILE_SUFFIXES)}, optionally compressed as {', '.join(COMPRESSION_SUFFIXES)}"
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class RawRow:
    file: str
    row: int | None  # None only for an error about a whole file whose rows cannot be counted (Parquet)
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
    """The data files of a file or directory source, sorted; hidden, linked and (if asked) unknown entries listed.

    A file named directly must be of a known kind. Inside a directory, hidden entries are never data
    (a `.ipynb_checkpoints/` copy would train every row twice), and each real file (device and inode,
    links resolved) is read once: a link or hard link to a file or folder read anyway is listed, not
    read again; a link loop is never followed twice. Files of unknown kind stop the run naming
    them, unless `skip_unknown`.
    """
    if path.is_file():
        if file_kind(path) is None:
            raise InstructkitError(f"{path}: unsupported file type (accepted: {ACCEPTED})")
        return SourceFiles([path], [])
    walk = _Walk()
    walk.folder(path)
    walk.follow_links()
    if walk.unknown and not skip_unknown:
        unknown = walk.unknown
        named = ", ".join(str(f) for f in unknown[:10]) + (
            f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        )
        raise InstructkitError(
            f"{path}: files of unknown kind: {named} (accepted: {ACCEPTED}); "
            "remove them, or pass --skip-unknown-files to skip and list them"
        )
    skipped = walk.skipped + [
        {"path": str(f), "reason": f"unknown file kind (accepted: {ACCEPTED})"} for f in walk.unknown
    ]
    if not walk.files:
        raise InstructkitError(f"{path}: no data files found (looked for {ACCEPTED})")
    return SourceFiles(sorted(walk.files.values()), sorted(skipped, key=lambda s: s["path"]))


def _identity(path: Path) -> tuple[int, int]:
    """A real file's or folder's identity: (device, inode) of what `path` resolves to."""
    st = path.stat()
    return st.st_dev, st.st_ino


@dataclass
class _Walk:
    """One directory walk: each real file and folder taken once, links resolved after the real entries."""

    files: dict[tuple[int, int], Path] = field(default_factory=dict)  # identity → the path it is read as
    folders: dict[tuple[int, int], Path] = field(default_factory=dict)
    links: list[Path] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    unknown: list[Path] = field(default_factory=list)

    def folder(self, top: Path) -> None:
        """Take the entries under `top` without following links (they wait for `follow_links`)."""
        for current, dirs, names in os.walk(top):
            self.folders[_identity(Path(current))] = Path(current)
            kept = []
            for name in sorted(dirs):
                entry = Path(current, name)
                if name.startswith("."):
                    self.skip(entry, "hidden folder")
                elif entry.is_symlink():
                    self.links.append(entry)
                else:
                    kept.append(name)
            dirs[:] = kept
            for name in sorted(names):
                entry = Path(current, name)
                if name.startswith("."):
                    self.skip(entry, "hidden file")
                elif entry.is_symlink():
                    self.links.append(entry)
                else:
                    self.file(entry)

    def file(self, entry: Path, target: Path | None = None) -> None:
        """Take one file (reached directly, or through a link to `target`) unless its real file is taken."""
        identity = _identity(entry)
        if identity in self.files:
            first = self.files[identity]
            what = f"link to {target}" if target is not None else f"hard link to {first}"
            self.skip(entry, f"{what}, read as {first}")
        elif file_kind(entry) is None:
            self.unknown.append(entry)
        else:
            self.files[identity] = entry

    def follow_links(self) -> None:
        """Links last, so a target inside the tree is already taken: each is read once, or listed."""
        while self.links:
            link = self.links.pop(0)
            try:
                target = link.resolve(strict=True)
            except (OSError, RuntimeError):  # a dangling link, or links that point at each other
                self.skip(link, f"broken link to {os.readlink(link)}")
                continue
            if target.is_dir():
                identity = _identity(target)
                if identity in self.folders:  # inside the tree, or a folder above it (a loop)
                    self.skip(link, f"link to {target}, read as {self.folders[identity]}")
                else:
                    self.folder(link)
            elif target.is_file():
                self.file(link, target)
            else:
                self.skip(link, f"link to {target}: not a file or folder")

    def skip(self, entry: Path, reason: str) -> None:
        self.skipped.append({"path": str(entry), "reason": reason})


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
    """Split directory sources into their files: ((source, came_from_a_directory) pairs, skipped entries).

    A source that can only be a path and does not exist is refused here, before any source is read.
    """
    units: list[tuple[str, bool]] = []
    skipped: list[dict[str, str]] = []
    for source in sources:
        check_reference(source, "data source", dataset=True)
    for source in sources:
        path = Path(source).expanduser()
        if is_local(source) and path.is_dir() and not is_saved_dataset(path):
            listing = list_source_files(path, skip_unknown)
            units.extend((str(f), True) for f in listing.files)
            skipped.extend(listing.skipped)
        else:  # a local file is named as its rows will name it, so per-file counts line up
            units.append((str(path) if is_local(source) else source, False))
    return units, skipped


PREFIX_BYTES = 1 << 16  # decompressed bytes compared first; whole files only when these agree


def duplicate_contents(files: list[Path]) -> list[list[Path]]:
    """Groups of files (two or more) whose decompressed bytes are equal: the same data under two names.

    `x.jsonl` next to `x.jsonl.bz2` would train every row twice. Distinct files cost one read of
    their first `PREFIX_BYTES`; a file that cannot be read is left to the reader to report.
    """
    groups: dict[tuple, list[Path]] = {}
    for file in files:
        groups.setdefault(_content_digest(file, PREFIX_BYTES), []).append(file)
    same: dict[tuple, list[Path]] = {}
    for key, group in groups.items():
        if key[0] is None or len(group) < 2:
            continue
        for file in group:  # the prefixes agree: compare whole contents
            same.setdefault(key if key[1] else _content_digest(file), []).append(file)
    return [group for key, group in same.items() if key[0] is not None and len(group) > 1]


def _content_digest(file: Path, limit: int | None = None) -> tuple[str | None, bool]:
    """(digest of the first `limit` decompressed bytes (all when None), whether that was the whole file).

    (None, False) when the file cannot be read: the reader reports why, this check has nothing to add.
    """
    digest, size = hashlib.blake2b(digest_size=16), 0
    try:
        with open_binary(file) as fh:
            while limit is None or size < limit:
                chunk = fh.read(1 << 20 if limit is None else limit - size)
                if not chunk:
                    return digest.hexdigest(), True
                digest.update(chunk)
                size += len(chunk)
            return digest.hexdigest(), not fh.read(1)
    except Exception:  # a damaged or unreadable file (any decoder's error): reported when its rows are read
        return None, False


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
        return io.BufferedReader(_Streams(open(file, "rb"), bz2.BZ2Decompressor))
    if suffix == ".xz":
        return io.BufferedReader(_Streams(open(file, "rb"), lzma.LZMADecompressor, padding=b"\0"))
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raise InstructkitError(
                f"{file}: reading .zst files needs the `zstandard` package (pip install zstandard)"
            ) from None
        return io.BufferedReader(zstandard.open(file, "rb"))  # line iteration needs a buffered reader
    return open(file, "rb")


class _Streams(io.RawIOBase):
    """Concatenated bzip2 or xz streams, decoded one after another, as the `bzip2` and `xz` tools read them.

    The standard library's readers stop silently at bytes after a stream that start no valid stream,
    so a damaged second stream (pbzip2 and `xz -T` write many) would lose every row after it without a
    word. Here those bytes raise, naming why; only xz's NUL stream padding is allowed between streams.
    """

    def __init__(self, raw: IO[bytes], factory: Any, padding: bytes = b""):
        self.raw, self.factory, self.padding = raw, factory, padding
        self.decoder = factory()
        self.started = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = len(buffer)
        while True:
            if self.decoder.eof:
                rest = self._after_stream()
                if rest is None:
                    return 0
                self.decoder = self.factory()
                data = self._decode(rest, size, after_stream=True)
            elif self.decoder.needs_input:
                chunk = self.raw.read(1 << 16)
                if not chunk:
                    if not self.started:  # an empty file: no rows, as the standard library reads it
                        return 0
                    raise EOFError("the compressed data ends before its end-of-stream marker")
                data = self._decode(chunk, size)
            else:
                data = self._decode(b"", size)
            self.started = True
            if data:
                buffer[: len(data)] = data
                return len(data)

    def _after_stream(self) -> bytes | None:
        """The bytes after a finished stream, padding skipped; None at the end of the file."""
        rest = self.decoder.unused_data
        while True:
            rest = rest.lstrip(self.padding) if self.padding else rest
            if rest:
                return rest
            rest = self.raw.read(1 << 16)
            if not rest:
                return None

    def _decode(self, data: bytes, size: int, after_stream: bool = False) -> bytes:
        try:
            return self.decoder.decompress(data, size)
        except (OSError, lzma.LZMAError) as exc:
            if after_stream:
                raise OSError(
                    f"the bytes after a complete compressed stream are not a valid stream ({exc})"
                ) from exc
            raise

    def close(self) -> None:
        self.raw.close()
        super().close()


def _bad(file: str, row: int | None, field: str, reason: str) -> RawRow:
    """A row that could not be decoded, located at (file, row) and naming the field."""
    return RawRow(file, row, None, BadRowError(file, row, field, reason))


def _decompress_error(file: Path, row: int, exc: Exception, note: str = "") -> RawRow:
    """A row standing for the unreadable rest of a damaged compressed file (rows before it are kept)."""
    return _bad(str(file), row, "<file>", f"cannot read the rest of the file: {_describe(exc)}{note}")


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _stream_lines(fh: IO[bytes]) -> Iterator[bytes | Exception]:
    """The lines of a (decompressing) stream; a read that fails ends them with its exception.

    Every decoder raises its own type (zlib.error, OSError, EOFError, LZMAError, ZstdError), and all
    mean the same here: the bytes cannot be read past this point, so any exception from a read ends it.
    """
    lines = iter(fh)
    while True:
        try:
            line = next(lines)
        except StopIteration:
            return
        except Exception as exc:  # see the docstring: a damaged stream, whatever the decoder
            yield exc
            return
        yield line


def _iter_jsonl(file: Path) -> Iterator[RawRow]:
    with open_binary(file) as fh:
        for number, raw in enumerate(_stream_lines(fh), start=1):
            if isinstance(raw, Exception):
                yield _decompress_error(file, number, raw)
                return
            if number == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM) :]
            if raw.strip():
                yield _decode_json_line(str(file), number, raw)


def _decode_json_line(file: str, number: int, raw: bytes) -> RawRow:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _bad(file, number, "<row>", f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return _bad(file, number, "<row>", f"invalid JSON: {exc.msg} at column {exc.colno}")
    if not isinstance(record, dict):
        return _bad(file, number, "<row>", f"expected a JSON object, got {type(record).__name__}")
    return _checked(file, number, record, raw)


# A `\ud800`-`\udfff` escape: JSON allows it, and a lone one decodes to a string no UTF-8 writer accepts.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _checked(file: str, number: int, record: dict[str, Any], raw: bytes) -> RawRow:
    """The row, or a bad row naming the field whose text holds a lone surrogate (not valid Unicode)."""
    if _SURROGATE_ESCAPE.search(raw):  # only then can a decoded string hold a surrogate
        where = _invalid_unicode_field(record)
        if where is not None:
            return _bad(file, number, where, "not valid Unicode (a lone surrogate escape such as \\ud800)")
    return RawRow(file, number, record)


def _invalid_unicode_field(value: Any, where: str = "") -> str | None:
    """The path (`messages[1].content`) of the first string or key in a JSON value that is not valid Unicode."""
    if isinstance(value, str):
        return None if _encodes(value) else (where or "<row>")
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else key
            if not _encodes(key):
                return path.encode("utf-8", "backslashreplace").decode("utf-8")
            found = _invalid_unicode_field(item, path)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _invalid_unicode_field(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_bytes(file: Path) -> tuple[bytes, Exception | None]:
    """The (decompressed) bytes of a file without its BOM, and the error that stopped reading, if any."""
    chunks: list[bytes] = []
    damage: Exception | None = None
    with open_binary(file) as fh:
        try:
            while chunk := fh.read1(1 << 16):  # one block at a time: a damaged stream loses little
                chunks.append(chunk)
        except Exception as exc:  # any decoder's error, as in `_stream_lines`
            damage = exc
    data = b"".join(chunks)
    return (data[len(UTF8_BOM) :] if data.startswith(UTF8_BOM) else data), damage


def _iter_json(file: Path) -> Iterator[RawRow]:
    """A JSON array of objects, one object, or JSON Lines under a .json name (as some public datasets ship)."""
    raw, damage = _read_bytes(file)
    if damage is not None:
        yield from _iter_damaged_json(file, raw, damage)
        return
    if not raw.lstrip().startswith(b"["):
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            yield from _iter_json_lines(str(file), raw)
            return
        if not isinstance(data, dict):
            yield _bad(str(file), 1, "<file>", "expected a JSON array of objects or JSON Lines")
            return
        yield _checked(str(file), 1, data, raw)
        return
    yield from _iter_json_array(str(file), raw)


def _iter_damaged_json(file: Path, raw: bytes, damage: Exception) -> Iterator[RawRow]:
    """A .json file whose bytes stop early: JSON Lines before the damage are kept; an array or object is not read."""
    complete = raw[: raw.rfind(b"\n") + 1]
    stop = complete.count(b"\n") + 1
    rows = [] if raw.lstrip().startswith(b"[") else list(_iter_json_lines(str(file), complete))
    if not any(r.error is None for r in rows):  # an array, or one object cut short: nothing to keep
        yield _decompress_error(file, stop, damage, "; no row of this file was read")
        return
    yield from rows
    yield _decompress_error(file, stop, damage)


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
        yield _bad(file, line, "<file>", f"not valid UTF-8 at line {line}")
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        yield _json_syntax_error(file, text, exc)
        return
    surrogates = _SURROGATE_ESCAPE.search(raw) is not None
    for number, record in enumerate(data, start=1):
        if not isinstance(record, dict):
            yield _bad(file, number, "<row>", f"expected an object, got {type(record).__name__}")
        elif surrogates:
            yield _checked(file, number, record, raw)
        else:
            yield RawRow(file, number, record)


def _json_syntax_error(file: str, text: str, exc: json.JSONDecodeError) -> RawRow:
    """Name the line of a JSON syntax error; a trailing comma is reported where the comma is."""
    pos, reason = exc.pos, f"invalid JSON: {exc.msg}"
    before = text[:pos].rstrip()
    if pos < len(text) and text[pos] in "]}" and before.endswith(","):
        pos, reason = len(before) - 1, f"invalid JSON: trailing comma before {text[exc.pos]!r}"
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return _bad(
        file, line, "<file>", f"{reason} (line {line}, column {column}); no row of this file was read"
    )


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
        except Exception as exc:  # a CSV syntax error, or a damaged stream whatever its decoder
            yield _bad(str(file), number + 1, "<file>", f"cannot read CSV: {_describe(exc)}")


def _csv_row(file: str, number: int, header: list[str], values: list[str]) -> RawRow:
    if len(values) != len(header):
        reason = f"expected {len(header)} fields (as in the header), got {len(values)}"
        return _bad(file, number, "<row>", reason)
    for name, value in zip(header, values):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _bad(file, number, name, "not valid UTF-8")
    return RawRow(file, number, dict(zip(header, values)))


def _iter_parquet(file: Path) -> Iterator[RawRow]:
    """Rows of a Parquet file; a file that cannot be read (damaged, or cut short) is one bad row."""
    import pyarrow.parquet as pq

    compressed = file_kind(file)[1] is not None
    with open_binary(file) as fh:
        try:  # pyarrow reports damaged files as ArrowInvalid/OSError; decompressors with their own types
            table = pq.read_table(io.BytesIO(fh.read()) if compressed else fh)
        except Exception as exc:
            yield _bad(
                str(file),
                None,
                "<file>",
                f"cannot read Parquet: {_describe(exc)}; no row of this file was read",
            )
            return
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
    check_reference(source, "data source", dataset=True)  # a path that does not exist, not a hub id
    name, config, split = parse_hub_source(source)
    ds = load_hub_dataset(name, config, split)
    for number, record in enumerate(ds, start=1):
        yield RawRow(source, number, record)
