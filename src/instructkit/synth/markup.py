"""The published instruction-synthesizer format (Instruction Pre-Training), byte-exact.

A synthesizer reads  `<s> <CON> {context} </CON>\\n\\n`  and continues with pairs
`<QUE> {instruction} <ANS> {response} </END>` joined by `\\n\\n`, ending with `</s>`. In multi-round
inference earlier rounds are prepended whole: `<s> <CON> {c1} </CON>\\n\\n{pairs1}</s><s> <CON> {c2} ...`.
These strings match the released `instruction-pretrain/instruction-synthesizer` code, so that
checkpoint works unchanged.

`<s>` and `</s>` in that text *are* the BOS and EOS tokens (the released Mistral tokenizer maps the
text `<s>` to its BOS id). So every string here is tokenized with `add_special_tokens=False`: the BOS
appears exactly once even for tokenizers that would add their own, and `SynthFormat.for_tokenizer`
writes the tokenizer's own BOS/EOS text in place of `<s>`/`</s>` (no marker when it has no BOS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CON_OPEN, CON_CLOSE = "<CON>", "</CON>"
QUE, ANS, END = "<QUE>", "<ANS>", "</END>"
DELIMITER = "\n\n"
READ_TEMPLATE = " <CON> {context} </CON>"  # the leading space is part of the format
PAIR_TEMPLATE = "<QUE> {instruction} <ANS> {response} </END>"


@dataclass(frozen=True)
class Pair:
    """One instruction–response pair about a text."""

    instruction: str
    response: str

    def to_dict(self) -> dict[str, str]:
        return {"instruction": self.instruction, "response": self.response}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> Pair:
        return cls(str(d["instruction"]), str(d["response"]))


@dataclass(frozen=True)
class SynthFormat:
    """The published format with the BOS/EOS text of a concrete tokenizer (default: `<s>`, `</s>`)."""

    bos: str = "<s>"
    eos: str = "</s>"

    @classmethod
    def for_tokenizer(cls, tokenizer) -> SynthFormat:
        """Use the tokenizer's BOS/EOS text, so the markers become exactly one special token each."""
        return cls(bos=tokenizer.bos_token or "", eos=tokenizer.eos_token or "")

    def read(self, context: str) -> str:
        """The reading block that opens every example: `<s> <CON> {context} </CON>\\n\\n`."""
        return self.bos + READ_TEMPLATE.format(context=context) + DELIMITER

    def pairs(self, pairs: Sequence[Pair]) -> str:
        """The comprehension block: pairs joined by a blank line (no trailing delimiter)."""
        return DELIMITER.join(
            PAIR_TEMPLATE.format(instruction=p.instruction, response=p.response) for p in pairs
        )

    def example(self, context: str, pairs: Sequence[Pair]) -> str:
        """One whole example as text: reading block, pairs, EOS (what earlier rounds contribute)."""
        return self.read(context) + self.pairs(pairs) + self.eos

    def question(self, context: str, instruction: str) -> str:
        """Prompt for response accuracy: the model writes ` {response} </END>` next."""
        return self.read(context) + f"{QUE} {instruction} {ANS}"


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of format text; special tokens come only from the text itself, never added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_split(tokenizer, head: str, tail: str) -> tuple[list[int], int]:
    """Ids of `head + tail` and the length of head's ids, split as inference splits prompt and output.

    The whole text is tokenized at once when that keeps head's tokens as a prefix (SentencePiece);
    otherwise the parts separately (byte-level BPE merges the `\\n\\n` before `<QUE>` differently
    at the end of a string), so training examples and prompts see the same tokens at the boundary.
    """
    head_ids = encode(tokenizer, head)
    whole = encode(tokenizer, head + tail)
    if whole[: len(head_ids)] == head_ids:
        return whole, len(head_ids)
    return head_ids + encode(tokenizer, tail), len(head_ids)


def encode_example(tokenizer, fmt: SynthFormat, context: str, pairs: Sequence[Pair]) -> tuple[list[int], int]:
    """Ids of one whole example and the length of its reading block (where the pairs' labels start)."""
    return encode_split(tokenizer, fmt.read(context), fmt.pairs(pairs) + fmt.eos)


def encode_question(tokenizer, fmt: SynthFormat, context: str, instruction: str) -> list[int]:
    """Ids of the response-accuracy prompt, split like `encode_example` so the model sees trained tokens."""
    read = fmt.read(context)
    ids, _ = encode_split(tokenizer, read, fmt.question(context, instruction)[len(read) :])
    return ids
