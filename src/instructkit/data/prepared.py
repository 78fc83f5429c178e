"""The prepared-dataset folder: the one format `data prepare` and `synth train-data` write and `train` reads.

    <out>/                 a `datasets` save_to_disk folder (input_ids, labels[, position_ids, seq_lens]);
                           a label of IGNORE_INDEX (-100) is not trained
    <out>/prepare.json     the settings it was made with, `packed`, `kind: preference` for pairs
                           (rows add seq_lens, pair_ids, sides), and the tokenizer's identity
                           (`tokenizer_identity`, versioned: every part that changes the ids a text
                           gets; `train` checks it against tokenizer/ and the model, models/identity.py)
    <out>/stats.json       counts: rows read / kept / rejected / dropped per file, tokens, packing
    <out>/rejects.jsonl    the rejected rows with file, row, field and reason (when any)
    <out>/tokenizer/       the tokenizer (and chat template) the labels were computed with

Written atomically: a reader sees the previous folder or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_dir
from ..errors import InstructkitError

SETTINGS_FILE = "prepare.json"
STATS_FILE = "stats.json"
REJECTS_FILE = "rejects.jsonl"
TOKENIZER_DIR = "tokenizer"
IGNORE_INDEX = -100  # a label that is not trained (the value transformers' loss ignores)


def tokenized_row_features() -> Any:
    """The columns a tokenize map emits per row before packing (ids, labels, status, reason, source,
    row): one schema for the chat, text and encoder-decoder paths."""
    import datasets

    ints = datasets.List(datasets.Value("int32"))
    text = datasets.Value("string")
    return datasets.Features(
        {
            "input_ids": ints,
            "labels": ints,
            "status": text,
            "reason": text,
            "source": text,
            "row_id": datasets.Value("int64"),
        }
    )


MAP_BATCH = 256  # rows per `ds.map` batch


def map_workers(rows: int, num_proc: int) -> int | None:
    """Processes worth starting for `rows` rows (`None`: this one): never more than there are batches,
    since a worker costs seconds to start and the output does not depend on how many run."""
    workers = min(num_proc, -(-rows // MAP_BATCH))
    return workers if workers > 1 else None


@contextmanager
def same_environ() -> Iterator[None]:
    """Put `os.environ` back as the same object after a `datasets.map` with `num_proc`: datasets swaps in
    a deep copy (datasets 4, arrow_dataset.py), so whoever holds the original (pytest's monkeypatch,
    a caller's reference) restores or reads a mapping the process no longer uses."""
    environ = os.environ
    try:
        yield
    finally:
        if os.environ is not environ:
            environ.update(os.environ)
            for key in set(environ) - set(os.environ):
                del environ[key]
            os.environ = environ  # noqa: B003 - the same object back, not a new environment


def map_tokenize(
    ds: Any, fn: Callable[[dict], dict], features: Any, desc: str, num_proc: int, *salt: str
) -> Any:
    """`ds.map(fn)` in batches of 256 (on `num_proc` processes) into `features`, replacing every column.

    Never cached, so datasets need not hash `fn` (it holds a tokenizer, which datasets cannot hash and
    warns about on every run): the fingerprint is a digest of `ds`'s and the `salt` strings.
    """
    from ..fingerprint import text_digest

    with same_environ():
        return ds.map(
            fn,
            batched=True,
            batch_size=MAP_BATCH,
            num_proc=map_workers(len(ds), num_proc),
            remove_columns=ds.column_names,
            features=features,
            desc=desc,
            load_from_cache_file=False,
            new_fingerprint=text_digest(ds._fingerprint, *salt)[:32],
        )


@dataclass
class PreparedData:
    """A prepared folder, read: the dataset, its settings and stats, and where its tokenizer is."""

    dataset: Any
    meta: dict
    stats: dict
    tokenizer_dir: Path | None
    packed: bool
    kind: str = "sft"  # "preference": rows of whole chosen/rejected pairs (data/preference_rows.py)


def write_prepared(
    out: str | Path,
    rows: Any,
    tokenizer: Any,
    settings: dict[str, Any],
    stats: dict[str, Any],
    write_rejects: Callable[[Path], Path | None] | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write the whole folder atomically; `settings` gains the tokenizer identity, `stats` the rejects path."""
    from ..models.identity import IDENTITY_KEY, tokenizer_identity

    out = Path(out)
    with atomic_dir(out) as tmp:
        rows.save_to_disk(str(tmp))
        tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        meta = {**settings, IDENTITY_KEY: tokenizer_identity(tokenizer)}
        (tmp / SETTINGS_FILE).write_text(json.dumps(meta, indent=2, default=str))
        rejects_path = write_rejects(tmp / REJECTS_FILE) if write_rejects else None
        stats["rejects_file"] = str(out / REJECTS_FILE) if rejects_path else None
        (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2))
        if extra is not None:
            extra(tmp)
    return out


def read_prepared(path: str | Path) -> PreparedData:
    """Load a prepared folder, checking the columns training needs."""
    import datasets

    path = Path(path)
    if not path.is_dir():
        raise InstructkitError(f"{path}: no such data directory (run `instructkit data prepare` first)")
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError/ValueError for non-dataset folders
        raise InstructkitError(f"{path}: not a prepared dataset ({exc})") from exc
    meta = _json(path / SETTINGS_FILE)
    stats = _json(path / STATS_FILE)
    packed = bool(meta.get("packed", "position_ids" in ds.column_names))
    kind = meta.get("kind", "sft")
    needed = {"input_ids", "labels"} | ({"position_ids"} if packed else set())
    if kind == "preference":
        needed |= {"position_ids", "seq_lens", "pair_ids", "sides"}
    missing = needed - set(ds.column_names)
    if missing:
        raise InstructkitError(f"{path}: dataset lacks column(s) {', '.join(sorted(missing))}")
    tok = path / TOKENIZER_DIR
    return PreparedData(ds, meta, stats, tok if tok.is_dir() else None, packed, kind)


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}
