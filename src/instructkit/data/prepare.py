"""`instructkit data prepare`: sources → conversations → tokens with exact masks → (packed) rows on disk.

A linear sequence of named steps (read, convert, tokenize + mask, length policy, pack, save), each
counted in `stats.json`, so nothing is dropped silently. Output is a `datasets` directory that
`instructkit train` reads, plus `prepare.json` (settings), `stats.json` and `tokenizer/`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..atomic import atomic_dir
from ..errors import BadRowError, InstructkitError
from ..hub import is_local
from ..progress import log_event
from .conversation import CONVERSATION_FEATURES, ConversationError
from .converters import INPUT_FORMATS, PREFERENCE_FORMATS, detect_input_format, to_conversations
from .packing import pack_seq2seq_table, pack_table
from .preference import PREFERENCE_FEATURES, to_preference
from .preference_rows import pair_rows, tokenize_pairs
from .prepare_config import Overlong, PrepareConfig, PrepareSettings
from .prepared import IGNORE_INDEX, map_tokenize, tokenized_row_features, write_prepared
from .rejects import RejectLog
from .seq2seq import SEQ2SEQ, check_seq2seq_settings, tokenize_seq2seq
from .sources import duplicate_contents, expand_sources, iter_source_rows
from .tokenize import ChatTokenizer, split_row_error

KEPT_STATUSES = ["ok", "truncated", "split", "split_piece"]
TEXT_FEATURES = datasets.Features(
    {"text": datasets.Value("string"), "source": datasets.Value("string"), "row_id": datasets.Value("int64")}
)


DETECT_ROWS = 100  # rows that vote on a file's format, so one odd first row cannot decide it


def read_examples(
    sources: list[str],
    fmt: str | None,
    rejects: RejectLog,
    skipped_files: list[dict[str, str]] | None = None,
    skip_unknown_files: bool = False,
    file_formats: dict[str, str] | None = None,
    duplicate_files: list[list[str]] | None = None,
) -> tuple[datasets.Dataset, str | None, dict[str, int]]:
    """Read every source row into conversations (or raw text rows).

    Returns (dataset, format, rows read per input file). Hidden entries of a directory, links to
    files read anyway and files of unknown kind (with `skip_unknown_files`) are listed in
    `skipped_files`. A file whose rows fit no format (e.g. a metadata JSON next to the data) stops
    the run, or with `--on-error skip` is listed there too: its rows are never silently absent.
    `file_formats` receives each read file's own format (the returned one is the first; a mix is
    recorded per file). `duplicate_files` receives each group of files holding the same data
    (all are read; each group is logged as a warning). The dataset's `source`/`row_id` are always
    the input file and row, never the record's own fields.
    """
    units, skipped = expand_sources(sources, skip_unknown_files)
    if skipped_files is not None:
        skipped_files.extend(skipped)
    records: list[dict[str, Any]] = []
    chosen: str | None = fmt
    rows_read: dict[str, int] = {}
    if duplicate_files is not None:
        duplicate_files.extend(flag_duplicates([unit for unit, _ in units]))
    for unit, _ in units:
        unit_format, why = (fmt, "") if fmt else detect_file_input_format(unit)
        if unit_format is None and why:
            if rejects.on_error == "raise":
                raise InstructkitError(
                    f"{unit}: {why}; pass --format to choose one, remove the file, "
                    "or pass --on-error skip to skip and list it"
                )
            if skipped_files is not None:
                skipped_files.append({"path": unit, "reason": why})
            continue
        chosen = chosen or unit_format
        if unit_format is not None and (unit_format == "text") != (chosen == "text"):
            raise InstructkitError(
                f"{unit}: mixes raw text rows with conversation rows; prepare them separately"
            )
        if unit_format is not None and (unit_format in PREFERENCE_FORMATS) != (chosen in PREFERENCE_FORMATS):
            raise InstructkitError(
                f"{unit}: mixes preference pairs (chosen/rejected) with other rows; prepare them separately"
            )
        rows_read.setdefault(unit, 0)
        if file_formats is not None and unit_format is not None:
            file_formats[unit] = unit_format
        for raw in iter_source_rows(unit):
            rows_read[raw.file] = rows_read.get(raw.file, 0) + 1
            if raw.error is not None:
                rejects.reject(raw.error)
            else:
                records.extend(_convert(raw.record, unit_format, raw.file, raw.row, rejects))
    features = (
        TEXT_FEATURES
        if chosen == "text"
        else PREFERENCE_FEATURES
        if chosen in PREFERENCE_FORMATS
        else CONVERSATION_FEATURES
    )
    if not records:  # `from_list([])` cannot build the columns
        return datasets.Dataset.from_dict({k: [] for k in features}, features=features), chosen, rows_read
    return datasets.Dataset.from_list(records, features=features), chosen, rows_read


def flag_duplicates(units: list[str]) -> list[list[str]]:
    """Groups of local input files with equal (decompressed) contents, each logged as a warning.

    All are read, as asked: the warning says their rows count twice, so a stray copy is never silent.
    """
    files = [Path(u) for u in units if is_local(u) and Path(u).is_file()]
    groups = [[str(f) for f in group] for group in duplicate_contents(files)]
    for group in groups:
        log_event(
            "prepare",
            f"warning: the same data under {len(group)} names, every row read {len(group)} times: "
            f"{', '.join(group)} (remove the copies unless the repeat is meant)",
        )
    return groups


def detect_file_input_format(source: str) -> tuple[str | None, str]:
    """The format most of a source's first `DETECT_ROWS` decodable rows fit (ties: the earliest).

    Returns (None, why) when no decodable row fits any format, and (None, "") when the source has no
    decodable row at all (its undecodable rows are then rejected one by one, like any bad row).
    """
    votes: Counter[str] = Counter()
    why, seen = "", 0
    with closing(iter_source_rows(source)) as rows:
        for raw in rows:
            if raw.error is not None:
                continue
            seen += 1
            try:
                votes[detect_input_format(raw.record.keys())] += 1
            except InstructkitError as exc:
                why = why or f"no row fits a known format (row {raw.row}: {exc})"
            if votes and seen >= DETECT_ROWS:
                break
    return (votes.most_common(1)[0][0], "") if votes else (None, why)


def _convert(
    record: dict[str, Any], fmt: str, file: str, row: int, rejects: RejectLog
) -> list[dict[str, Any]]:
    """One raw row → its conversation (or text) records, located at (file, row); a bad row is rejected."""
    try:
        if fmt == "text":
            text = record.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ConversationError(
                    "text",
                    "missing or empty" if not text else f"expected a string, got {type(text).__name__}",
                )
            return [{"text": text, "source": file, "row_id": row}]
        if fmt in PREFERENCE_FORMATS:
            return [to_preference(record, file, row).to_record()]
        if fmt not in INPUT_FORMATS:
            raise InstructkitError(f"unknown format {fmt!r} (accepted: {', '.join(INPUT_FORMATS)})")
        convs = to_conversations(record, fmt, file, row)
        return [{**conv.to_record(), "source": file, "row_id": row} for conv in convs]
    except ConversationError as exc:
        rejects.reject(BadRowError(file, row, exc.field, exc.reason), data=record)
        return []


class _Tokenize:
    """The batched `datasets.map` function: tokenize + mask + length policy, one status per output row."""

    def __init__(self, chat_tok: ChatTokenizer, cfg: PrepareConfig, text: bool):
        self.chat_tok, self.cfg, self.text = chat_tok, cfg, text

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self.text:
            encoded = self.chat_tok.encode_text(batch["text"])
        else:
            chats = [
                [{k: v for k, v in m.items() if v is not None} for m in msgs] for msgs in batch["messages"]
            ]
            encoded = self.chat_tok.encode(chats, self.cfg.loss_on)
        out: dict[str, list] = {
            "input_ids": [],
            "labels": [],
            "status": [],
            "reason": [],
            "source": [],
            "row_id": [],
        }
        for enc, source, row_id in zip(encoded, batch["source"], batch["row_id"]):
            if isinstance(enc, Exception):
                self._emit(out, [], [], "rejected", str(enc), source, row_id)
                continue
            for ids, labels, status in apply_length_policy(
                enc.input_ids, enc.labels, self.cfg.max_length, self.cfg.overlong
            ):
                self._emit(out, ids, labels, status, "", source, row_id)
        return out

    @staticmethod
    def _emit(out, ids, labels, status, reason, source, row_id) -> None:
        for key, value in (
            ("input_ids", ids),
            ("labels", labels),
            ("status", status),
            ("reason", reason),
            ("source", source),
            ("row_id", row_id),
        ):
            out[key].append(value)


def apply_length_policy(ids: list[int], labels: list[int], max_length: int, policy: Overlong):
    """Yield (ids, labels, status) pieces for one example under the over-long policy."""
    if len(ids) <= max_length:
        yield (ids, labels, "ok") if _trainable(labels) else ([], [], "dropped_no_trainable")
        return
    if policy == "drop":
        yield [], [], "dropped_overlong"
    elif policy == "truncate":
        ids, labels = ids[:max_length], labels[:max_length]
        # a reply cut off entirely is lost to truncation: counted as such, not as "no trained token"
        yield (ids, labels, "truncated") if _trainable(labels) else ([], [], "dropped_truncated")
    else:
        for start in range(0, len(ids), max_length):
            piece_ids, piece_labels = ids[start : start + max_length], labels[start : start + max_length]
            if len(piece_ids) >= 2 and _trainable(piece_labels):
                yield piece_ids, piece_labels, "split" if start == 0 else "split_piece"


def _trainable(labels: list[int]) -> bool:
    """True when some label after the first is trained (the first is never predicted)."""
    return labels[1:].count(IGNORE_INDEX) < len(labels) - 1


def tokenize_dataset(
    ds: datasets.Dataset, chat_tok: ChatTokenizer, cfg: PrepareConfig, text: bool
) -> datasets.Dataset:
    """Run the tokenize + mask + length-policy map over a dataset of conversations or texts."""
    return map_tokenize(
        ds,
        _Tokenize(chat_tok, cfg, text),
        tokenized_row_features(),
        "tokenize + mask",
        cfg.num_proc,
        cfg.model_dump_json(),
        chat_tok.template,
    )


def load_prepare_tokenizer(cfg: PrepareConfig, ds: datasets.Dataset, text: bool):
    """Load the tokenizer, or train a tiny BPE on the data for `tiny[:preset]`."""
    from ..models.loading import load_or_train_tokenizer

    if not cfg.tokenizer:
        raise InstructkitError(
            "no tokenizer given: pass --tokenizer (a path, hub id, .gguf or tiny[:preset])"
        )

    def texts():
        if text:
            return ds["text"]
        columns = ["messages"] if "messages" in ds.column_names else ["prompt", "chosen", "rejected"]
        return (m["content"] for column in columns for msgs in ds[column] for m in msgs)

    return load_or_train_tokenizer(
        cfg.tokenizer, texts, _tiny_template(cfg.chat_template), trust_remote_code=cfg.trust_remote_code
    )


def _tiny_template(chat_template: str | None) -> str:
    """The built-in a tiny tokenizer is trained with: the one named, else tulu.

    A Jinja string (or `tokenizer`) is not a built-in name: `ChatTokenizer` resolves it (or refuses it
    in one line) whatever template the tiny tokenizer carries, so it must not reach the trainer.
    """
    from ..models.chat_templates import BUILTIN_TEMPLATES

    return chat_template if chat_template in BUILTIN_TEMPLATES else "tulu"


def prepare(
    cfg: PrepareConfig,
    progress: bool = True,
    tokenize: Callable[..., datasets.Dataset] = tokenize_dataset,
    pack: Callable[..., tuple[pa.Table, Any]] = pack_table,
) -> dict[str, Any]:
    """Run the whole preparation; writes the output directory and returns the stats.

    `tokenize` (same signature as `tokenize_dataset`) and `pack` (as `pack_table`) are the two steps
    another executor may run elsewhere (`instructkit.executors.ray_prepare`); all else stays here.
    """
    if cfg.overlong == "split" and cfg.loss_on != "all":
        raise InstructkitError("--overlong split is for pretraining data only (use it with --loss-on all)")
    from ..models.loading import check_max_length, model_kind_of

    check_max_length(cfg.tokenizer, cfg.max_length, cfg.trust_remote_code)  # when it names a model
    if not progress:
        datasets.disable_progress_bars()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    rejects = RejectLog(cfg.on_error)
    skipped_files: list[dict[str, str]] = []
    file_formats: dict[str, str] = {}
    duplicates: list[list[str]] = []
    ds, fmt, rows_read = read_examples(
        cfg.sources,
        cfg.input_format,
        rejects,
        skipped_files,
        cfg.skip_unknown_files,
        file_formats,
        duplicates,
    )
    if len(ds) == 0:  # nothing to tokenize (every row rejected, or no data): stop with the rejects written
        _stop_empty(cfg, _empty_stats(rows_read, rejects, Counter(), skipped_files, duplicates), rejects)
    text = fmt == "text"
    preference = fmt in PREFERENCE_FORMATS
    if preference and (cfg.loss_on == "all" or cfg.overlong == "split"):
        raise InstructkitError(
            "preference pairs train on their replies only: use --loss-on assistant and --overlong truncate or drop"
        )
    kind = model_kind_of(cfg.tokenizer, cfg.trust_remote_code) if cfg.tokenizer else "causal"
    if kind == SEQ2SEQ:  # encoder-decoder: (input, target) pairs, no chat template (data/seq2seq.py)
        check_seq2seq_settings(cfg, text, preference)
    if text and cfg.loss_on != "all":  # pretraining text: every token (a copy: the caller's config stays)
        cfg = cfg.model_copy(update={"loss_on": "all"})
    timings["read"] = time.perf_counter() - t0

    tokenizer = load_prepare_tokenizer(cfg, ds, text)
    if kind == SEQ2SEQ:
        t1 = time.perf_counter()
        tokenized = tokenize_seq2seq(ds, tokenizer, *cfg.seq2seq_limits(), cfg.overlong, cfg.num_proc)
    else:
        template = "plain" if text and not cfg.chat_template else cfg.chat_template
        chat_tok = ChatTokenizer(tokenizer, template, control_tokens=cfg.control_tokens)
        if not text:
            tokenizer.chat_template = chat_tok.template  # train and eval render with the template masked here
        t1 = time.perf_counter()
        tokenized = (
            tokenize_pairs(ds, chat_tok, cfg, apply_length_policy)
            if preference
            else tokenize(ds, chat_tok, cfg, text)
        )
    timings["tokenize"] = time.perf_counter() - t1
    table = tokenized.data.table
    status = Counter(dict(zip(*[c.to_pylist() for c in pc.value_counts(table.column("status")).flatten()])))
    _reject_unmaskable(table, rejects)
    kept = datasets.Dataset(table.filter(pc.is_in(table.column("status"), pa.array(KEPT_STATUSES))))
    stats = _count(kept, status, sum(rows_read.values()), len(rejects), len(ds))
    stats["files"] = file_counts(rows_read, kept.data.table, rejects)
    for entry in stats["files"]:
        entry["input_format"] = file_formats.get(entry["path"])
    stats["skipped_files"] = skipped_files
    stats["duplicate_files"] = duplicates
    if len(kept) == 0:
        _stop_empty(cfg, stats, rejects)

    t2 = time.perf_counter()
    if kind == SEQ2SEQ:
        final = _finish_seq2seq(kept, cfg, stats)
    else:
        final = _finish_pairs(kept, cfg, stats) if preference else _finish_rows(kept, cfg, stats, pack)
    timings["pack" if cfg.pack else "index"] = time.perf_counter() - t2
    stats["seconds"] = {k: round(v, 3) for k, v in timings.items()}
    stats["examples_per_second"] = round(stats["examples_in"] / max(1e-9, time.perf_counter() - t0), 1)
    _write_output(final, cfg, fmt, stats, tokenizer, rejects, kind)
    return stats


# The words the run report uses for these counts (`run_report.DATA_ROWS`), so the console says the same.
STAT_LABELS = {
    "examples_in": "rows read by prepare",
    "rejected": "rows rejected (see rejects.jsonl)",
    "dropped_overlong": "dropped: longer than max_length",
    "dropped_no_trainable": "dropped: no trained token",
    "dropped_truncated": "dropped: reply entirely past max_length",
    "truncated": "truncated",
    "examples_out": "examples trained on",
    "tokens": "tokens",
    "trainable_tokens": "tokens with a loss",
    "packs": "packed rows",
    "packing_efficiency": "packing efficiency (real tokens / capacity)",
}


def length_warning(
    stats: dict[str, Any], cfg: PrepareSettings, flag: Callable[[str], str] | None = None
) -> str:
    """One line saying how many rows the length policy dropped or cut, why, and which option changes it.

    Empty when none was. `flag` names an option as the caller spells it (`--max-length` on the command
    line, `prepare.max_length` in a recipe).
    """
    flag = flag or (lambda name: "--" + name.replace("_", "-"))
    counted = ("dropped_overlong", "dropped_truncated", "dropped_no_trainable", "truncated")
    n = {key: int(stats.get(key) or 0) for key in counted}
    limit = f"{flag('max_length')} {cfg.max_length}"
    why = [
        (n["dropped_overlong"], f"longer than max_length ({limit}, {flag('overlong')} drop)"),
        (n["dropped_truncated"], f"with the reply entirely past max_length ({limit}) after truncation"),
        (n["dropped_no_trainable"], f"with no trained token (no reply to learn from; see {flag('loss_on')})"),
    ]
    dropped = sum(count for count, _ in why)
    if not dropped and not n["truncated"]:
        return ""
    parts = []
    if dropped:
        reasons = ", ".join(f"{count} {text}" for count, text in why if count)
        parts.append(f"{dropped} of {stats.get('examples_in', '?')} rows dropped ({reasons})")
    if n["truncated"]:
        parts.append(f"{n['truncated']} truncated to max_length ({limit})")
    fixes = []
    if n["dropped_overlong"] or n["dropped_truncated"] or n["truncated"]:
        fixes.append(
            f"raise {flag('max_length')} to keep them whole, or choose {flag('overlong')} "
            f"(now {cfg.overlong}; truncate | drop | split for pretraining text)"
        )
    return "warning: " + " and ".join(parts) + (f"; {'; '.join(fixes)}" if fixes else "")


def file_counts(rows_read: dict[str, int], kept: pa.Table, rejects: RejectLog) -> list[dict[str, Any]]:
    """Per input file: rows read = kept (some example in the output) + rejected + dropped (length policy)."""
    kept_rows = set(zip(kept.column("source").to_pylist(), kept.column("row_id").to_pylist()))
    rejected_rows = {(r["file"], r["row"]) for r in rejects.rows} - kept_rows
    kept_by_file = Counter(file for file, _ in kept_rows)
    rejected_by_file = Counter(file for file, _ in rejected_rows)
    return [
        {
            "path": file,
            "rows_read": n,
            "rows_kept": kept_by_file[file],
            "rows_rejected": rejected_by_file[file],
            "rows_dropped": n - kept_by_file[file] - rejected_by_file[file],
        }
        for file, n in rows_read.items()
    ]


def _empty_stats(
    rows_read: dict[str, int],
    rejects: RejectLog,
    status: Counter,
    skipped_files: list[dict[str, str]],
    duplicates: list[list[str]],
) -> dict[str, Any]:
    """The stats of a run that read no usable row (written next to its rejects)."""
    empty = pa.table({"source": pa.array([], pa.string()), "row_id": pa.array([], pa.int64())})
    return {
        "examples_in": sum(rows_read.values()),
        "rejected": len(rejects),
        "dropped_overlong": status.get("dropped_overlong", 0),
        "dropped_no_trainable": status.get("dropped_no_trainable", 0),
        "dropped_truncated": status.get("dropped_truncated", 0),
        "examples_out": 0,
        "files": file_counts(rows_read, empty, rejects),
        "skipped_files": skipped_files,
        "duplicate_files": duplicates,
    }


def _stop_empty(cfg: PrepareConfig, stats: dict[str, Any], rejects: RejectLog) -> None:
    """No example is left to train on: write rejects.jsonl and stats.json to `out`, then stop with one line."""
    out = Path(cfg.out)
    with atomic_dir(out) as tmp:
        rejects_path = rejects.write(tmp / "rejects.jsonl")
        stats["rejects_file"] = str(out / "rejects.jsonl") if rejects_path else None
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
    dropped = sum(stats.get(k, 0) for k in ("dropped_overlong", "dropped_no_trainable", "dropped_truncated"))
    files = len(stats["files"])
    see = f"{out / 'rejects.jsonl'} and {out / 'stats.json'}" if rejects_path else str(out / "stats.json")
    raise InstructkitError(
        f"no examples left to train on: {stats['examples_in']} rows read from {files} file{'s' if files != 1 else ''}, "
        f"{stats['rejected']} rejected, {dropped} dropped by the length policy, "
        f"{len(stats['skipped_files'])} files skipped; see {see}"
    )


def _reject_unmaskable(table: pa.Table, rejects: RejectLog) -> None:
    """Conversations the template cannot mask exactly: stop, or log them as rejects."""
    bad = table.filter(pc.equal(table.column("status"), "rejected")).select(["source", "row_id", "reason"])
    for row in bad.to_pylist():
        rejects.reject(BadRowError(row["source"], row["row_id"], *split_row_error(row["reason"])))


def _count(
    kept: datasets.Dataset, status: Counter, rows_read: int, rejected: int, converted: int
) -> dict[str, Any]:
    lengths = np.asarray(pc.list_value_length(kept.data.column("input_ids")).to_numpy(zero_copy_only=False))
    labels = kept.data.column("labels").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return {
        "examples_in": rows_read,
        "rejected": rejected,
        "converted": converted,
        "truncated": status.get("truncated", 0),
        "dropped_overlong": status.get("dropped_overlong", 0),
        "dropped_no_trainable": status.get("dropped_no_trainable", 0),
        "dropped_truncated": status.get("dropped_truncated", 0),  # every trained token was past max_length
        "split_examples": status.get("split", 0),
        "split_pieces": status.get("split", 0) + status.get("split_piece", 0),
        "examples_out": len(kept),
        "tokens": int(lengths.sum()),
        "trainable_tokens": int((labels != IGNORE_INDEX).sum()),
        "max_tokens": int(lengths.max()) if len(lengths) else 0,
    }


def _finish_rows(
    kept: datasets.Dataset, cfg: PrepareConfig, stats: dict[str, Any], pack: Callable = pack_table
) -> datasets.Dataset:
    """Pack (global best-fit decreasing) or keep rows unpacked with a `length` column for grouping."""
    table = kept.data.table.select(["input_ids", "labels"])
    if cfg.pack:
        packed, pstats = pack(table, cfg.max_length)
        stats.update(
            packs=pstats.packs,
            packing_efficiency=round(pstats.efficiency, 6),
            lower_bound_packs=pstats.lower_bound_packs,
        )
        stats["trainable_tokens_packed"] = int(
            (packed.column("labels").combine_chunks().flatten().to_numpy() != IGNORE_INDEX).sum()
        )
        return datasets.Dataset(packed)
    lengths = pc.list_value_length(table.column("input_ids"))
    stats.update(packs=None, packing_efficiency=None)
    return datasets.Dataset(table.append_column("length", lengths.cast(pa.int32())))


def _finish_seq2seq(kept: datasets.Dataset, cfg: PrepareConfig, stats: dict[str, Any]) -> datasets.Dataset:
    """Encoder-decoder rows: packed pairs (2-D best fit, data/packing.py), or one pair per row with a
    `length` (input + target tokens) for grouping; stats count target tokens beside the input's."""
    table = kept.data.table.select(["input_ids", "labels"])
    targets = pc.list_value_length(table.column("labels"))
    stats["target_tokens"] = int(pc.sum(targets).as_py() or 0)
    stats["max_target_tokens"] = int(pc.max(targets).as_py() or 0)
    if cfg.pack:
        packed, pstats = pack_seq2seq_table(table, cfg.seq2seq_limits())
        stats.update(
            packs=pstats.packs,
            packing_efficiency=round(pstats.efficiency, 6),
            lower_bound_packs=pstats.lower_bound_packs,
            trainable_tokens_packed=stats["trainable_tokens"],  # packing changes no label of a pair
        )
        return datasets.Dataset(packed)
    lengths = pc.add(pc.list_value_length(table.column("input_ids")), targets)
    stats.update(packs=None, packing_efficiency=None)
    return datasets.Dataset(table.append_column("length", lengths.cast(pa.int32())))


