"""The stage functions of `instructkit run`: thin calls into data, train, evaluate and report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..errors import InstructkitError
from . import inputs as pin
from .recipe import Recipe
from .stage import Stage


def mixture_stage(recipe: Recipe) -> Stage:
    """Render the recipe's mixture (tasks × templates × formats) to a conversation dataset."""
    config = recipe.mixture

    def run(out: Path, _: dict[str, Path]) -> dict[str, Any]:
        from ..data.mixture import build_mixture

        stats = build_mixture(config, out)
        return {"rows": stats.get("rows") or stats.get("total_rows"), "stats_file": str(out / "stats.json")}

    def estimate() -> str:
        from ..data.mixture import plan_mixture

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

    from ..data.mixture import build_mixture

    with tempfile.TemporaryDirectory() as tmp:
        small = config.model_copy(update={"total": min(sample, rows), "decontaminate": None})
        bars_on = datasets.is_progress_bar_enabled()  # off under --quiet, JSON logs or a redirect
        datasets.disable_progress_bars()
        build_mixture(small, tmp)
        convs = datasets.load_from_disk(tmp)["messages"]
        if bars_on:  # restore the configured mode, never turn bars on that were off
            datasets.enable_progress_bars()
    chars = sum(len(m["content"]) for conv in convs for m in conv) / max(1, len(convs))
    return int(rows * chars / 4)


SYNTHESIZER_LAYOUT = 2  # 2: response F1 of the trained synthesizer and of the untrained model


def synthesizer_stage(recipe: Recipe) -> Stage:
    """Train the synthesizer (the default tiny one, or `corpus.synthesizer_training`'s model) and measure
    its response F1 against the untrained / untuned model with the same prompt."""
    size, spec = recipe.corpus.size, recipe.corpus.synthesizer_training
    if spec is not None:
        return _tuned_synthesizer_stage(recipe, spec)

    def run(out: Path, _: dict[str, Path]) -> dict[str, Any]:
        from ..synth.default_synthesizer import synthesizer_f1, train_default_synthesizer

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


def _tuned_synthesizer_stage(recipe: Recipe, spec) -> Stage:
    """`synthesizer: trained`: tune `spec.model` on the seen datasets, measure base vs tuned (seen/unseen)."""

    def run(out: Path, _: dict[str, Path]) -> dict[str, Any]:
        from ..synth.trained_synthesizer import measure_base_and_tuned, train_synthesizer

        model = train_synthesizer(out, spec, recipe.seed)
        return {"model": str(model), "response_f1": measure_base_and_tuned(out, spec, model, recipe.seed)}

    def estimate() -> str:
        unseen = ", ".join(spec.unseen) or "none"
        return f"tune {spec.model} ({spec.method}), {spec.max_steps} steps; unseen: {unseen}"

    def inputs() -> pin.Inputs:
        return {
            **pin.reference_inputs("synthesizer base", spec.model, "model"),
            **pin.sources_inputs(spec.sources),
        }

    settings = {**spec.model_dump(mode="json"), "seed": recipe.seed, "layout": SYNTHESIZER_LAYOUT}
    return Stage(
        "synthesizer",
        settings,
        [],
        run,
        estimate,
        inputs=inputs,
        section="corpus.synthesizer_training",
        aliases={"seed": "seed", "layout": "synthesizer stage layout"},
    )


def corpus_stage(recipe: Recipe) -> Stage:
    """Raw texts → a pretraining corpus (with synthesized pairs when `augment`) + held-out questions."""
    from ..synth.config import DEFAULT_SYNTHESIZER, GENERATED, TRAINED_SYNTHESIZER

    spec = recipe.corpus
    # the synthesizer stage builds it (the default tiny one, or the recipe's trained one)
    built_synth = spec.augment and spec.synthesizer in (DEFAULT_SYNTHESIZER, TRAINED_SYNTHESIZER)
    unused = {"synthesizer_training"} | (set() if spec.augment else {"synthesizer", "size", "rounds"})
    unused |= {"max_model_len"} if spec.max_model_len is None else set()  # absent: keys stay as before
    settings = {
        **spec.model_dump(mode="json", exclude=unused),
        "tokenizer": recipe.prepare.tokenizer,
        "seed": recipe.seed,
    }

    def run(out: Path, inputs: dict[str, Path]) -> dict[str, Any]:
        from ..synth.pretrain_corpus import PretrainCorpusConfig, build_pretraining_corpus

        synth = str(inputs["synthesizer"] / "synthesizer") if built_synth else spec.synthesizer
        fields = {**spec.model_dump(), "synthesizer": synth, "synthesizer_training": None}
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
        if spec.augment and not built_synth:
            found.update(pin.reference_inputs("synthesizer", spec.synthesizer, "model"))
        return found

    return Stage(
        "corpus",
        settings,
        ["synthesizer"] if built_synth else [],
        run,
        estimate,
        inputs=inputs,
        section="corpus",
        aliases={"tokenizer": "prepare.tokenizer", "seed": "seed"},
    )


