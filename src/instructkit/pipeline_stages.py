"""The stage functions of `instructkit run`: thin calls into data, train, evaluate and report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import pipeline_inputs as pin
from .recipe import Recipe
from .stage import Stage


def mixture_stage(recipe: Recipe) -> Stage:
    """Render the recipe's mixture (tasks × templates × formats) to a conversation dataset."""
    config = recipe.mixture

    def run(out: Path, _: dict[str, Path]) -> dict[str, Any]:
        from .data.mixture import build_mixture

        stats = build_mixture(config, out)
        return {"rows": stats.get("rows") or stats.get("total_rows"), "stats_file": str(out / "stats.json")}

    def estimate() -> str:
        from .data.mixture import plan_mixture

        plan = plan_mixture(config)
        tokens = _estimated_tokens(config, len(plan.plan))
        return f"{len(plan.plan):,} rows from {len(plan.tasks)} tasks, ≈{tokens:,} tokens"

    return Stage(
        "mixture",
        config.model_dump(mode="json"),
        [],
        run,
        estimate,
        inputs=lambda: pin.mixture_inputs(config),
        section="mixture",
    )


def _estimated_tokens(config, rows: int, sample: int = 64) -> int:
    """Rows × mean characters of a rendered sample / 4 (a tokenizer-free estimate for the plan)."""
    import tempfile

    import datasets

    from .data.mixture import build_mixture

    with tempfile.TemporaryDirectory() as tmp:
        small = config.model_copy(update={"total": min(sample, rows), "decontaminate": None})
        datasets.disable_progress_bars()
        build_mixture(small, tmp)
        convs = datasets.load_from_disk(tmp)["messages"]
        datasets.enable_progress_bars()
    chars = sum(len(m["content"]) for conv in convs for m in conv) / max(1, len(convs))
    return int(rows * chars / 4)


SYNTHESIZER_LAYOUT = 2  # 2: response F1 of the trained synthesizer and of the untrained model


def synthesizer_stage(recipe: Recipe) -> Stage:
    """Train the default tiny instruction synthesizer and measure its response F1 against untrained."""
    size = recipe.corpus.size

    def run(out: Path, _: dict[str, Path]) -> dict[str, Any]:
        from .synth.default_synthesizer import synthesizer_f1, train_default_synthesizer

        model = train_default_synthesizer(out, size)
        return {"model": str(model), "response_f1": synthesizer_f1(out, model, size)}

    return Stage(
        "synthesizer",
        {"size": size, "layout": SYNTHESIZER_LAYOUT},
        [],
        run,
        lambda: f"tiny synthesizer, size {size}",
        section="corpus",
        aliases={"layout": "synthesizer stage layout"},
    )


def corpus_stage(recipe: Recipe) -> Stage:
    """Raw texts → a pretraining corpus (with synthesized pairs when `augment`) + held-out questions."""
    from .synth.config import DEFAULT_SYNTHESIZER, GENERATED

    spec = recipe.corpus
    default_synth = spec.augment and spec.synthesizer == DEFAULT_SYNTHESIZER
    unused = set() if spec.augment else {"synthesizer", "size", "rounds"}
    settings = {
        **spec.model_dump(mode="json", exclude=unused),
        "tokenizer": recipe.prepare.tokenizer,
        "seed": recipe.seed,
    }

    def run(out: Path, inputs: dict[str, Path]) -> dict[str, Any]:
        from .synth.pretrain_corpus import PretrainCorpusConfig, build_pretraining_corpus

        synth = str(inputs["synthesizer"] / "synthesizer") if default_synth else spec.synthesizer
        fields = {**spec.model_dump(), "synthesizer": synth}
        cfg = PretrainCorpusConfig(
            **fields, out=str(out), tokenizer=recipe.prepare.tokenizer, seed=recipe.seed
        )
        return build_pretraining_corpus(cfg)

    def estimate() -> str:
        kind = "instruction-augmented" if spec.augment else "raw"
        return f"{spec.texts} {spec.raw} texts ({spec.heldout} held out), {kind}"

    def inputs() -> pin.Inputs:
        found = pin.reference_inputs("tokenizer", recipe.prepare.tokenizer, "model")
        if spec.raw != GENERATED:
            found.update(pin.reference_inputs("raw text", spec.raw, "dataset"))
        found.update(pin.reference_inputs("general data", spec.general, "dataset"))
        found.update(pin.reference_inputs("plain text", spec.plain, "dataset"))
        if spec.augment and not default_synth:
            found.update(pin.reference_inputs("synthesizer", spec.synthesizer, "model"))
        return found

    return Stage(
        "corpus",
        settings,
        ["synthesizer"] if default_synth else [],
        run,
        estimate,
        inputs=inputs,
        section="corpus",
        aliases={"tokenizer": "prepare.tokenizer", "seed": "seed"},
    )