def _finish_pairs(kept: datasets.Dataset, cfg: PrepareConfig, stats: dict[str, Any]) -> datasets.Dataset:
    """Preference pairs as rows of whole pairs (packed, or one per row), each side its own sequence."""
    capacity = 2 * cfg.max_length
    rows, pstats = pair_rows(kept.data.table, capacity, cfg.pack)
    stats.update(
        pairs=len(kept),
        sequences=2 * len(kept),
        pair_capacity=capacity,
        packs=pstats.packs if cfg.pack else None,
        packing_efficiency=round(pstats.efficiency, 6) if cfg.pack else None,
    )
    labels = rows.column("labels").combine_chunks().flatten().to_numpy()
    stats["trainable_tokens_packed"] = int((labels != IGNORE_INDEX).sum())
    return datasets.Dataset(rows)


def _write_output(
    final: datasets.Dataset,
    cfg: PrepareConfig,
    fmt: str,
    stats: dict[str, Any],
    tokenizer,
    rejects: RejectLog,
    kind: str = "causal",
) -> None:
    """Save the prepared folder (atomically, in the one format `train` reads); encoder-decoder data
    records `model_kind: seq2seq` and its two length limits (causal data records no kind)."""
    formats = formats_summary(stats.get("files", []))
    fmt = fmt if len(formats) <= 1 else "mixed"  # `input_formats` says which, with files and rows
    settings = {
        **cfg.model_dump(mode="json"),
        "input_format": fmt,
        "input_formats": formats,
        "packed": cfg.pack,
    }
    if fmt in PREFERENCE_FORMATS:  # rows of whole pairs, each side a sequence (data/preference_rows.py)
        settings.update(kind="preference", packed=True)
    if kind == SEQ2SEQ:
        source, target = cfg.seq2seq_limits()
        settings.update(model_kind=SEQ2SEQ, max_source_length=source, max_target_length=target)
    write_prepared(cfg.out, final, tokenizer, settings, stats, rejects.write)


def formats_summary(files: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per input format: its files and their rows read and kept (prepare.json records every format of a mix)."""
    out: dict[str, dict[str, Any]] = {}
    for entry in files:
        if entry.get("input_format") is None:
            continue
        group = out.setdefault(entry["input_format"], {"files": [], "rows_read": 0, "rows_kept": 0})
        group["files"].append(entry["path"])
        group["rows_read"] += entry["rows_read"]
        group["rows_kept"] += entry["rows_kept"]
    return dict(sorted(out.items()))
