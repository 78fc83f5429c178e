"""The embedded default: train a tiny synthesizer offline, then run the whole Instruction Pre-Training path.

Stages (each writes a folder under `out_dir`, and `report.json` sums them up):
synth_data (procedural + generated reading comprehension → tokenized few-shot rows) → synthesizer
(`instructkit.train`) → response F1 of trained vs untrained model on held-out rows → pairs for raw
text (WikiText paragraphs when given, else generated paragraphs) → augmented corpus → a tiny model
pretrained on it. Sizes: `test` (seconds to a minute) and `small` (a few CPU minutes).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import InstructkitError

UNSEEN = ("reading_who",)


@dataclass(frozen=True)
class DemoSize:
    paragraphs: int  # generated paragraphs per paragraph dataset
    procedural: int  # rows per procedural reading task
    steps: int  # synthesizer optimizer steps
    batch: int
    preset: str  # tiny model preset of the synthesizer
    max_length: int  # tokens per training row / synthesizer context
    raw_texts: int  # raw texts to synthesize pairs for
    eval_rows: int  # held-out rows per split (seen / unseen)
    pretrain_steps: int
    shots: int  # examples per synthesizer training row
    learning_rate: float  # peak (cosine); 4e-3 left the answer-copying mechanism unlearned


# The tiny synthesizer first learns the format and each question's most frequent answer; copying the
# answer span from the context comes later (an induction-style lookup), so steps matter more than batch.
SIZES = {
    "test": DemoSize(0, 400, 300, 16, "tiny:micro", 96, 6, 30, 2, 2, 1e-3),
    "small": DemoSize(600, 400, 2000, 8, "tiny:micro", 256, 64, 100, 40, 4, 1e-3),
}


def synthesizer_sources(size: DemoSize) -> list[str]:
    return [
        f"paragraphs:people:{size.paragraphs}",
        f"paragraphs:towns:{size.paragraphs}",
        f"procedural:reading_where:{size.procedural}",
        f"procedural:reading_what:{size.procedural}",
    ]


def train_default_synthesizer(out_dir: str | Path, size: str = "small") -> Path:
    """Train (or reuse, when already finished) the tiny synthesizer; returns its model folder."""
    from ..train.config import TrainConfig
    from ..train.run import train
    from .training_data import TrainDataConfig, make_training_data

    s, out = _size(size), Path(out_dir)
    model_dir = out / "synthesizer"
    if (model_dir / "model.safetensors").is_file():
        return model_dir
    make_training_data(
        TrainDataConfig(
            synthesizer_sources(s),
            str(out / "synth_data"),
            tokenizer=s.preset,
            max_length=s.max_length,
            max_shots=s.shots,
            holdout=0.1,
        )
    )
    train(
        TrainConfig(
            data=out / "synth_data",
            output_dir=model_dir,
            model=s.preset,
            objective="sft",
            max_steps=s.steps,
            micro_batch_size=s.batch,
            gradient_accumulation_steps=1,
            learning_rate=s.learning_rate,
            lr_scheduler="cosine",
            warmup_ratio=0.05,
            save_steps=10**9,
            logging_steps=max(1, s.steps // 10),
            progress=False,
            overwrite=True,
        )
    )
    return model_dir


def run_default_demo(out_dir: str | Path, size: str = "small", raw: str | None = None) -> dict[str, Any]:
    """Run every stage on CPU; returns (and writes to report.json) the measured numbers."""
    s, out = _size(size), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    synth = train_default_synthesizer(out, size)
    seconds["train_synthesizer"] = _lap(t)
    report: dict[str, Any] = {"size": asdict(s), "synthesizer": str(synth)}
    t = time.perf_counter()
    report["response_f1"] = _compare_f1(out, synth, s)
    seconds["evaluate"] = _lap(t)
    t = time.perf_counter()
    report["generate"] = _generate(out, synth, s, raw)
    seconds["generate_pairs"] = _lap(t)
    t = time.perf_counter()
    report["corpus"], report["pretrain"] = _corpus_and_pretrain(out, synth, s)
    seconds["corpus_and_pretrain"] = _lap(t)
    report["seconds"] = seconds
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def synthesizer_f1(out: str | Path, synth: str | Path, size: str = "small") -> dict[str, Any]:
    """Response F1 (seen/unseen datasets) and pair statistics of the synthesizer trained under `out`."""
    return _measure(Path(out), Path(synth), _size(size))


def _compare_f1(out: Path, synth: Path, s: DemoSize) -> dict[str, Any]:
    """Response F1 of the trained synthesizer and of the same tiny model untrained, on held-out rows."""
    untrained = _save_untrained(synth, out / "untrained", s.preset, s.max_length)
    result = {name: _measure(out, model, s) for name, model in (("trained", synth), ("untrained", untrained))}
    (out / "synth_eval.json").write_text(json.dumps(result, indent=2))
    return result


def _measure(out: Path, model: Path, s: DemoSize) -> dict[str, Any]:
    """`evaluate_synthesizer` on the held-out rows of the seen datasets plus an unseen dataset."""
    from .measure import evaluate_synthesizer

    seen = set(json.loads((out / "synth_data" / "stats.json").read_text())["datasets"])
    report = evaluate_synthesizer(
        str(model),
        _eval_rows(out, s),
        seen,
        max_model_len=s.max_length,
        pair_texts=8,
        pair_max_new_tokens=min(128, s.max_length // 2),
    )
    keys = (
        "response_f1",
        "response_f1_seen",
        "response_f1_unseen",
        "response_f1_by_dataset",
        "pair_statistics",
    )
    return {k: report[k] for k in keys}


def _eval_rows(out: Path, s: DemoSize) -> list[dict[str, str]]:
    from .task_rows import read_task_rows

    held = [json.loads(line) for line in (out / "synth_data" / "held_out.jsonl").read_text().splitlines()]
    random.Random(0).shuffle(held)
    unseen = [r for name in UNSEEN for r in read_task_rows(f"procedural:{name}:{s.eval_rows}")]
    return held[: s.eval_rows] + unseen


def _save_untrained(synth: Path, target: Path, preset: str, max_length: int) -> Path:
    from ..models.loading import load_tokenizer
    from ..models.tiny import build_tiny_model

    tokenizer = load_tokenizer(str(synth))
    build_tiny_model(preset, tokenizer, seed=0, max_position_embeddings=max_length).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def _generate(out: Path, synth: Path, s: DemoSize, raw: str | None) -> dict[str, Any]:
    """Pairs for the raw texts in 2-round chains (articles keep their paragraphs together)."""
    from .pretrain_corpus import GENERATED, generate_for_texts, read_raw

    rows = read_raw(raw or GENERATED, s.raw_texts, seed=0)
    return generate_for_texts(str(synth), rows, out, rounds=2, max_model_len=s.max_length)


def _corpus_and_pretrain(out: Path, synth: Path, s: DemoSize) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build the augmented corpus, prepare it as pretraining text and pretrain a tiny model on it."""
    from ..data.prepare import PrepareConfig, prepare
    from ..train.config import TrainConfig
    from ..train.run import train
    from .corpus import CorpusConfig, build_corpus

    corpus = build_corpus(
        CorpusConfig(
            pairs=str(out / "pairs"), out=str(out / "corpus"), tokenizer=str(synth), max_length=s.max_length
        )
    )
    prepared = prepare(
        PrepareConfig(
            sources=[str(out / "corpus")],
            tokenizer=str(synth),
            out=str(out / "pretrain_data"),
            max_length=s.max_length,
            pack=True,
            overlong="split",
            loss_on="all",
        ),
        progress=False,
    )
    result = train(
        TrainConfig(
            data=out / "pretrain_data",
            output_dir=out / "pretrained",
            model="tiny:nano",
            objective="pretrain",
            max_steps=s.pretrain_steps,
            micro_batch_size=4,
            gradient_accumulation_steps=1,
            save_steps=10**9,
            progress=False,
            overwrite=True,
            logging_steps=max(1, s.pretrain_steps // 4),
        )
    )
    return corpus, {
        "examples": prepared["examples_out"],
        "tokens": prepared["tokens"],
        "steps": result.global_step,
        "train_loss": round(result.train_loss, 4),
    }


def _size(name: str) -> DemoSize:
    if name not in SIZES:
        raise InstructkitError(f"unknown demo size {name!r} (sizes: {', '.join(SIZES)})")
    return SIZES[name]


def _lap(start: float) -> float:
    return round(time.perf_counter() - start, 1)
