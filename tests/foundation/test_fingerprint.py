"""Content fingerprints: equal bytes give equal digests, any change gives a new one, the memo is honest."""

from __future__ import annotations

import os

import pytest

from instructkit import fingerprint


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTKIT_CACHE", str(tmp_path / "cache"))


def test_file_digest_follows_content_not_path(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"weights-1")
    b.write_bytes(b"weights-1")
    assert fingerprint.file_digest(a) == fingerprint.file_digest(b)
    b.write_bytes(b"weights-2")
    assert fingerprint.file_digest(a) != fingerprint.file_digest(b)


def test_memo_is_invalidated_by_a_same_size_rewrite(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"A" * 64)
    first = fingerprint.file_digest(path)
    stat = path.stat()
    path.write_bytes(b"B" * 64)  # same size; mtime moves
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert fingerprint.file_digest(path) != first


def test_memo_serves_unchanged_files_without_reading_them(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 1000)
    first = fingerprint.file_digest(path)
    memo = (tmp_path / "cache" / "file_digests.jsonl").read_text()
    assert first in memo
    # The memo answers for an unchanged (path, size, mtime): prove it by planting a marker digest.
    planted = memo.replace(first, "f" * 64)
    (tmp_path / "cache" / "file_digests.jsonl").write_text(planted)
    fingerprint._MEMO_SOURCE = None  # as a new process would: read the memo from disk
    assert fingerprint.file_digest(path) == "f" * 64


def test_a_folder_digest_writes_the_memo_once(tmp_path):
    root = tmp_path / "shards"
    root.mkdir()
    for k in range(50):
        (root / f"{k}.jsonl").write_text(str(k))
    fingerprint.path_digest(root)
    memo = (tmp_path / "cache" / "file_digests.jsonl").read_text()
    assert all(str((root / f"{k}.jsonl").resolve()) in memo for k in range(50))


def test_path_digest_covers_names_and_contents_of_a_folder(tmp_path):
    root = tmp_path / "model"
    root.mkdir()
    (root / "config.json").write_text("{}")
    (root / "weights.bin").write_bytes(b"1")
    base = fingerprint.path_digest(root)
    (root / "weights.bin").write_bytes(b"2")
    changed = fingerprint.path_digest(root)
    assert changed != base
    (root / "weights.bin").rename(root / "other.bin")
    assert fingerprint.path_digest(root) != changed
    (root / "logs").mkdir()
    (root / "logs" / "x.txt").write_text("noise")
    renamed = fingerprint.path_digest(root, exclude=["logs"])
    (root / "logs" / "x.txt").write_text("more noise")
    assert fingerprint.path_digest(root, exclude=["logs"]) == renamed


def test_text_digest_is_unambiguous():
    assert fingerprint.text_digest("ab", "c") != fingerprint.text_digest("a", "bc")


def test_a_same_size_rewrite_that_restores_the_mtime_is_seen(tmp_path):
    """`cp -p` / `rsync -t` keep size and mtime; the digest must still follow the bytes."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"A" * 64)
    first = fingerprint.file_digest(path)
    stat = path.stat()
    path.write_bytes(b"B" * 64)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime restored; ctime moves
    assert fingerprint.file_digest(path) != first


def test_the_memo_log_is_compacted_to_existing_files_and_skips_a_torn_line(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint, "COMPACT_AFTER", 10)
    files = [tmp_path / f"{k}.bin" for k in range(12)]
    for k, path in enumerate(files):
        path.write_bytes(bytes([k]))
        fingerprint.file_digest(path)
    log = tmp_path / "cache" / "file_digests.jsonl"
    assert len(log.read_text().splitlines()) == 12  # one appended line per new digest
    for path in files[2:]:
        path.unlink()
    with log.open("a") as handle:
        handle.write('{"path": "/torn", "sta')  # a write cut short
    fingerprint._MEMO_SOURCE = None  # a new process reads (and compacts) the log
    assert fingerprint.file_digest(files[0]) == fingerprint.sha256_hex(bytes([0]))
    kept = log.read_text()
    assert len(kept.splitlines()) == 2
    assert all(str(path.resolve()) in kept for path in files[:2])