def prepare_stage(recipe: Recipe, upstream: str | None) -> Stage:
    """Tokenize with exact masks and pack what the mixture, the corpus or the recipe's sources hold."""
    spec = recipe.prepare
    settings = {**spec.model_dump(mode="json"), "sources": [] if upstream else recipe.sources}

    def run(out: Path, inputs: dict[str, Path]) -> dict[str, Any]:
        from .data.prepare import PrepareConfig, prepare

        fields = spec.model_dump()
        sources = list(recipe.sources)
        if upstream == "mixture":
            sources = [str(inputs["mixture"])]
        elif upstream == "corpus":  # its tokenizer: one BPE shared by every arm of an ablation
            corpus = inputs["corpus"]
            sources, fields["tokenizer"] = [str(corpus / "corpus")], str(corpus / "tokenizer")
        cfg = PrepareConfig(**{**fields, "sources": sources, "out": str(out)})
        stats = prepare(cfg)
        keys = ("examples_out", "tokens", "trainable_tokens", "packs", "packing_efficiency")
        return {k: stats.get(k) for k in keys}

    def inputs() -> pin.Inputs:
        found = {} if upstream else pin.sources_inputs(recipe.sources)
        if upstream != "corpus":  # a corpus brings its own tokenizer
            found.update(pin.reference_inputs("tokenizer", spec.tokenizer, "model"))
        found.update(pin.file_setting_inputs("chat template", spec.chat_template))
        return found

    return Stage(
        "prepare",
        settings,
        [upstream] if upstream else [],
        run,
        inputs=inputs,
        section="prepare",
        aliases={"sources": "sources"},
    )


def train_stage(recipe: Recipe) -> Stage:
    """Train on the prepared rows; resumes from the stage directory's last checkpoint."""
    settings = recipe.train.model_dump(mode="json")

    def run(out: Path, inputs: dict[str, Path]) -> dict[str, Any]:
        from .train.config import TrainConfig
        from .train.run import train

        resume = any(out.glob("checkpoint-*"))
        fields = {**recipe.train.model_dump(), "resume": resume}
        config = TrainConfig(data=inputs["prepare"], output_dir=out, **fields)
        result = train(config)
        return {
            "global_step": result.global_step,
            "final_loss": result.final_loss,
            "train_loss": result.train_loss,
            "effective_batch_tokens": result.effective_batch_tokens,
        }

    def estimate() -> str:
        steps = recipe.train.max_steps
        return f"{steps} steps" if steps > 0 else f"{recipe.train.epochs:g} epochs"

    model = recipe.train.model
    return Stage(
        "train",
        settings,
        ["prepare"],
        run,
        estimate,
        inputs=lambda: pin.reference_inputs("model", model, "model"),
        section="train",
    )


