"""Encoder-decoder (seq2seq) rows: a conversation becomes an (input, target) pair, tokenized without a
chat template into encoder `input_ids` and decoder `labels`, each under its own length limit.

The rule from a conversation to a pair (Flan-T5 is trained on such pairs, rendered by the templates
of `data/tasks` and mixed by `data/mixture`, which emit one user turn and one assistant reply):
- system messages, then exactly one user turn, then exactly one assistant reply;
- input = the system texts and the user text, joined by a blank line; target = the reply;
- anything else (two user turns, a reply before the question, no reply) is refused as a bad row
  naming the turn, never guessed at: a multi-turn chat has no single (input, target) split.

Every label is trained (the decoder predicts each target token from the decoder start token on), and
the tokenizer's own post-processor adds what the model expects (T5: `</s>` at the end of both).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets

SEQ2SEQ = "seq2seq"
PAIR_JOIN = "\n\n"  # between system texts and the user text in the encoder input


class PairError(ValueError):
    """A conversation without a single (input, target) split; the message is `field: reason`."""


def to_pair(messages: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """(input, target) of a conversation: system texts + the one user turn → the one assistant reply."""
    roles = [m["role"] for m in messages]
    systems = [m["content"] for m in messages if m["role"] == "system"]
    rest = [(i, m) for i, m in enumerate(messages) if m["role"] != "system"]
    if [m["role"] for _, m in rest] != ["user", "assistant"] or roles[-1] != "assistant":
        where = _first_extra(rest)
        raise PairError(
            f"{where}: an encoder-decoder model trains on one user turn and one assistant reply "
            f"(roles here: {', '.join(roles)}); split multi-turn chats into pairs before preparing"
        )
    (_, user), (_, reply) = rest
    return PAIR_JOIN.join([*systems, user["content"]]), reply["content"]


def _first_extra(rest: list[tuple[int, dict[str, Any]]]) -> str:
    """The turn that breaks the (user, assistant) shape, as `messages[i] (role)`."""
    expected = ["user", "assistant"]
    for k, (i, m) in enumerate(rest):
        if k >= len(expected) or m["role"] != expected[k]:
            return f"{m.get('field') or f'messages[{i}]'} ({m['role']})"
    return "messages"


def clip(ids: list[int], limit: int, eos: int | None) -> list[int]:
    """`ids` cut to `limit` tokens, keeping a final eos (as the tokenizer's own truncation does)."""
    if len(ids) <= limit:
        return ids
    return ids[: limit - 1] + [eos] if eos is not None and ids[-1] == eos else ids[:limit]


def length_policy(
    source: list[int], target: list[int], max_source: int, max_target: int, policy: str, eos: int | None
) -> tuple[list[int], list[int], str]:
    """(input_ids, labels, status) of one pair under the over-long policy (truncate | drop)."""
    if not target:
        return [], [], "dropped_no_trainable"
    if len(source) <= max_source and len(target) <= max_target:
        return source, target, "ok"
    if policy == "drop":
        return [], [], "dropped_overlong"
    return clip(source, max_source, eos), clip(target, max_target, eos), "truncated"


class Seq2SeqTokenize:
    """The batched `datasets.map` function: conversation → pair → encoder ids and decoder labels."""

    def __init__(self, tokenizer: Any, max_source: int, max_target: int, overlong: str):
        self.tokenizer = tokenizer
        self.limits = (max_source, max_target)
        self.overlong = overlong

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {
            k: [] for k in ("input_ids", "labels", "status", "reason", "source", "row_id")
        }
        pairs: list[tuple[str, str] | PairError] = []
        for msgs in batch["messages"]:
            try:
                pairs.append(to_pair(msgs))
            except PairError as exc:
                pairs.append(exc)
        good = [p for p in pairs if not isinstance(p, PairError)]
        sources = iter(self.tokenizer([s for s, _ in good]).input_ids if good else [])
        targets = iter(self.tokenizer([t for _, t in good]).input_ids if good else [])
        eos = self.tokenizer.eos_token_id
        for pair, source, row_id in zip(pairs, batch["source"], batch["row_id"]):
            if isinstance(pair, PairError):
                ids, labels, status, reason = [], [], "rejected", str(pair)
            else:
                ids, labels, status = length_policy(
                    next(sources), next(targets), *self.limits, self.overlong, eos
                )
                reason = ""
            for key, value in zip(out, (ids, labels, status, reason, source, row_id)):
                out[key].append(value)
        return out


def tokenize_seq2seq(
    ds: datasets.Dataset, tokenizer: Any, max_source: int, max_target: int, overlong: str, num_proc: int = 1
) -> datasets.Dataset:
    """Run `Seq2SeqTokenize` over a dataset of conversations (same output columns as the causal map)."""
    from .prepared import map_tokenize, tokenized_row_features

    return map_tokenize(
        ds,
        Seq2SeqTokenize(tokenizer, max_source, max_target, overlong),
        tokenized_row_features(),
        "tokenize (input, target)",
        num_proc,
        SEQ2SEQ,
        str((max_source, max_target, overlong)),
    )


def check_seq2seq_settings(cfg: Any, text: bool, preference: bool) -> None:
    """Refuse prepare settings that have no meaning for encoder-decoder pairs, naming the option."""
    from ..errors import InstructkitError

    why = (
        "raw text (pretraining) rows have no (input, target) split"
        if text
        else "preference pairs are not supported for encoder-decoder models yet"
        if preference
        else "--loss-on all trains on the input, which the decoder never sees"
        if cfg.loss_on == "all"
        else "--overlong split is for pretraining text"
        if cfg.overlong == "split"
        else "--chat-template: encoder-decoder pairs are rendered without a chat template"
        if cfg.chat_template
        else ""
    )
    if why:
        raise InstructkitError(f"tokenizer {cfg.tokenizer!r} is an encoder-decoder model's: {why}")
