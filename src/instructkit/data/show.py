"""Render rows of a prepared or built dataset for people: turns, or tokens with the trained ones highlighted."""

from __future__ import annotations

from pathlib import Path

import datasets
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from .prepared import IGNORE_INDEX


def show_rows(directory: Path, n: int, task: str | None, console: Console) -> None:
    """Print up to n rows of the dataset at `directory`."""
    ds = datasets.load_from_disk(str(directory))
    if task is not None and "task" in ds.column_names:
        ds = ds.filter(lambda t: t == task, input_columns="task")
    rows = ds.select(range(min(n, len(ds))))
    if "messages" in ds.column_names:
        for row in rows:
            console.print(_conversation_panel(row))
        return
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory / "tokenizer"))
    for i, row in enumerate(rows):
        console.print(Panel(token_text(tokenizer, row), title=f"row {i}", subtitle=_row_subtitle(row)))


def _conversation_panel(row: dict) -> Panel:
    body = Text()
    for m in row["messages"]:
        style = "bold green" if m["role"] == "assistant" else "bold cyan"
        body.append(f"{m['role']}: ", style=style)
        body.append(m["content"] + "\n")
    meta = " · ".join(f"{k}={row[k]}" for k in ("task", "cluster", "template_id", "format") if row.get(k))
    return Panel(body, title=f"{row.get('source', '')}:{row.get('row_id', '')}", subtitle=meta or None)


def token_text(tokenizer, row: dict) -> Text:
    """Decoded tokens; trained ones in green, example boundaries of packed rows marked with ‖."""
    text = Text()
    starts = set()
    if "seq_lens" in row:
        pos = 0
        for length in row["seq_lens"]:
            starts.add(pos)
            pos += length
    for k, (tok, label) in enumerate(zip(row["input_ids"], row["labels"])):
        if k in starts and k > 0:
            text.append(" ‖ ", style="bold magenta")
        piece = tokenizer.decode([tok])
        text.append(piece, style="green" if label != IGNORE_INDEX else "dim")
    return text


def _row_subtitle(row: dict) -> str:
    trained = sum(1 for label in row["labels"] if label != IGNORE_INDEX)
    parts = [f"{len(row['input_ids'])} tokens", f"{trained} trained"]
    if "seq_lens" in row:
        parts.append(f"{len(row['seq_lens'])} examples packed")
    return " · ".join(parts)
