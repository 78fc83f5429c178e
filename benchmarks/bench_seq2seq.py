"""Encoder-decoder (T5) evaluation vs lm-evaluation-harness's seq2seq path, and packed vs padded T5 training.

    python benchmarks/bench_seq2seq.py [--aqua 100 --mmlu 100 --batch-size 16 --repeat 3 --threads 1
                                        --train-n 1200]   (or --quick for a smoke run)

Evaluation: one random `tiny:t5-small` (its head scaled by 0.02, as tests/evaluate/test_seq2seq_eval.py does, so the
distributions are not one-hot) and its T5-style tokenizer (trained on the rows' texts) are handed to both
tools: instructkit's `Seq2SeqBackend` and lm-eval's `HFLM(backend="seq2seq")`, same batch size, scoring
the same rows with the same prompt strings (AQuA 5-way, MMLU 5-shot 4-way: the encoder is shared by the
choices). Each repeat times both back to back (tokenisation included); every repeat first checks
per-example log-likelihoods (≤ 1e-4) and predictions, and the run stops before reporting any speed if they
disagree. Training: the same synthetic pairs prepared twice by `data prepare` (packed, padded), one epoch of
`tiny:t5-small` each with the `flan-t5` preset; padded micro-batches hold as many examples as a packed row
does on average, so both runs take the same number of steps. Writes results/seq2seq.md and seq2seq.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_eval import DATA, lmeval_name, parity, time_lmeval, time_ours, write_lmeval_tasks  # noqa: E402
from common import WORK_DIR, machine, synthetic_conversations, write_section  # noqa: E402

PRESET = "tiny:t5-small"
TOLERANCE = 1e-4  # per-example log-likelihood parity required before any timing is reported
WORK = WORK_DIR / "seq2seq"


def eval_tasks(args) -> list:
    """AQuA (5 choices) and MMLU 5-shot (4 choices), as instructkit builds them, cut to the sizes."""
    from instructkit.evaluate.suites.registry import load_benchmark

    aqua = load_benchmark("aqua", DATA)[0]
    mmlu = load_benchmark("mmlu", DATA, num_fewshot=5, subjects=[args.mmlu_subject])[0]
    aqua.docs, mmlu.docs = aqua.docs[: args.aqua], mmlu.docs[: args.mmlu]
    return [aqua, mmlu]


def eval_model(tasks, preset: str):
    """A random T5 of `preset` and a T5 tokenizer trained on the tasks' prompts and choices."""
    import torch

    from instructkit.evaluate.prompting import context
    from instructkit.models.tiny import build_tiny_t5_model, tiny_t5_preset, train_tiny_t5_tokenizer

    texts = [context(t, d, "base") + " " + " ".join(d.choices) for t in tasks for d in t.docs]
    tokenizer = train_tiny_t5_tokenizer(texts, vocab_size=tiny_t5_preset(preset).vocab_size)
    model = build_tiny_t5_model(preset, tokenizer, seed=0).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(0.02)
    return model, tokenizer


def check_parity(name: str, p: dict) -> None:
    """Stop the benchmark (no speed reported) unless log-likelihoods and predictions agree."""
    if p["max_abs_dll"] > TOLERANCE or p["same_pred"] != p["docs"]:
        sys.exit(
            f"{name}: parity failed (max abs Δ loglikelihood {p['max_abs_dll']:.2e} > {TOLERANCE:g} or "
            f"predictions {p['same_pred']}/{p['docs']}); no timing reported"
        )


