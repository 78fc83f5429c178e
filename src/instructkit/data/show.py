"""Render rows of a prepared or built dataset for people: turns, or tokens with the trained ones highlighted."""

from __future__ import annotations

from pathlib import Path

import datasets
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from ..errors import InstructkitError
from .preference_rows import prompt_length
from .prepared import IGNORE_INDEX


def show_rows(directory: Path, n: int, task: str | None, console: Console) -> None:
    """Print up to n rows of the dataset at `directory`."""
    ds = _load(Path(directory))
    if task is not None and "task" in ds.column_names:
        ds = ds.filter(lambda t: t == task, input_columns="task")
    rows = ds.select(range(min(n, len(ds))))
    if "messages" in ds.column_names:
        for row in rows:
            console.print(_conversation_panel(row))
        return
    from ..models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(directory / "tokenizer"))
    if "sides" in ds.column_names:  # a prepared preference folder: one panel per pair, not per packed row
        for panel in pair_panels(tokenizer, rows, n):
            console.print(panel)
        return
    for i, row in enumerate(rows):
        console.print(Panel(token_text(tokenizer, row), title=f"row {i}", subtitle=_row_subtitle(row)))


def _load(directory: Path) -> datasets.Dataset:
    """The dataset saved at `directory`, or one clear error saying what is missing there."""
    if not directory.is_dir():
        raise InstructkitError(
            f"{directory}: no such directory (give a folder written by `data prepare` or `data build`)"
        )
    try:
        return datasets.load_from_disk(str(directory))
    except FileNotFoundError as exc:  # a folder, but not one save_to_disk wrote
        raise InstructkitError(
            f"{directory}: not a dataset folder written by `data prepare` or `data build` ({exc})"
        ) from None


def _conversation_panel(row: dict) -> Panel:
    body = Text()
    for m in row["messages"]:
        style = "bold green" if m["role"] == "assistant" else "bold cyan"
        body.append(f"{m['role']}: ", style=style)
        body.append(m["content"] + "\n")
    meta = " · ".join(f"{k}={row[k]}" for k in ("task", "cluster", "template_id", "format") if row.get(k))
    return Panel(body, title=f"{row.get('source', '')}:{row.get('row_id', '')}", subtitle=meta or None)


def token_text(tokenizer, row: dict) -> Text:
    """Decoded text; trained tokens in green, example boundaries of packed rows marked with ‖.

    Each run of consecutive tokens with the same label state (inside one packed example) is decoded
    at once: a character split over several byte-level tokens (emoji, CJK, Hebrew) decodes whole,
    where decoding token by token would print each partial byte as U+FFFD.
    """
    text = Text()
    for k, (start, end, trained) in enumerate(label_spans(row)):
        if k > 0 and start in _example_starts(row):
            text.append(" ‖ ", style="bold magenta")
        piece = tokenizer.decode(row["input_ids"][start:end])
        text.append(piece, style="green" if trained else "dim")
    return text


def label_spans(row: dict) -> list[tuple[int, int, bool]]:
    """(start, end, trained) of each maximal run of tokens sharing a label state and a packed example."""
    starts = _example_starts(row)
    spans: list[tuple[int, int, bool]] = []
    for k, label in enumerate(row["labels"]):
        trained = label != IGNORE_INDEX
        if spans and spans[-1][2] == trained and k not in starts:
            spans[-1] = (spans[-1][0], k + 1, trained)
        else:
            spans.append((k, k + 1, trained))
    return spans


def _example_starts(row: dict) -> set[int]:
    """Token positions where a packed example begins (empty for an unpacked row)."""
    starts, pos = set(), 0
    for length in row.get("seq_lens") or []:
        starts.add(pos)
        pos += length
    return starts


def pair_panels(tokenizer, rows, n: int) -> list[Panel]:
    """Up to n pairs of prepared preference rows: the shared prompt once, then each side's reply with its
    trained tokens in green (chosen) or red (rejected), so a wrong mask shows as colour where none belongs."""
    panels: list[Panel] = []
    for row in rows:
        sequences = _sequences(row)
        for chosen, rejected in zip(sequences[::2], sequences[1::2]):
            if len(panels) == n:
                return panels
            panels.append(_pair_panel(tokenizer, chosen, rejected))
    return panels


def _sequences(row: dict) -> list[dict]:
    """The row's sequences (chosen, rejected, chosen, …) as unpacked rows, each with its pair id."""
    out, start = [], 0
    for length, pair, side in zip(row["seq_lens"], row["pair_ids"], row["sides"]):
        end = start + length
        out.append({"input_ids": row["input_ids"][start:end], "labels": row["labels"][start:end]})
        out[-1].update(pair=pair, side=side)
        start = end
    return out


def _pair_panel(tokenizer, chosen: dict, rejected: dict) -> Panel:
    prompt = prompt_length(chosen["labels"])  # both sides share these prompt tokens (checked at prepare)
    body = Text()
    body.append("prompt: ", style="bold cyan")
    body.append(tokenizer.decode(chosen["input_ids"][:prompt]), style="dim")
    counts = []
    for name, seq, colour in (("chosen", chosen, "green"), ("rejected", rejected, "red")):
        reply = {"input_ids": seq["input_ids"][prompt:], "labels": seq["labels"][prompt:]}
        body.append(f"\n{name}: ", style=f"bold {colour}")
        for start, end, trained in label_spans(reply):
            body.append(tokenizer.decode(reply["input_ids"][start:end]), style=colour if trained else "dim")
        counts.append(f"{name} {sum(label != IGNORE_INDEX for label in seq['labels'])} trained")
    return Panel(body, title=f"pair {chosen['pair']}", subtitle=" · ".join(counts))


def _row_subtitle(row: dict) -> str:
    trained = sum(1 for label in row["labels"] if label != IGNORE_INDEX)
    parts = [f"{len(row['input_ids'])} tokens", f"{trained} trained"]
    if "seq_lens" in row:
        parts.append(f"{len(row['seq_lens'])} examples packed")
    return " · ".join(parts)
