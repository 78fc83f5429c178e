"""`synth corpus`: raw texts with their pairs → an instruction-augmented pretraining corpus (M-shot).

Each text is rendered with a seeded template (see `templates`), consecutive rendered texts are
concatenated into documents up to `max_length` tokens (EOS included, which `data prepare` appends),
and the documents are optionally mixed with general instruction data and plain text at given ratios
(settings: `config.CorpusConfig`). The output is a `datasets` folder with a `text` column:
`instructkit data prepare` reads it as pretraining text (loss on every token) for
`instructkit train --objective pretrain`.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import InstructkitError
from .config import CorpusConfig
from .corpus_templates import render
from .markup import Pair
from .shards import finished_records, read_jsonl

DOC_SEPARATORS = ["\n\n\n", "\n\n", "\n\n---\n\n"]


class TokenCounter:
    """Token lengths as the training tokenizer counts them (no special tokens added)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chunks(self, text: str, budget: int) -> list[str]:
        """Cut `text` at token boundaries into pieces of ≤ budget tokens whose concatenation is `text`."""
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
        pieces, start, k = [], 0, budget
        while k < len(offsets):
            cut = offsets[k][0]
            pieces.append(text[start:cut])
            start, k = cut, k + budget
        pieces.append(text[start:])
        return [p for p in pieces if p]


def render_records(records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Each record's text and pairs through its seeded template."""
    out = []
    for i, record in enumerate(records):
        pairs = [Pair.from_dict(p) for p in record.get("pairs") or []]
        template, text = render(record["text"], pairs, random.Random(f"{seed}:{record.get('id', i)}"))
        out.append({"text": text, "template": template, "pairs": len(pairs)})
    return out


def concatenate(pieces: list[str], count: TokenCounter, budget: int, separator: str) -> list[str]:
    """Greedy M-shot documents of consecutive pieces, each ≤ budget tokens (checked on the joined text)."""
    queue = [c for p in pieces for c in (count.chunks(p, budget) if count(p) > budget else [p])]
    docs: list[str] = []
    i = 0
    while i < len(queue):
        doc, used, j = queue[i], count(queue[i]), i + 1
        while j < len(queue) and used + count(separator) + count(queue[j]) <= budget:
            candidate = doc + separator + queue[j]
            if count(candidate) > budget:
                break
            doc, used, j = candidate, count(candidate), j + 1
        if count(doc) > budget:  # a chunk re-tokenized longer than its cut: split it finer
            queue[i : i + 1] = count.chunks(doc, max(1, budget // 2))
            continue
        docs.append(doc)
        i = j
    return docs


def build_corpus(
    cfg: CorpusConfig, records: list[dict[str, Any]] | None = None, tokenizer=None
) -> dict[str, Any]:
    """Write the augmented (and mixed) corpus to `cfg.out`; returns the statistics."""
    from ..models.loading import load_tokenizer

    records = records if records is not None else read_pair_records(cfg.pairs)
    count = TokenCounter(tokenizer or load_tokenizer(corpus_tokenizer_name(cfg)))
    budget = cfg.max_length - 1  # room for the EOS that preparation appends
    rendered = render_records(records, cfg.seed)
    separator = random.Random(f"{cfg.seed}:separator").choice(DOC_SEPARATORS)
    docs = [
        {"text": d, "source": "augmented"}
        for d in concatenate([r["text"] for r in rendered], count, budget, separator)
    ]
    n_aug = len(docs)
    docs += _mixed(cfg.general, cfg.general_ratio, n_aug, "general", _general_texts, count, budget, cfg.seed)
    docs += _mixed(cfg.plain, cfg.plain_ratio, n_aug, "plain", _plain_texts, count, budget, cfg.seed)
    random.Random(f"{cfg.seed}:shuffle").shuffle(docs)
    stats = {
        "texts": len(records),
        "pairs": sum(r["pairs"] for r in rendered),
        "templates": dict(sorted(Counter(r["template"] for r in rendered).items())),
        "documents": dict(sorted(Counter(d["source"] for d in docs).items())),
        "max_tokens": max((count(d["text"]) + 1 for d in docs), default=0),
        "max_length": cfg.max_length,
    }
    _write(cfg, docs, stats)
    return stats


def corpus_tokenizer_name(cfg: CorpusConfig) -> str:
    """`cfg.tokenizer`, or (unset) the synthesizer's that wrote the pairs of a `synth generate` folder."""
    if cfg.tokenizer:
        return cfg.tokenizer
    config = Path(cfg.pairs) / "config.json"
    if not config.is_file():
        raise InstructkitError(f"{cfg.pairs}: not a `synth generate` folder; give the corpus a tokenizer")
    return json.loads(config.read_text())["plan"]["model"]


def read_pair_records(path: str) -> list[dict[str, Any]]:
    """Records with `text` and `pairs` from a `synth generate` folder or a JSONL file."""
    p = Path(path)
    if p.is_dir():
        records = finished_records(p)
        summary = p / "summary.json"
        if summary.is_file() and not json.loads(summary.read_text()).get("complete", True):
            raise InstructkitError(f"{p}: generation is not complete (rerun `synth generate` to finish it)")
    elif p.is_file():
        records = read_jsonl(p)
    else:
        raise InstructkitError(f"{p}: no such file or folder")
    if not records:
        raise InstructkitError(f"{p}: no records with text and pairs")
    return records


def _mixed(source, ratio, n_aug, name, reader, count, budget, seed) -> list[dict[str, str]]:
    """round(ratio × augmented documents) documents drawn (seeded, without replacement) from `source`."""
    if not source or ratio <= 0:
        return []
    texts = [c for t in reader(source) for c in (count.chunks(t, budget) if count(t) > budget else [t])]
    want = round(ratio * n_aug)
    if want > len(texts):
        raise InstructkitError(f"{source}: {len(texts)} {name} documents, but ratio {ratio} needs {want}")
    return [{"text": t, "source": name} for t in random.Random(f"{seed}:{name}").sample(texts, want)]


def _general_texts(source: str) -> list[str]:
    """General instruction data as plain text: the conversation's turns separated by blank lines."""
    from ..data.converters import detect_input_format, to_conversation
    from ..data.sources import iter_source_rows

    texts = []
    for raw in iter_source_rows(source):
        if raw.error is not None:
            raise raw.error
        conv = to_conversation(raw.record, detect_input_format(raw.record.keys()), raw.file, raw.row)
        texts.append("\n\n".join(m.content for m in conv.messages))
    return texts


def _plain_texts(source: str) -> list[str]:
    from .inputs import read_texts

    return [r["text"] for r in read_texts(source)]


def _write(cfg: CorpusConfig, docs: list[dict[str, str]], stats: dict[str, Any]) -> None:
    import datasets

    from ..atomic import atomic_dir

    rows = [{"text": d["text"], "source": d["source"], "row_id": i} for i, d in enumerate(docs)]
    with atomic_dir(cfg.out) as tmp:
        datasets.Dataset.from_list(rows).save_to_disk(str(tmp))
        (tmp / "corpus.json").write_text(json.dumps({"config": cfg.model_dump(), "stats": stats}, indent=2))
