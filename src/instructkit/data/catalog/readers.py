"""Readers for source schemas that are not one-row-per-example: SNI task files, OASST trees, chats.

A reader takes decoded records `(file, row, record)` and yields task rows in the same form. Schema
problems raise `BadRowError(file, row, field, reason)`; the caller decides whether to stop or skip.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ...errors import BadRowError
from ..conversation import ConversationError
from ..converters import to_conversation

Record = tuple[str, int, dict[str, Any]]
Reader = Callable[[Iterable[Record]], Iterator[Record]]


def read_rows(records: Iterable[Record]) -> Iterator[Record]:
    """One record is one row (JSONL, Parquet, CSV, hub tables)."""
    yield from records


def explode(records: Iterable[Record], field: str) -> Iterator[Record]:
    """One row per element of a list (or dict of objects) field; element keys override parent keys.

    Each row keeps its parent's file and row number and records `_element` (e.g. `examples[3]`) so
    an error in it can still be located exactly.
    """
    for file, row, record in records:
        value = record.get(field)
        if isinstance(value, dict):
            value = list(value.values())
        if not isinstance(value, list):
            raise BadRowError(
                file, row, field, f"expected a list or object to explode, got {type(value).__name__}"
            )
        parent = {k: v for k, v in record.items() if k != field}
        for i, element in enumerate(value):
            if not isinstance(element, dict):
                raise BadRowError(
                    file, row, f"{field}[{i}]", f"expected an object, got {type(element).__name__}"
                )
            yield file, row, {**parent, **element, "_element": f"{field}[{i}]"}


def _first(value: Any) -> str:
    return value[0] if isinstance(value, list) and value else value if isinstance(value, str) else ""


def read_sni_tasks(records: Iterable[Record]) -> Iterator[Record]:
    """Super-NaturalInstructions task JSON → one row per instance (definition, positive examples, input, output)."""
    for file, row, record in records:
        instances = record.get("Instances")
        if not isinstance(instances, list):
            raise BadRowError(file, row, "Instances", "missing or not a list (is this an SNI task file?)")
        definition = _first(record.get("Definition"))
        if not definition:
            raise BadRowError(file, row, "Definition", "missing or empty")
        positives = [
            {"input": ex.get("input", ""), "output": _first(ex.get("output", ""))}
            for ex in record.get("Positive Examples") or []
        ]
        for i, inst in enumerate(instances, start=1):
            outputs = inst.get("output")
            if not outputs:
                raise BadRowError(file, i, "Instances.output", "missing or empty")
            yield (
                file,
                i,
                {
                    "definition": definition,
                    "positive_examples": positives,
                    "input": inst.get("input", ""),
                    "output": _first(outputs),
                    "outputs": list(outputs) if isinstance(outputs, list) else [outputs],
                    "instance_id": str(inst.get("id", i)),
                },
            )


def _rank_key(message: dict[str, Any]) -> tuple[float, str]:
    rank = message.get("rank")
    return (float(rank) if rank is not None else float("inf"), str(message.get("message_id")))


def _best_path(root: dict[str, Any], children: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    path, node = [root], root
    while children.get(node["message_id"]):
        node = min(children[node["message_id"]], key=_rank_key)
        path.append(node)
    if path[-1].get("role") != "assistant":
        path.pop()
    return path


def read_oasst_trees(records: Iterable[Record]) -> Iterator[Record]:
    """OpenAssistant message table → each tree flattened to its highest-ranked path (rank 0 first)."""
    messages, children = [], defaultdict(list)
    for file, row, record in records:
        if record.get("deleted"):
            continue
        for key in ("message_id", "role", "text"):
            if key not in record:
                raise BadRowError(file, row, key, "missing (is this an OASST message table?)")
        messages.append((file, row, record))
        if record.get("parent_id"):
            children[record["parent_id"]].append(record)
    for file, row, record in messages:
        if record.get("parent_id"):
            continue
        path = _best_path(record, children)
        if len(path) >= 2:
            chat = [
                {"role": "user" if m["role"] == "prompter" else "assistant", "content": m["text"]}
                for m in path
            ]
            yield (
                file,
                row,
                {
                    "messages": chat,
                    "message_tree_id": record.get("message_tree_id", record["message_id"]),
                    "lang": record.get("lang", ""),
                },
            )


def _chat_reader(fmt: str) -> Reader:
    def read(records: Iterable[Record]) -> Iterator[Record]:
        for file, row, record in records:
            try:
                conv = to_conversation(record, fmt, file, row)
            except ConversationError as exc:
                raise BadRowError(file, row, exc.field, exc.reason) from exc
            yield file, row, {"messages": conv.as_chat()}

    read.__doc__ = f"{fmt} conversations → validated `messages` rows."
    return read


READERS: dict[str, Reader] = {
    "rows": read_rows,
    "sni_task": read_sni_tasks,
    "oasst_tree": read_oasst_trees,
    "sharegpt": _chat_reader("sharegpt"),
    "messages": _chat_reader("messages"),
}
