"""Token tries for loglikelihood scoring: every token that several requests share is run once.

A request's tokens are context + continuation. Requests with the same context form one trie: the context
once, then each continuation branching off where it first differs from the others (PIQA's two solutions
often share their first words). Tries are packed into rows; inside a row a token attends to its ancestors
only (a 4D mask), with the position it has in its own sequence, so its logits are those of its sequence
run alone. Tokens every request starts with (a task's few-shot prefix) are left out of the tries: the
backend runs them once and hands their KV cache to every row.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Trie:
    """Nodes of one context's trie (inputs only: a sequence's last token is never fed).

    Node k feeds `tokens[k]` at position `positions[k]` below node `parents[k]` (-1: below the shared
    prefix); parents precede children. `scores` lists (request, node, target): the node whose logits
    score `target`, one entry per continuation token.
    """

    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    scores: list[tuple[int, int, int]] = field(default_factory=list)

    def add(self, token: int, parent: int, position: int) -> int:
        self.tokens.append(token)
        self.parents.append(parent)
        self.positions.append(position)
        return len(self.tokens) - 1


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix all sequences share."""
    if not seqs:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs)
    for seq in seqs[1:]:
        k = 0
        while k < n and seq[k] == first[k]:
            k += 1
        n = k
    return n


def build_tries(pairs: Sequence[tuple[list[int], list[int]]], skip: int) -> list[Trie]:
    """One trie per distinct context over (context ids, continuation ids) pairs; the first `skip` tokens
    (at most each context's length minus one) belong to the shared prefix and are left out."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, _) in enumerate(pairs):
        groups.setdefault(tuple(ctx), []).append(i)
    tries = []
    for ctx, members in groups.items():
        trie, node = Trie(), -1
        for pos in range(skip, len(ctx)):  # the context, once
            node = trie.add(ctx[pos], node, pos)
        ctx_last, children = node, {}
        for i in members:
            cont = pairs[i][1]
            trie.scores += _add_continuation(trie, children, ctx_last, len(ctx), cont, i)
        tries.append(trie)
    return [t for t in tries if t.tokens]


def _add_continuation(
    trie: Trie, children: dict[tuple[int, int], int], node: int, start: int, cont: list[int], request: int
) -> list[tuple[int, int, int]]:
    """Insert cont[:-1] below `node`; return the (request, node, target) score entries."""
    scores = [(request, node, cont[0])] if cont else []
    for j, token in enumerate(cont[:-1]):
        child = children.get((node, token))
        if child is None:
            child = children[(node, token)] = trie.add(token, node, start + j)
        node = child
        scores.append((request, node, cont[j + 1]))
    return scores


def pack(tries: list[Trie], capacity: int) -> list[list[Trie]]:
    """Best-fit decreasing: rows of at most `capacity` tokens (a larger trie gets a row of its own)."""
    rows: list[list[Trie]] = []
    free: list[tuple[int, int]] = []  # (room left, row index), sorted
    for trie in sorted(tries, key=lambda t: -len(t.tokens)):
        size = len(trie.tokens)
        slot = bisect.bisect_left(free, (size, -1))
        if slot < len(free):
            room, index = free.pop(slot)
            rows[index].append(trie)
            bisect.insort(free, (room - size, index))
        else:
            rows.append([trie])
            bisect.insort(free, (max(capacity - size, 0), len(rows) - 1))
    return sorted(rows, key=lambda r: -sum(len(t.tokens) for t in r))


@dataclass
class PackedBatch:
    """Model inputs for rows of tries, plus where each score is read.

    `allowed[b, i, j]`: token i of row b may attend token j of that row (ancestor or itself).
    `select_rows/select_cols`: the positions whose logits are needed; `score_select[k]` indexes them for
    score k, which belongs to request `score_request[k]` and targets `score_target[k]`.
    """

    ids: np.ndarray
    positions: np.ndarray
    allowed: np.ndarray
    select_rows: np.ndarray
    select_cols: np.ndarray
    score_request: np.ndarray
    score_select: np.ndarray
    score_target: np.ndarray


def batch_inputs(rows: list[list[Trie]], pad_id: int) -> PackedBatch:
    """Right-padded ids, positions and ancestor masks for `rows`; pads attend only to themselves."""
    width = max(sum(len(t.tokens) for t in row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    positions = np.zeros((len(rows), width), dtype=np.int64)
    allowed = np.zeros((len(rows), width, width), dtype=bool)
    allowed[:, np.arange(width), np.arange(width)] = True
    selected: dict[tuple[int, int], int] = {}
    requests, select, targets = [], [], []
    for b, row in enumerate(rows):
        offset = 0
        for trie in row:
            n = len(trie.tokens)
            ids[b, offset : offset + n] = trie.tokens
            positions[b, offset : offset + n] = trie.positions
            for k, parent in enumerate(trie.parents):
                if parent >= 0:
                    allowed[b, offset + k] |= allowed[b, offset + parent]
            for request, node, target in trie.scores:
                key = (b, offset + node)
                requests.append(request)
                select.append(selected.setdefault(key, len(selected)))
                targets.append(target)
            offset += n
    cells = np.array(list(selected), dtype=np.int64).reshape(-1, 2)
    return PackedBatch(
        ids,
        positions,
        allowed,
        cells[:, 0],
        cells[:, 1],
        np.array(requests, dtype=np.int64),
        np.array(select, dtype=np.int64),
        np.array(targets, dtype=np.int64),
    )