def run_eval(args) -> dict:
    """Both tools on each task, `repeat` times back to back; parity checked every repeat."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager, get_task_dict

    from instructkit.evaluate.backends.seq2seq import Seq2SeqBackend

    tasks = eval_tasks(args)
    model, tokenizer = eval_model(tasks, args.preset)
    ours = Seq2SeqBackend(model, tokenizer, batch_size=args.batch_size)
    lm = HFLM(
        pretrained=model, backend="seq2seq", tokenizer=tokenizer, batch_size=args.batch_size, device="cpu"
    )
    runs: dict[str, list[tuple[float, float]]] = {t.name: [] for t in tasks}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        manager = TaskManager(include_path=str(write_lmeval_tasks(Path(tmp_name), tasks)))
        task_dicts = {t.name: get_task_dict([lmeval_name(t)], manager) for t in tasks}
        time_ours(ours, tasks[0].__class__(**{**tasks[0].__dict__, "docs": tasks[0].docs[:2]}))  # warm-up
        for r in range(args.repeat):
            for task in tasks:
                mine, our_s = time_ours(ours, task)
                theirs, their_s = time_lmeval(lm, task_dicts[task.name])
                results[task.name] = parity(task, mine, theirs)
                check_parity(task.name, results[task.name])
                runs[task.name].append((our_s, their_s))
                print(f"repeat {r} {task.name}: ours {our_s:.2f}s lm-eval {their_s:.2f}s", flush=True)
    params = sum(p.numel() for p in model.parameters())
    docs = {t.name: len(t.docs) for t in tasks}
    choices = {t.name: statistics.mean(len(d.choices) for d in t.docs) for t in tasks}
    return {"runs": runs, "parity": results, "params": params, "docs": docs, "choices": choices}


def prepare_pairs(rows: list[dict], pack: bool, args) -> tuple[Path, dict]:
    """`data prepare` of the same pairs with the preset's tokenizer, packed or padded."""
    from instructkit.data.prepare import prepare
    from instructkit.data.prepare_config import PrepareConfig

    folder = WORK / ("packed" if pack else "padded")
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "pairs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = folder / "prepared"
    shutil.rmtree(out, ignore_errors=True)
    config = PrepareConfig(
        sources=[str(source)],
        out=str(out),
        tokenizer=args.preset,
        max_source_length=args.max_source,
        max_target_length=args.max_target,
        pack=pack,
    )
    return out, prepare(config, progress=False)


def token_counts(prepared: Path) -> tuple[int, int, int]:
    """(rows, encoder tokens, labelled decoder tokens) of a prepared dataset."""
    import datasets

    ds = datasets.load_from_disk(str(prepared))
    source = sum(len(x) for x in ds["input_ids"])
    target = sum(sum(1 for t in x if t != -100) for x in ds["labels"])
    return len(ds), source, target


def train_once(prepared: Path, batch: int, name: str, preset: str):
    """One epoch of `preset` on a prepared folder with the `flan-t5` preset; returns the TrainResult."""
    from instructkit.train.config import TrainConfig
    from instructkit.train.run import train

    config = TrainConfig(
        data=prepared,
        output_dir=WORK / f"run-{name}",
        model=preset,
        preset="flan-t5",
        epochs=1,
        micro_batch_size=batch,
        gradient_accumulation_steps=4,
        logging_steps=10,
        save_steps=10**6,
        seed=42,
        progress=False,
        overwrite=True,
    )
    return train(config)


