"""Raw texts → a pretraining corpus, instruction-augmented or plain, plus gold questions on held-out texts.

What the `corpus` stage of `instructkit run` calls. Both kinds of corpus hold the same raw texts, so
an ablation compares like with like: `augment=True` renders each text with the pairs a synthesizer
wrote for it (varied templates, M-shot documents, see `corpus`); `augment=False` concatenates the texts
alone. `heldout` texts are in both corpora as plain text only: the synthesizer never writes pairs for
them, so their gold questions (generated paragraphs carry them) ask about texts whose QA was never
trained on. A `tiny:` tokenizer is trained on the raw texts alone, so the arms of an ablation share it.
Settings: `config.PretrainCorpusConfig` (the recipe's `corpus:` section plus tokenizer, seed, out).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ..errors import InstructkitError
from ..evaluate.recipe_sets import HELDOUT_QA
from .config import DEFAULT_SYNTHESIZER, GENERATED, CorpusConfig, CorpusDocuments, PretrainCorpusConfig
from .corpus import build_corpus


def build_pretraining_corpus(cfg: PretrainCorpusConfig) -> dict[str, Any]:
    """Write corpus/, tokenizer/ and heldout_qa.jsonl under `cfg.out`; returns the statistics."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_raw(cfg.raw, cfg.texts, cfg.seed)
    held = heldout_indices(len(rows), cfg.heldout, cfg.seed)
    synthesizer = _synthesizer(cfg, out) if cfg.augment else None
    tokenizer = corpus_tokenizer(_tokenizer_name(cfg, synthesizer), [r["text"] for r in rows])
    tokenizer.save_pretrained(str(out / "tokenizer"))
    pairs, generated = _pairs(cfg, synthesizer, rows, held, out) if synthesizer else ({}, None)
    records = [{"id": i, "text": r["text"], "pairs": pairs.get(i, [])} for i, r in enumerate(rows)]
    corpus_cfg = CorpusConfig(
        pairs=str(out / "pairs") if cfg.augment else "",
        out=str(out / "corpus"),
        tokenizer=str(out / "tokenizer"),
        seed=cfg.seed,
        **cfg.model_dump(include=set(CorpusDocuments.model_fields)),
    )
    stats = build_corpus(corpus_cfg, records=records, tokenizer=tokenizer)
    questions = write_heldout_qa(out / HELDOUT_QA, [rows[i] for i in sorted(held)])
    return {**stats, "heldout_texts": len(held), "heldout_questions": questions, "generate": generated}


def read_raw(raw: str, texts: int, seed: int) -> list[dict[str, Any]]:
    """`texts` rows (text, title, qa) of generated paragraphs, or of a raw-text source (no qa)."""
    if raw == GENERATED:
        from .paragraphs import generate_qa_paragraphs

        return [{**r, "title": ""} for r in generate_qa_paragraphs(texts, seed)]
    from .inputs import read_texts

    rows = read_texts(raw, group_field="title", limit=texts)
    return [{"text": r["text"], "title": r["group"] or "", "qa": []} for r in rows]


def heldout_indices(n: int, k: int, seed: int) -> set[int]:
    """A seeded choice of `k` of the `n` texts (kept out of pair generation)."""
    if not 0 <= k < n:
        raise InstructkitError(f"corpus: heldout must be between 0 and texts - 1 ({n - 1}), got {k}")
    return set(random.Random(f"{seed}:heldout").sample(range(n), k))


def corpus_tokenizer(name: str, texts: list[str]):
    """A tiny BPE trained on the raw texts (the same for every arm), or the named tokenizer."""
    from ..models.loading import load_or_train_tokenizer

    return load_or_train_tokenizer(name, lambda: texts)


def _synthesizer(cfg: PretrainCorpusConfig, out: Path) -> str:
    """The synthesizer's model folder; `default` trains the tiny one under `out` (the pipeline's
    `synthesizer` stage trains it once instead and passes its folder)."""
    if cfg.synthesizer != DEFAULT_SYNTHESIZER:
        return cfg.synthesizer
    from .default_synthesizer import train_default_synthesizer

    return str(train_default_synthesizer(out / "default_synthesizer", cfg.size))


def _tokenizer_name(cfg: PretrainCorpusConfig, synthesizer: str | None) -> str:
    """`cfg.tokenizer`, else the synthesizer's; a plain corpus has no synthesizer to take it from."""
    if cfg.tokenizer or synthesizer:
        return cfg.tokenizer or synthesizer
    raise InstructkitError("corpus: a plain corpus (augment false) needs a tokenizer")


def _pairs(
    cfg: PretrainCorpusConfig, synthesizer: str, rows: list[dict[str, Any]], held: set[int], out: Path
) -> tuple[dict[int, list[dict[str, str]]], dict[str, Any]]:
    """The synthesizer's pairs for every text not held out, keyed by row index, and its summary."""
    keep = [i for i in range(len(rows)) if i not in held]
    summary = generate_for_texts(synthesizer, [rows[i] for i in keep], out, cfg.rounds, cfg.max_model_len)
    from .shards import finished_records

    return {keep[r["id"]]: r["pairs"] for r in finished_records(out / "pairs")}, summary


def generate_for_texts(
    model: str, rows: list[dict[str, Any]], out: Path, rounds: int = 2, max_model_len: int | None = None
) -> dict[str, Any]:
    """Pairs for `rows` (text, title) into `out/pairs`, in multi-round chains of consecutive texts."""
    from .generate import GenerateConfig, generate_pairs

    raw_file = out / "raw.jsonl"
    raw_file.write_text("".join(json.dumps({"text": r["text"], "title": r["title"]}) + "\n" for r in rows))
    length = max_model_len or context_length(model)
    cfg = GenerateConfig(
        model=model,
        input=str(raw_file),
        out=str(out / "pairs"),
        group_field="title",
        rounds=rounds,
        max_model_len=length,
        max_new_tokens=length // 2,
        shard_size=max(1, len(rows) // 2),
    )
    return generate_pairs(cfg)


def context_length(model: str, cap: int = 4096) -> int:
    """The synthesizer's position limit (at most `cap`): its prompt + generation budget."""
    from ..models.loading import config_max_positions, load_config

    return min(cap, int(config_max_positions(load_config(model))))


def write_heldout_qa(path: Path, rows: list[dict[str, Any]]) -> int:
    """One line per gold question about a held-out text; returns how many."""
    lines = [
        json.dumps({"text": r["text"], "question": q, "answer": a, "dataset": r.get("dataset", "")})
        for r in rows
        for q, a in r.get("qa") or []
    ]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)