def pairs_stage(recipe: Recipe) -> Stage:
    """Sample answers with the policy, check them by exact answer, write chosen/rejected pairs (`synth pairs`)."""
    spec = recipe.pairs
    model = spec.model or (recipe.train.model if recipe.train else None)
    if model is None:
        raise InstructkitError("recipe `pairs:` needs pairs.model when the recipe has no `train` section")
    data_dir = spec.data_dir or _default_data_dir()
    settings = {**spec.model_dump(mode="json"), "model": model, "data_dir": data_dir}

    def run(out: Path, _: dict[str, Path]) -> dict[str, Any]:
        from ..synth.pairs import build_pairs
        from ..synth.pairs_config import PairsConfig

        return build_pairs(PairsConfig(**{**settings, "out": str(out)}))

    def estimate() -> str:
        return f"{spec.samples} samples per question, {spec.limit or 'all'} questions of {spec.task}"

    def inputs() -> pin.Inputs:
        found = pin.reference_inputs("model", model, "model")
        if spec.task.endswith(".jsonl"):
            return {**found, **pin.file_setting_inputs("pairs task", spec.task)}
        return {**found, **pin.benchmark_inputs(None, [spec.task], data_dir)}

    aliases = {} if spec.model else {"model": "train.model"}
    return Stage("pairs", settings, [], run, estimate, inputs=inputs, section="pairs", aliases=aliases)


def prepare_stage(recipe: Recipe, upstream: str | None) -> Stage:
    """Tokenize with exact masks and pack what the mixture, the corpus or the recipe's sources hold."""
    spec = recipe.prepare
    settings = {**spec.model_dump(mode="json"), "sources": [] if upstream else recipe.sources}

    def run(out: Path, inputs: dict[str, Path]) -> dict[str, Any]:
        from ..data.prepare import PrepareConfig, length_warning, prepare
        from ..progress import log_event

        fields = spec.model_dump()
        sources = list(recipe.sources)
        if upstream == "mixture":
            sources = [str(inputs["mixture"])]
        elif upstream == "pairs":  # the training pairs; heldout.jsonl stays for reward accuracy
            sources = [str(inputs["pairs"] / "pairs.jsonl")]
        elif upstream == "corpus":  # its tokenizer: one BPE shared by every arm of an ablation
            corpus = inputs["corpus"]
            sources, fields["tokenizer"] = [str(corpus / "corpus")], str(corpus / "tokenizer")
        cfg = PrepareConfig(**{**fields, "sources": sources, "out": str(out)})
        stats = prepare(cfg)
        if warning := length_warning(stats, cfg, flag=lambda name: f"prepare.{name}"):
            log_event("prepare", warning)
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
    """Train on the prepared rows; continue the folder's last checkpoint only when made under this stage key.

    Otherwise its checkpoints (and metrics log) are set aside in `superseded/`, never deleted, and
    the plan and the log say why (`start over: setting train.learning_rate changed since checkpoint-4`).
    """
    settings = recipe.train.model_dump(mode="json")

    def run(out: Path, inputs: dict[str, Path]) -> dict[str, Any]:
        from ..progress import log_event
        from ..train import checkpoint as ckpt
        from ..train.config import TrainConfig
        from ..train.run import train

        key = read_key(out)
        config = TrainConfig(data=inputs["prepare"], output_dir=out, **recipe.train.model_dump())
        last, reasons = train_resume(stage, out, key)
        if last is not None and not reasons:  # the same key; the checkpoint's own record must agree too
            reasons = ckpt.resume_changes(last, ckpt.run_identity(config))
        moved = ckpt.set_aside(out) if reasons else []
        if moved:
            where = ", ".join(str(p) for p in moved)
            log_event("train", f"start over ({'; '.join(reasons)}); set aside: {where}")
        config = TrainConfig.model_validate({**dict(config), "resume": bool(ckpt.checkpoints(out))})
        result = train(config, stage_key=key)
        return {
            "global_step": result.global_step,
            "final_loss": result.final_loss,
            "train_loss": result.train_loss,
            "effective_batch_tokens": result.effective_batch_tokens,
            "resumed_from": result.resumed_from.name if result.resumed_from else None,
            "set_aside": [str(p) for p in moved],
        }

    def resume(out: Path, key: dict[str, Any]) -> str:
        from ..train.checkpoint import SUPERSEDED

        last, reasons = train_resume(stage, out, key)
        if last is None:
            return ""
        if not reasons:
            return f"resume from {last.name}"
        return f"start over: {'; '.join(reasons)} (its checkpoints go to {SUPERSEDED}/)"

    def estimate() -> str:
        steps = recipe.train.max_steps
        return f"{steps} steps" if steps > 0 else f"{recipe.train.epochs:g} epochs"

    model = recipe.train.model
    stage = Stage(
        "train",
        settings,
        ["prepare"],
        run,
        estimate,
        inputs=lambda: pin.reference_inputs("model", model, "model"),
        section="train",
        resume=resume,
    )
    return stage


