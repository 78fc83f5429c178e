"""The default instruction synthesizer: a tiny model trained offline, and its response F1 against untrained.

What the pipeline's `synthesizer` stage runs (`corpus.synthesizer: default`): synth_data (procedural
and generated reading comprehension → tokenized few-shot rows, `synth train-data`) → the synthesizer
(`instructkit.train`) → response F1 of the trained and of the same tiny model untrained, on held-out
rows of the seen datasets plus an unseen one. Sizes: `test` (about a minute) and `small` (a few CPU
minutes). `instructkit synth demo` runs the whole path as the shipped recipe `synth_demo`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InstructkitError
from ..jsonl import read_records

UNSEEN = ("reading_who",)


@dataclass(frozen=True)
class SynthesizerSize:
    paragraphs: int  # generated paragraphs per paragraph dataset
    procedural: int  # rows per procedural reading task
    steps: int  # synthesizer optimizer steps
    batch: int
    preset: str  # tiny model preset of the synthesizer
    max_length: int  # tokens per training row / synthesizer context
    eval_rows: int  # held-out rows per split (seen / unseen)
    shots: int  # examples per synthesizer training row
    learning_rate: float  # peak (cosine); 4e-3 left the answer-copying mechanism unlearned


# The tiny synthesizer first learns the format and each question's most frequent answer; copying the
# answer span from the context comes later (an induction-style lookup), so steps matter more than batch.
SIZES = {
    "test": SynthesizerSize(0, 400, 300, 16, "tiny:micro", 96, 30, 2, 1e-3),
    "small": SynthesizerSize(600, 400, 2000, 8, "tiny:micro", 256, 100, 4, 1e-3),
}


def synthesizer_sources(size: SynthesizerSize) -> list[str]:
    """The context-task data the default synthesizer trains on (`synth train-data` sources)."""
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
            sources=synthesizer_sources(s),
            out=str(out / "synth_data"),
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


def synthesizer_f1(out: str | Path, synth: str | Path, size: str = "small") -> dict[str, Any]:
    """Response F1 (seen/unseen datasets) and pair statistics of the synthesizer trained under `out`
    and of the same tiny model untrained, on the same held-out rows; also written to synth_eval.json."""
    out, synth, s = Path(out), Path(synth), _size(size)
    untrained = save_untrained(synth, out / "untrained", s.preset, s.max_length)
    result = {name: _measure(out, model, s) for name, model in (("trained", synth), ("untrained", untrained))}
    (out / "synth_eval.json").write_text(json.dumps(result, indent=2))
    return result


def _measure(out: Path, model: Path, s: SynthesizerSize) -> dict[str, Any]:
    """`evaluate_synthesizer` on the held-out rows of the seen datasets plus an unseen dataset."""
    from .config import MeasureSettings
    from .measure import evaluate_synthesizer

    seen = set(json.loads((out / "synth_data" / "stats.json").read_text())["datasets"])
    settings = MeasureSettings(
        max_model_len=s.max_length, pair_texts=8, pair_max_new_tokens=min(128, s.max_length // 2)
    )
    report = evaluate_synthesizer(str(model), _eval_rows(out, s), seen, settings)
    keys = (
        "response_f1",
        "response_f1_seen",
        "response_f1_unseen",
        "response_f1_by_dataset",
        "pair_statistics",
    )
    return {k: report[k] for k in keys}


def _eval_rows(out: Path, s: SynthesizerSize) -> list[dict[str, str]]:
    from .task_rows import read_task_rows

    held = read_records(out / "synth_data" / "held_out.jsonl")
    random.Random(0).shuffle(held)
    unseen = [r for name in UNSEEN for r in read_task_rows(f"procedural:{name}:{s.eval_rows}")]
    return held[: s.eval_rows] + unseen


def save_untrained(synth: Path, target: Path, preset: str, max_length: int, seed: int = 0) -> Path:
    """The tiny `preset` model, randomly initialised with `seed`, saved with `synth`'s tokenizer."""
    from ..models.loading import load_tokenizer
    from ..models.tiny import build_tiny_model

    tokenizer = load_tokenizer(str(synth))
    model = build_tiny_model(preset, tokenizer, seed=seed, max_position_embeddings=max_length)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def _size(name: str) -> SynthesizerSize:
    if name not in SIZES:
        raise InstructkitError(f"unknown synthesizer size {name!r} (sizes: {', '.join(SIZES)})")
    return SIZES[name]
