"""A synthesizer tuned from a named model (`corpus.synthesizer: trained`), measured against its base.

What the pipeline's `synthesizer` stage runs for `corpus.synthesizer_training` (Instruction
Pre-Training's synthesizer evaluation, Cheng et al. 2024): the context-task rows of `sources` are
split by dataset into seen and unseen (`unseen`, held out whole); the seen ones become few-shot
training rows (`synth train-data`, a share of each dataset's texts held out), the model is tuned on
them (`instructkit.train`), and the tuned model and the untuned base, with the same prompt, write
the response to each held-out row's gold instruction: token F1 per row, per dataset, seen / unseen.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import InstructkitError
from ..jsonl import read_records
from .config import MeasureSettings, SynthesizerTraining, TrainDataConfig

EVAL_FILE = "synth_eval.json"


def train_synthesizer(out: str | Path, spec: SynthesizerTraining, seed: int = 0) -> Path:
    """Write the training rows to `out/synth_data` and tune `spec.model` into `out/synthesizer`."""
    from ..train.config import TrainConfig
    from ..train.run import train
    from .task_rows import read_task_rows
    from .training_data import make_training_data

    out = Path(out)
    rows = [r for source in spec.sources for r in read_task_rows(source)]
    seen_rows, _ = split_unseen(rows, spec.unseen, spec.sources)
    data = TrainDataConfig(
        sources=spec.sources,
        out=str(out / "synth_data"),
        tokenizer=spec.model,
        max_length=spec.max_length,
        max_shots=spec.max_shots,
        holdout=spec.holdout,
        seed=seed,
    )
    make_training_data(data, rows=seen_rows)
    model_dir = out / "synthesizer"
    train(
        TrainConfig(
            data=out / "synth_data",
            output_dir=model_dir,
            model=spec.model,
            objective="sft",
            method=spec.method,
            merge_lora=spec.method == "lora",  # a full model: generation loads it like any other
            max_steps=spec.max_steps,
            micro_batch_size=spec.micro_batch_size,
            gradient_accumulation_steps=spec.gradient_accumulation_steps,
            learning_rate=spec.learning_rate,
            lr_scheduler="cosine",
            warmup_ratio=0.05,
            precision="fp32",
            seed=seed,
            tiny_seed=seed,
            save_steps=10**9,
            logging_steps=max(1, spec.max_steps // 10),
            progress=False,
            overwrite=True,
        )
    )
    return model_dir


def split_unseen(
    rows: list[dict[str, str]], unseen: list[str], sources: list[str]
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(seen rows, unseen rows); an unseen name that no source holds is refused, never ignored."""
    names = {r["dataset"] for r in rows}
    missing = sorted(set(unseen) - names)
    if missing:
        raise InstructkitError(
            f"synthesizer_training.unseen {missing}: no such dataset in {', '.join(sources)} "
            f"(datasets: {', '.join(sorted(names))})"
        )
    return [r for r in rows if r["dataset"] not in unseen], [r for r in rows if r["dataset"] in unseen]


def evaluation_rows(out: Path, spec: SynthesizerTraining, seed: int = 0) -> list[dict[str, str]]:
    """Up to `eval_rows` rows per dataset: held-out texts of seen datasets, any text of unseen ones."""
    from .task_rows import read_task_rows

    held = read_records(out / "synth_data" / "held_out.jsonl")
    rows = [r for source in spec.sources for r in read_task_rows(source)]
    by_dataset: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in held + split_unseen(rows, spec.unseen, spec.sources)[1]:
        by_dataset[row["dataset"]].append(row)
    chosen = []
    for name in sorted(by_dataset):
        group = by_dataset[name]
        random.Random(f"{seed}:{name}:eval").shuffle(group)
        chosen += group[: spec.eval_rows]
    return chosen


def measure_base_and_tuned(out: str | Path, spec: SynthesizerTraining, tuned: Path, seed: int = 0) -> dict:
    """Response F1 (per row, per dataset, seen / unseen) and pair statistics of the untuned base and the
    tuned synthesizer on the same rows; written to `out/synth_eval.json`, returned without the rows."""
    from .default_synthesizer import save_untrained
    from .measure import evaluate_synthesizer

    out = Path(out)
    seen = set(json.loads((out / "synth_data" / "stats.json").read_text())["datasets"])
    rows = evaluation_rows(out, spec, seed)
    base = spec.model
    if base.startswith("tiny"):  # the same tiny architecture, untrained, with the tuned one's tokenizer
        base = str(save_untrained(tuned, out / "base", base, spec.max_model_len, seed))
    settings = MeasureSettings(
        max_model_len=spec.max_model_len,
        max_new_tokens=spec.max_new_tokens,
        pair_texts=spec.pair_texts,
        pair_max_new_tokens=min(spec.pair_max_new_tokens, spec.max_model_len // 2),
    )
    result: dict[str, Any] = {
        "rows": [{"dataset": r["dataset"], "seen": r["dataset"] in seen} for r in rows],
        "seen_datasets": sorted(seen),
        "unseen_datasets": sorted(spec.unseen),
    }
    for name, model in (("base", base), ("tuned", str(tuned))):
        report = evaluate_synthesizer(model, rows, seen, settings)
        if len(report["row_f1"]) != len(rows):
            raise InstructkitError(f"synthesizer {name}: {len(report['row_f1'])} scores for {len(rows)} rows")
        result[name] = report
    (out / EVAL_FILE).write_text(json.dumps(result, indent=2))
    return {name: {k: v for k, v in result[name].items() if k != "row_f1"} for name in ("base", "tuned")}