def read_key(stage_dir: Path) -> dict[str, Any] | None:
    """The key the pipeline is computing an unfinished stage under (`stage-key.json`), or None."""
    import json

    from .stage import KEY_FILE

    path = stage_dir / KEY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def train_resume(stage: Stage, out: Path, key: dict[str, Any] | None) -> tuple[Path | None, list[str]]:
    """The last complete checkpoint in `out` and why it may not be continued under `key` (none: it may)."""
    from ..train import checkpoint as ckpt
    from .stage import key_changes

    last = ckpt.last_good_checkpoint(out)
    if last is None:
        return None, []
    made_under = (ckpt.read_provenance(last) or {}).get("stage")
    if not isinstance(made_under, dict) or "hash" not in made_under:
        return last, [f"{last.name} has no record of the stage key it was made under (unknown provenance)"]
    if key is None:
        return last, [f"no stage key to compare {last.name} with"]
    if made_under["hash"] == key["hash"]:
        return last, []
    return last, [
        _since(reason, last.name) for reason in key_changes(stage, made_under, key) or ["key changed"]
    ]


def _since(reason: str, checkpoint: str) -> str:
    """`setting train.seed changed` → `… since checkpoint-4`; the prepare stage is the training data."""
    if reason == "upstream prepare changed":
        return f"training data changed since {checkpoint} (stage prepare reran)"
    return f"{reason} since {checkpoint}"


def eval_stage(recipe: Recipe, which: str) -> Stage:
    """Evaluate the base (untrained) or tuned model on every eval set and benchmark of the recipe."""
    spec = recipe.evaluate
    name = f"eval-{which}"
    needs = ["prepare", "train"] if which == "tuned" else ["prepare"]
    needs += ["corpus"] if recipe.corpus else []
    needs += ["pairs"] if recipe.pairs and recipe.pairs.holdout and which == "tuned" else []
    judged = recipe.judge is not None and which == "tuned"
    needs += ["eval-base"] if judged else []
    settings = {
        **spec.model_dump(mode="json"),
        "which": which,
        "model": recipe.train.model,
        "tiny_seed": recipe.train.tiny_seed,
        "holdout": _holdout(recipe),
        **({"judge": recipe.judge.model_dump(mode="json")} if judged else {}),  # absent: keys stay as before
    }

    def run(out: Path, inputs: dict[str, Path]) -> dict[str, Any]:
        from ..evaluate.recipe_sets import eval_tasks
        from ..evaluate.runner import evaluate

        model, tokenizer, warnings = _load_for_eval(recipe, which, inputs)
        tasks = eval_tasks(spec, recipe.mixture, recipe.seed, inputs.get("corpus"))
        config = spec.eval_config(recipe.seed, _default_data_dir())
        results = evaluate(model, tokenizer, tasks=tasks, out_dir=out, config=config, warnings=warnings)
        summary = {"normalized_average": results.get("normalized_average"), "tasks": len(results["tasks"])}
        if "pairs" in inputs:  # the tuned policy's implicit reward on held-out pairs, against the base
            summary.update(_reward_accuracy(recipe, model, tokenizer, inputs, out))
        if judged:  # free the tuned model first: the judge is a third model in memory otherwise
            del model
            summary.update(_judge(recipe, config, inputs["eval-base"], out))
        return summary

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
            "judge": "judge",
        },
    )


