"""`instructkit synth ...`: generate pairs, build the augmented corpus, make training data, evaluate, demo."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from ..executors import EXECUTOR_HELP, RAY_ADDRESS_HELP, check_executor

synth_app = typer.Typer(
    help="Instruction Pre-Training: synthesize instruction–response pairs for raw text.", no_args_is_help=True
)
console = Console()


def register(app: typer.Typer) -> None:
    """Add the `synth` command group to the root app."""
    app.add_typer(synth_app, name="synth")


def _print(obj: dict) -> None:
    console.print_json(json.dumps(obj, default=str))


@synth_app.command()
def generate(
    input: str = typer.Option(
        ..., "--input", "-i", help="Raw texts: JSONL/JSON/Parquet/CSV, saved dataset, .txt."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (shards/, config.json, summary.json)."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Synthesizer path or hub id; none: train the tiny default."
    ),
    rounds: int = typer.Option(2, help="Texts per multi-round chain."),
    max_model_len: int = typer.Option(4096, help="Prompt + generation budget in tokens."),
    max_new_tokens: int = typer.Option(400, help="Generated tokens per text."),
    backend: str = typer.Option("hf", help="hf (batched generate with KV cache) or vllm (GPU)."),
    batch_size: int = typer.Option(16, help="Prompts per generate call (hf backend)."),
    shard_size: int = typer.Option(1000, help="Texts per shard."),
    num_workers: int = typer.Option(1, help="Parallel processes over shards (one GPU each where present)."),
    max_shards: int | None = typer.Option(None, help="Stop after this many unfinished shards."),
    limit: int | None = typer.Option(None, help="Read only the first N texts."),
    text_field: str = typer.Option("text", help="Column holding the raw text."),
    group_field: str | None = typer.Option(None, help="Column grouping texts of one document into chains."),
    executor: str = typer.Option("local", help=EXECUTOR_HELP),
    ray_address: str | None = typer.Option(None, help=RAY_ADDRESS_HELP),
) -> None:
    """Write instruction–response pairs for each raw text (sharded; a rerun skips finished shards)."""
    from .generate import GenerateConfig, generate_pairs

    on_ray = check_executor(executor, ray_address) == "ray"

    if model is None:
        from .demo import SIZES, train_default_synthesizer

        model = str(train_default_synthesizer(out / "default_synthesizer", "small"))
        max_model_len = min(max_model_len, SIZES["small"].max_length)
        max_new_tokens = min(max_new_tokens, max_model_len // 2)
        console.print(
            f"no --model: using the tiny default synthesizer {model} (context {max_model_len} tokens)"
        )
    cfg = GenerateConfig(
        model=model,
        input=input,
        out=str(out),
        text_field=text_field,
        group_field=group_field,
        rounds=rounds,
        max_model_len=max_model_len,
        max_new_tokens=max_new_tokens,
        backend=backend,
        batch_size=batch_size,
        shard_size=shard_size,
        num_workers=num_workers,
        max_shards=max_shards,
        limit=limit,
    )
    if on_ray:  # --num-workers: actors in the pool (default: one per GPU, else per CPU)
        from ..executors.ray_synth import generate_pairs_ray

        _print(generate_pairs_ray(cfg, ray_address))
        return
    _print(generate_pairs(cfg))


@synth_app.command()
def corpus(
    pairs: str = typer.Option(
        ..., "--pairs", help="A `synth generate` folder or JSONL rows with text + pairs."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset folder (a `text` column)."),
    max_length: int = typer.Option(2048, help="Tokens per document, EOS included."),
    tokenizer: str | None = typer.Option(
        None, help="Tokenizer of the model to pretrain; default: the synthesizer's."
    ),
    general: str | None = typer.Option(None, help="General instruction data to mix in."),
    general_ratio: float = typer.Option(0.0, help="General examples per augmented document (paper: 1.0)."),
    raw: str | None = typer.Option(None, help="Plain raw text to mix in."),
    raw_ratio: float = typer.Option(0.0, help="Raw documents per augmented document."),
    seed: int = typer.Option(0),
) -> None:
    """Render texts with their pairs through varied templates and concatenate them M-shot."""
    from .corpus import CorpusConfig, build_corpus

    tokenizer = tokenizer or _synthesizer_of(pairs)
    cfg = CorpusConfig(
        pairs=pairs,
        out=str(out),
        tokenizer=tokenizer,
        max_length=max_length,
        general=general,
        general_ratio=general_ratio,
        raw=raw,
        raw_ratio=raw_ratio,
        seed=seed,
    )
    _print(build_corpus(cfg))
    console.print(
        f"next: instructkit data prepare {out} --tokenizer {tokenizer} --max-length {max_length} "
        "--pack --overlong split, then instructkit train --objective pretrain"
    )


def _synthesizer_of(pairs: str) -> str:
    from ..errors import InstructkitError

    config = Path(pairs) / "config.json"
    if not config.is_file():
        raise InstructkitError("give --tokenizer (the pairs do not come from a `synth generate` folder)")
    return json.loads(config.read_text())["plan"]["model"]


@synth_app.command("train-data")
def train_data(
    sources: list[str] = typer.Argument(
        ..., help="Context-task data, or procedural:NAME[:N] / paragraphs:NAME[:N]."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder in the `data prepare` layout."),
    tokenizer: str = typer.Option("tiny:micro", help="Tokenizer path/hub id, or tiny[:preset] to train one."),
    max_length: int = typer.Option(1024, help="Tokens per training row."),
    max_shots: int = typer.Option(4, help="Examples of one dataset per row."),
    holdout: float = typer.Option(
        0.0, help="Share of each dataset's examples held out for `synth evaluate`."
    ),
    seed: int = typer.Option(0),
) -> None:
    """Turn context-based task data into synthesizer training rows (loss on the pairs only)."""
    from .training_data import TrainDataConfig, make_training_data

    cfg = TrainDataConfig(
        sources=sources,
        out=str(out),
        tokenizer=tokenizer,
        max_length=max_length,
        max_shots=max_shots,
        holdout=holdout,
        seed=seed,
    )
    _print(make_training_data(cfg))
    console.print(
        f"next: instructkit train --data {out} --model {tokenizer if tokenizer.startswith('tiny') else 'MODEL'}"
    )


@synth_app.command()
def evaluate(
    model: str = typer.Option(..., "--model", "-m", help="Synthesizer path or hub id."),
    data: list[str] = typer.Argument(
        ..., help="Context-task rows (e.g. a train-data folder's held_out.jsonl)."
    ),
    train_data: Path | None = typer.Option(
        None, help="The synthesizer's train-data folder: its datasets are 'seen'."
    ),
    seen: str | None = typer.Option(None, help="Comma-separated dataset names seen in training."),
    backend: str = typer.Option("hf"),
    batch_size: int = typer.Option(16),
    max_model_len: int = typer.Option(4096),
    out: Path | None = typer.Option(None, help="Write the report JSON here."),
) -> None:
    """Response F1 (seen/unseen datasets) and pair statistics of a synthesizer."""
    from .measure import evaluate_synthesizer
    from .task_rows import read_task_rows

    rows = [r for source in data for r in read_task_rows(source)]
    names = set(seen.split(",")) if seen else None
    if train_data is not None:
        names = (names or set()) | set(json.loads((train_data / "stats.json").read_text())["datasets"])
    report = evaluate_synthesizer(
        model, rows, names, backend=backend, batch_size=batch_size, max_model_len=max_model_len
    )
    if out:
        out.write_text(json.dumps(report, indent=2))
    _print(report)


@synth_app.command()
def demo(
    out: Path = typer.Argument(..., help="Folder for every stage's output and report.json."),
    size: str = typer.Option("small", help="test (about a minute) or small (a few CPU minutes)."),
    raw: str | None = typer.Option(
        None, help="Raw text (e.g. wikitext-2_test_paragraphs.jsonl); default: generated."
    ),
) -> None:
    """Embedded default: train a tiny synthesizer, synthesize pairs, build a corpus, pretrain on it."""
    from .demo import run_default_demo

    report = run_default_demo(out, size, raw)
    _print(
        {
            "response_f1": {k: v["response_f1"] for k, v in report["response_f1"].items()},
            "seconds": report["seconds"],
            "report": str(out / "report.json"),
        }
    )
