"""`instructkit synth ...`: generate pairs, preference pairs, build the augmented corpus, make training data, evaluate, demo.

The options of generate, corpus, train-data and evaluate are derived from their configs in `synth.config`; demo
runs the shipped recipe `synth_demo` through the pipeline of `instructkit run`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from ..executors import ExecutorSettings
from ..synth.config import CorpusConfig, GenerateConfig, SynthEvalConfig, TrainDataConfig
from ..synth.pairs_config import PairsConfig
from .options import config_from, options_from, parse_override

DEMO_RECIPE = "synth_demo"  # src/instructkit/recipes/synth_demo.yaml

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
@options_from(GenerateConfig, ExecutorSettings, aliases={"model": ["-m"], "input": ["-i"], "out": ["-o"]})
def generate(fields: dict, where: ExecutorSettings) -> None:
    """Write instruction–response pairs for each raw text (sharded; a rerun skips finished shards)."""
    from ..synth.generate import generate_pairs

    on_ray = where.checked() == "ray"
    cfg = config_from(GenerateConfig, fields)
    if on_ray:  # --num-workers: actors in the pool (default: one per GPU, else per CPU)
        from ..executors.ray_synth import generate_pairs_ray

        _print(generate_pairs_ray(cfg, where.ray_address))
        return
    _print(generate_pairs(cfg))


@synth_app.command()
@options_from(CorpusConfig, aliases={"out": ["-o"], "plain": ["--raw"], "plain_ratio": ["--raw-ratio"]})
def corpus(fields: dict) -> None:
    """Render texts with their pairs through varied templates and concatenate them M-shot."""
    from ..synth.corpus import build_corpus, corpus_tokenizer_name

    cfg = config_from(CorpusConfig, fields)
    _print(build_corpus(cfg))
    console.print(
        f"next: instructkit data prepare {cfg.out} --tokenizer {corpus_tokenizer_name(cfg)} "
        f"--max-length {cfg.max_length} --pack --overlong split, then instructkit train --objective pretrain"
    )


@synth_app.command("train-data")
@options_from(TrainDataConfig, arguments=["sources"], aliases={"out": ["-o"]})
def train_data(fields: dict) -> None:
    """Turn context-based task data into synthesizer training rows (loss on the pairs only)."""
    from ..synth.training_data import make_training_data

    cfg = config_from(TrainDataConfig, fields)
    _print(make_training_data(cfg))
    model = cfg.tokenizer if cfg.tokenizer.startswith("tiny") else "MODEL"
    console.print(f"next: instructkit train --data {cfg.out} --model {model}")


@synth_app.command()
@options_from(SynthEvalConfig, arguments=["data"], aliases={"model": ["-m"]})
def evaluate(fields: dict) -> None:
    """Response F1 (seen/unseen datasets) and pair statistics of a synthesizer."""
    from ..synth.measure import evaluate_synthesizer
    from ..synth.task_rows import read_task_rows

    cfg = config_from(SynthEvalConfig, fields)
    rows = [r for source in cfg.data for r in read_task_rows(source)]
    names = set(cfg.seen.split(",")) if cfg.seen else None
    if cfg.train_data is not None:
        stats = Path(cfg.train_data) / "stats.json"
        names = (names or set()) | set(json.loads(stats.read_text())["datasets"])
    report = evaluate_synthesizer(cfg.model, rows, names, cfg)
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(report, indent=2))
    _print(report)


@synth_app.command()
@options_from(PairsConfig, aliases={"model": ["-m"], "out": ["-o"]})
def pairs(fields: dict) -> None:
    """Preference pairs from the model's own sampled answers: chosen right, rejected wrong (exact-answer check)."""
    from ..synth.pairs import build_pairs

    cfg = config_from(PairsConfig, fields)
    summary = build_pairs(cfg)
    _print(summary)
    console.print(
        f"next: instructkit data prepare {summary['pairs_file']} --tokenizer {cfg.model} --out PREPARED"
    )


@synth_app.command()
def demo(
    out: Path = typer.Argument(..., help="The run folder: one folder per stage, each with its stage.json."),
    size: str = typer.Option(
        "small", help="Default synthesizer size: test (about a minute) or small (a few CPU minutes)."
    ),
    raw: str | None = typer.Option(
        None, help="Raw text (e.g. wikitext-2_test_paragraphs.jsonl); default: generated paragraphs."
    ),
    overrides: list[str] = typer.Option([], "--set", help="Override a recipe field: --set corpus.texts=8"),
) -> None:
    """The shipped recipe `synth_demo`: train a tiny synthesizer, synthesize pairs, corpus, pretrain."""
    from ..pipeline.recipe import load_recipe
    from ..pipeline.runner import build_pipeline

    where = out.resolve()
    settings = {"runs_dir": str(where.parent), "name": where.name, "corpus.size": size}
    settings.update({"corpus.raw": raw} if raw else {})
    settings.update(parse_override(o) for o in overrides)
    recipe, _ = load_recipe(DEMO_RECIPE, settings)
    records = build_pipeline(recipe).run(log=lambda msg: console.print(msg, highlight=False, markup=False))
    _print(demo_summary(records, where))


def demo_summary(records: dict[str, dict], root: Path) -> dict:
    """What the demo measured, from its stage records: F1 trained vs untrained, pairs, corpus, pretraining."""
    synth, corpus = records["synthesizer"]["summary"], records["corpus"]["summary"]
    generate, train = corpus["generate"], records["train"]["summary"]
    return {
        "response_f1": {k: v["response_f1"] for k, v in synth["response_f1"].items()},
        "pairs": {k: generate[k] for k in ("texts", "pairs") if k in generate},
        "corpus": {k: corpus[k] for k in ("texts", "pairs", "documents")},
        "pretrain": {"steps": train["global_step"], "final_loss": train["final_loss"]},
        "seconds": {name: record["seconds"] for name, record in records.items()},
        "run": str(root),
    }