def eval_stage(recipe: Recipe, which: str) -> Stage:
    """Evaluate the base (untrained) or tuned model on every eval set and benchmark of the recipe."""
    spec = recipe.evaluate
    name = f"eval-{which}"
    needs = ["prepare", "train"] if which == "tuned" else ["prepare"]
    needs += ["corpus"] if recipe.corpus else []
    settings = {
        **spec.model_dump(mode="json"),
        "which": which,
        "model": recipe.train.model,
        "tiny_seed": recipe.train.tiny_seed,
        "holdout": _holdout(recipe),
    }

    def run(out: Path, inputs: dict[str, Path]) -> dict[str, Any]:
        from .evaluate.recipe_sets import eval_tasks
        from .evaluate.runner import evaluate

        model, tokenizer = _load_for_eval(recipe, which, inputs)
        tasks = eval_tasks(spec, recipe.mixture, recipe.seed, inputs.get("corpus"))
        config = spec.eval_config(recipe.seed, _default_data_dir())
        results = evaluate(model, tokenizer, tasks=tasks, out_dir=out, config=config)
        return {"normalized_average": results.get("normalized_average"), "tasks": len(results["tasks"])}

    return Stage(
        name,
        settings,
        needs,
        run,
        inputs=lambda: _eval_inputs(recipe, which),
        section="evaluate",
        aliases={
            "which": "which",
            "model": "train.model",
            "tiny_seed": "train.tiny_seed",
            "holdout": "mixture.holdout_clusters",
        },
    )


def _eval_inputs(recipe: Recipe, which: str) -> pin.Inputs:
    """The base model (when evaluated), the eval sets' task files and data, the benchmark data."""
    from .evaluate.recipe_sets import recipe_catalog, set_tasks

    spec = recipe.evaluate
    found = {}
    if which == "base":
        found.update(pin.reference_inputs("model", recipe.train.model, "model"))
    catalog_sets = [s for s in spec.sets if s.kind == "catalog"]
    if catalog_sets:
        catalog = recipe_catalog(recipe.mixture)
        tasks = {t.name: t for s in catalog_sets for t in set_tasks(s, recipe.mixture, catalog)}
        found.update(pin.task_inputs(tasks.values(), None))
    data_dir = spec.data_dir or _default_data_dir()
    found.update(pin.benchmark_inputs(spec.suite, list(spec.benchmarks), data_dir))
    return found


def _holdout(recipe: Recipe) -> list[str]:
    return list(recipe.mixture.holdout_clusters) if recipe.mixture else []


def _default_data_dir() -> str | None:
    from .data.tasks import data_root

    try:
        root = data_root()
    except Exception:  # noqa: BLE001 - no shared data: benchmarks then need the hub
        return None
    return str(root) if Path(root).is_dir() else None


def _load_for_eval(recipe: Recipe, which: str, inputs: dict[str, Path]):
    """The tuned model from the train stage, or the base model exactly as training started from it."""
    import torch

    from .models.loading import load_causal_lm, load_tokenizer
    from .models.tiny import build_tiny_model, is_tiny

    # The tokenizer the data was prepared (and the model trained) with; fp32 like training.
    tokenizer = load_tokenizer(str(inputs["prepare"] / "tokenizer"))
    trust = recipe.train.trust_remote_code
    if which == "tuned":
        model = load_causal_lm(str(inputs["train"]), trust_remote_code=trust, dtype=torch.float32)
    elif is_tiny(recipe.train.model):
        model = build_tiny_model(recipe.train.model, tokenizer, seed=recipe.train.tiny_seed)
    else:
        model = load_causal_lm(recipe.train.model, trust_remote_code=trust, dtype=torch.float32)
    model.eval()
    return model, tokenizer


REPORT_LAYOUT = 2  # 2: report.html, intervals and paired tests


def report_stage(recipe: Recipe) -> Stage:
    """Write report.md and charts comparing base and tuned, plus the training loss curve."""
    needs = ["train", "eval-tuned"] + (["eval-base"] if recipe.evaluate.compare_base else [])

    def run(out: Path, inputs: dict[str, Path]) -> dict[str, Any]:
        from .run_report import write_run_report

        path = write_run_report(recipe, inputs, out)
        return {"report": str(path)}

    # The layout version makes runs reported before report.html existed rebuild their report once.
    settings = {"name": recipe.name, "layout": REPORT_LAYOUT}
    return Stage("report", settings, needs, run, aliases={"name": "name", "layout": "report layout"})