def run_train(args) -> dict:
    """Packed vs padded: same pairs, same steps, trained tokens per second inside the training loop."""
    convs = synthetic_conversations(args.train_n, seed=0, median_words=args.train_words)
    packed_dir, _ = prepare_pairs(convs, True, args)
    padded_dir, _ = prepare_pairs(convs, False, args)
    packs, source, target = token_counts(packed_dir)
    examples, source_pad, target_pad = token_counts(padded_dir)
    if (source, target) != (source_pad, target_pad):  # the same pairs, whatever the layout
        sys.exit(f"packed and padded data differ: {(source, target)} vs {(source_pad, target_pad)} tokens")
    batch = max(1, round(examples / packs))
    out = {"examples": examples, "packs": packs, "source_tokens": source, "target_tokens": target}
    out["padded_batch"] = batch
    for name, folder, micro in (("packed", packed_dir, 1), ("padded", padded_dir, batch)):
        result = train_once(folder, micro, name, args.preset)
        out[name] = {
            "train_runtime_s": result.train_runtime,
            "steps": result.global_step,
            "train_loss": result.train_loss,
            "target_tokens_per_s": target / result.train_runtime,
            "all_tokens_per_s": (source + target) / result.train_runtime,
        }
        print(name, out[name], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aqua", type=int, default=100)
    parser.add_argument("--mmlu", type=int, default=100)
    parser.add_argument("--mmlu-subject", default="high_school_government_and_politics")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--preset", default=PRESET, help="tiny encoder-decoder preset for both parts")
    parser.add_argument("--train-n", type=int, default=1200, help="training pairs")
    parser.add_argument("--train-words", type=float, default=60.0, help="median words per pair")
    parser.add_argument("--max-source", type=int, default=512)
    parser.add_argument("--max-target", type=int, default=256)
    parser.add_argument("--no-write", action="store_true", help="print the section, leave results/ alone")
    parser.add_argument("--quick", action="store_true", help="smoke sizes; implies --no-write")
    args = parser.parse_args()
    if args.quick:
        args.aqua, args.mmlu, args.repeat, args.train_n, args.train_words = 6, 6, 1, 48, 20.0
        args.no_write = True
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        sys.exit("lm-eval is not importable: install the bench extra (pip install -e '.[bench]')")
    import torch

    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    evaluation = run_eval(args)
    training = run_train(args)
    render(args, evaluation, training, (load[0], os.getloadavg()[0]))


def command(args) -> str:
    """The command line that reproduces this run (every size that changes the numbers)."""
    return (
        f"python benchmarks/bench_seq2seq.py --preset {args.preset} --aqua {args.aqua} --mmlu {args.mmlu} "
        f"--mmlu-subject {args.mmlu_subject} --batch-size {args.batch_size} --repeat {args.repeat} "
        f"--threads {args.threads} --train-n {args.train_n} --train-words {args.train_words:g} "
        f"--max-source {args.max_source} --max-target {args.max_target}"
    )


def render(args, ev: dict, tr: dict, load: tuple[float, float]) -> None:
    import lm_eval
    import transformers
    from torch import __version__ as torch_version

    agree, speed = [], []
    for name, runs in ev["runs"].items():
        p = ev["parity"][name]
        agree.append(
            f"| {name} | {p['docs']} | {ev['choices'][name]:.1f} | {p['max_abs_dll']:.1e} | "
            f"{p['same_pred']}/{p['docs']} |"
        )
        ours_s, theirs_s = [o for o, _ in runs], [t for _, t in runs]
        ratio = statistics.median(t / o for o, t in runs)
        speed.append(
            f"| {name} | {p['docs']} | {statistics.median(ours_s):.2f} | {statistics.median(theirs_s):.2f} | "
            f"{ratio:.2f}× |"
        )
    packed, padded = tr["packed"], tr["padded"]
    train_rows = [
        f"| {name} | {r['steps']} | {r['train_runtime_s']:.1f} | {r['target_tokens_per_s']:,.0f} | "
        f"{r['all_tokens_per_s']:,.0f} | {r['target_tokens_per_s'] / padded['target_tokens_per_s']:.2f}× | "
        f"{r['train_loss']:.4f} |"
        for name, r in (
            ("packed (micro-batch 1 row)", packed),
            (f"padded (batch {tr['padded_batch']})", padded),
        )
    ]
    markdown = "\n".join(
        [
            "## Encoder-decoder (T5): evaluation vs lm-evaluation-harness, packed vs padded training",
            "",
            f"`{command(args)}` — `{args.preset}` ({ev['params'] / 1e6:.1f}M parameters, random init, head "
            f"scaled by 0.02), fp32, CPU ({machine()}), {args.threads} torch thread(s). lm-eval "
            f'{lm_eval.__version__} (`HFLM(backend="seq2seq")`), transformers {transformers.__version__}, '
            f"torch {torch_version}, Python {platform.python_version()}. Load average before / after: "
            f"{load[0]:.1f} / {load[1]:.1f}.",
            "",
            "### Multiple choice: parity (checked every repeat before timing is kept; last repeat shown)",
            "",
            f"Same model object, same rows and prompt strings, batch size {args.batch_size} for both. "
            f"Per-example log-likelihoods must agree within {TOLERANCE:g} and predictions exactly, or the "
            "script stops without reporting speed.",
            "",
            "| task | docs | choices / doc | max abs Δ log-likelihood | same prediction |",
            "|---|---:|---:|---:|---:|",
            *agree,
            "",
            f"### Multiple choice: wall time (median of {args.repeat} back-to-back repeats; speed-up = median "
            "per-repeat ratio)",
            "",
            "instructkit runs the encoder once per question and scores every choice against that output; "
            "lm-eval runs the encoder again for every (question, choice) request.",
            "",
            "| task | docs | instructkit s | lm-eval s | speed-up |",
            "|---|---:|---:|---:|---:|",
            *speed,
            "",
            "### Training: packed vs padded (same pairs, same steps)",
            "",
            f"{tr['examples']} synthetic pairs (heavy-tailed lengths; ≤ {args.max_source} encoder / "
            f"≤ {args.max_target} decoder tokens), `data prepare` packed into {tr['packs']} rows or left "
            f"padded; one epoch, preset `flan-t5` (Adafactor, constant lr), 4 micro-batches per step. "
            f"{tr['target_tokens']:,} labelled decoder tokens and {tr['source_tokens']:,} encoder tokens per "
            "run; tokens/s = those tokens over the time inside the training loop.",
            "",
            "| layout | steps | train time (s) | target tokens/s | encoder + target tokens/s | vs padded "
            "| mean train loss |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *train_rows,
        ]
    )
    data = {"command": command(args), "eval": ev, "train": tr, "load": list(load)}
    if args.no_write:
        print(markdown)
    else:
        write_section("seq2seq", markdown, data)


if __name__ == "__main__":
    main()