def _reward_accuracy(recipe: Recipe, policy, tokenizer, inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Reward accuracy (%) and mean margin of the policy over the base on the pairs stage's heldout.jsonl."""
    import json

    from ..evaluate.reward_accuracy import read_pairs, reply_logps, reward_accuracy

    pairs = read_pairs(str(inputs["pairs"] / "heldout.jsonl"))
    reference, _, _ = _load_for_eval(recipe, "base", inputs)
    result = reward_accuracy(
        reply_logps(policy, tokenizer, pairs), reply_logps(reference, tokenizer, pairs), recipe.train.beta
    )
    write_atomic(out / "reward_accuracy.json", json.dumps(result, indent=2))
    return result


def _judge(recipe: Recipe, config, base_run: Path, out: Path) -> dict[str, Any]:
    """Pairwise judge win rate (%) of the tuned model's answers over the base's on `judge.task`; judge.json."""
    import json

    from ..evaluate.backends.load import load_backend
    from ..evaluate.judge import judge_runs
    from ..evaluate.runner import build_tasks

    spec = recipe.judge
    queries = {d.id: d.query for t in build_tasks(config) for d in t.docs}
    judge = load_backend("hf", spec.model or recipe.train.model, batch_size=spec.batch_size)
    result = judge_runs(judge, base_run, out, spec.task, queries, chat=spec.chat)
    write_atomic(
        out / "judge.json", json.dumps({**result, "judge": spec.model or recipe.train.model}, indent=2)
    )
    return {"judge_win_rate": result["win_rate"], "judge_ci95": result["ci95"], "judged": result["n"]}


def _eval_inputs(recipe: Recipe, which: str) -> pin.Inputs:
    """The base model (when evaluated), the eval sets' task files and data, the benchmark data."""
    from ..evaluate.recipe_sets import recipe_catalog, set_tasks

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
    from ..data.tasks import data_root

    try:
        root = data_root()
    except Exception:  # noqa: BLE001 - no shared data: benchmarks then need the hub
        return None
    return str(root) if Path(root).is_dir() else None


def _load_for_eval(recipe: Recipe, which: str, inputs: dict[str, Path]):
    """The tuned model from the train stage, or the base model exactly as training started from it,
    plus the warnings its results must carry (an adapter without a record of its base)."""
    import torch

    from ..models.adapters import check_adapter_base
    from ..models.loading import load_model, load_tokenizer
    from ..progress import log_event

    # The tokenizer the data was prepared (and the model trained) with; fp32 like training.
    tokenizer = load_tokenizer(str(inputs["prepare"] / "tokenizer"))
    name = str(inputs["train"]) if which == "tuned" else recipe.train.model
    warnings = check_adapter_base(name)  # an adapter loads only onto the base it was trained on
    for warning in warnings:
        log_event(f"eval-{which}", f"warning: {warning}")
    model = load_model(
        name,
        tokenizer,
        tiny_seed=recipe.train.tiny_seed,
        trust_remote_code=recipe.train.trust_remote_code,
        dtype=torch.float32,
    )
    model.eval()
    return model, tokenizer, warnings


REPORT_LAYOUT = 2  # 2: report.html, intervals and paired tests


def report_stage(recipe: Recipe) -> Stage:
    """Write report.md and charts comparing base and tuned, plus the training loss curve."""
    if recipe.train is None:  # a synthesizer recipe: its base-vs-tuned evaluation and the corpus it wrote
        needs = ["synthesizer", "corpus"]
    else:
        needs = ["train", "eval-tuned"] + (["eval-base"] if recipe.evaluate.compare_base else [])

    def run(out: Path, inputs: dict[str, Path]) -> dict[str, Any]:
        from .report import write_run_report
        from .synth_report import write_synthesizer_report

        write = write_synthesizer_report if recipe.train is None else write_run_report
        return {"report": str(write(recipe, inputs, out))}

    # The layout version makes runs reported before report.html existed rebuild their report once.
    settings = {"name": recipe.name, "layout": REPORT_LAYOUT}
    return Stage("report", settings, needs, run, aliases={"name": "name", "layout": "report layout"})
