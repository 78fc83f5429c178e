"""Parity and speed of `instructkit.evaluate` against lm-evaluation-harness on one tiny model (CPU).

    python benchmarks/bench_eval.py [--piqa 300 --aqua 100 --gsm 24 --preset small --batch-size 16]

Both tools load the same saved model directory and score the same rows with the same prompt format:
PIQA valid (2-way, multi-token choices), AQuA test (5-way, multi-token choices) by loglikelihood, and
GSM8K test 0-shot greedy generation (exact match on the last number). Writes benchmarks/results/eval.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("INSTRUCTKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
OUT = REPO / "benchmarks" / "results" / "eval.md"

LMEVAL_YAML = {
    "piqa_local": """task: piqa_local
dataset_path: json
dataset_kwargs: {{data_files: {{validation: {path}}}}}
output_type: multiple_choice
validation_split: validation
doc_to_text: "Question: {{{{goal}}}}\\nAnswer:"
doc_to_target: label
doc_to_choice: "{{{{[sol1, sol2]}}}}"
metric_list: [{{metric: acc}}, {{metric: acc_norm}}]
""",
    "aqua_local": """task: aqua_local
dataset_path: json
dataset_kwargs: {{data_files: {{validation: {path}}}}}
output_type: multiple_choice
validation_split: validation
doc_to_text: "{{{{query}}}}"
doc_to_target: gold
doc_to_choice: "{{{{choices}}}}"
metric_list: [{{metric: acc}}, {{metric: acc_norm}}]
""",
    "gsm_local": """task: gsm_local
dataset_path: json
dataset_kwargs: {{data_files: {{validation: {path}}}}}
output_type: generate_until
validation_split: validation
doc_to_text: "{{{{query}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs: {{until: ["\\n\\n", "\\nQ:"], do_sample: false, max_gen_toks: {max_new}}}
metric_list: [{{metric: exact_match}}]
""",
}


def build_model(tmp: Path, preset: str) -> Path:
    """A tiny Llama + BPE tokenizer trained on the benchmark text, saved where lm-eval can load it."""
    from instructkit.evaluate.suites.io import read_jsonl
    from instructkit.train.models import build_tiny_model, train_tiny_tokenizer

    texts = [r["goal"] + " " + r["sol1"] for r in read_jsonl(DATA / "piqa" / "valid.jsonl")]
    texts += [r["question"] for r in read_jsonl(DATA / "gsm8k" / "train.jsonl")[:3000]]
    tokenizer = train_tiny_tokenizer(texts, vocab_size=4096)
    model = build_tiny_model(preset, tokenizer, seed=0).eval()
    path = tmp / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def our_tasks(args):
    """The three tasks as instructkit builds them, truncated to the benchmark sizes."""
    from instructkit.evaluate.suites.registry import load_benchmark

    piqa = load_benchmark("piqa", DATA)[0]
    aqua = load_benchmark("aqua", DATA)[0]
    gsm = load_benchmark("gsm8k", DATA, num_fewshot=0)[0]
    piqa.docs, aqua.docs, gsm.docs = piqa.docs[: args.piqa], aqua.docs[: args.aqua], gsm.docs[: args.gsm]
    gsm.max_new_tokens, gsm.stop, gsm.extractor = args.max_new, ("\n\n", "\nQ:"), "identity"
    return piqa, aqua, gsm


def write_lmeval_tasks(tmp: Path, tasks, max_new: int) -> Path:
    """Same rows and prompts as local JSON Lines datasets + task YAMLs for lm-eval."""
    piqa, aqua, gsm = tasks
    rows = {
        "piqa_local": [
            {
                "goal": d.query[len("Question: ") : -len("\nAnswer:")],
                "sol1": d.choices[0],
                "sol2": d.choices[1],
                "label": d.gold,
            }
            for d in piqa.docs
        ],
        "aqua_local": [{"query": d.query, "choices": d.choices, "gold": d.gold} for d in aqua.docs],
        "gsm_local": [{"query": d.query, "answer": d.answers[0]} for d in gsm.docs],
    }
    folder = tmp / "lmeval_tasks"
    folder.mkdir()
    for name, data in rows.items():
        path = tmp / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
        (folder / f"{name}.yaml").write_text(LMEVAL_YAML[name].format(path=path, max_new=max_new))
    return folder


def run_ours(model_dir: Path, tasks, batch_size: int) -> tuple[dict, dict]:
    from instructkit.evaluate.backends.hf import HFBackend
    from instructkit.evaluate.scoring import score_task

    backend = HFBackend.from_pretrained(str(model_dir), dtype="float32", device="cpu", batch_size=batch_size)
    warm = tasks[0].__class__(**{**tasks[0].__dict__, "docs": tasks[0].docs[:2]})
    score_task(backend, warm)  # warm-up, like lm-eval's
    out, times = {}, {}
    for task in tasks:
        start = time.perf_counter()
        out[task.name] = score_task(backend, task)
        times[task.name] = time.perf_counter() - start
    return out, times


def run_lmeval(model_dir: Path, folder: Path, batch_size: int) -> tuple[dict, dict]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(folder))
    out, times = {}, {}
    for name in ("piqa_local", "aqua_local", "gsm_local"):
        start = time.perf_counter()
        res = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={model_dir},dtype=float32",
            tasks=[name],
            device="cpu",
            batch_size=batch_size,
            log_samples=True,
            task_manager=manager,
        )
        times[name] = time.perf_counter() - start
        out[name] = sorted(res["samples"][name], key=lambda s: s["doc_id"])
    return out, times


def parity(ours: dict, theirs: dict, tasks) -> list[str]:
    """Per-example loglikelihood / accuracy / generation agreement lines."""
    piqa, aqua, gsm = tasks
    lines = []
    for task, name in ((piqa, "piqa_local"), (aqua, "aqua_local")):
        records = ours[task.name][0]
        diffs, same_acc, same_norm = [], 0, 0
        for rec, sample in zip(records, theirs[name]):
            lls = [r[0][0] if isinstance(r[0], (list, tuple)) else r[0] for r in sample["resps"]]
            diffs += [abs(a - float(b)) for a, b in zip(rec["loglikelihoods"], lls)]
            same_acc += rec["acc"] == sample["acc"]
            same_norm += rec["acc_norm"] == sample["acc_norm"]
        n = len(records)
        lines.append(
            f"| {task.name} ({n} docs, {len(diffs)} choices) | max abs Δ loglikelihood {max(diffs):.2e} | "
            f"acc equal {same_acc}/{n}, acc_norm equal {same_norm}/{n} | "
            f"acc {ours[task.name][1]['acc']:.1f} vs {100 * sum(s['acc'] for s in theirs[name]) / n:.1f} |"
        )
    records = ours[gsm.name][0]
    same_text = sum(r["output"] == s["filtered_resps"][0] for r, s in zip(records, theirs["gsm_local"]))
    same_em = sum(
        float(r["pred"].strip() == r["answers"][0]) == float(s["exact_match"])
        for r, s in zip(records, theirs["gsm_local"])
    )
    n = len(records)
    lines.append(
        f"| {gsm.name} generation ({n} docs) | identical generated text {same_text}/{n} | "
        f"exact-match equal {same_em}/{n} | |"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--piqa", type=int, default=300)
    parser.add_argument("--aqua", type=int, default=100)
    parser.add_argument("--gsm", type=int, default=24)
    parser.add_argument("--max-new", type=int, default=32)
    parser.add_argument("--preset", default="tiny:small")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        print("lm-eval is not importable: install the bench extra (pip install 'instructkit[bench]')")
        sys.exit(1)
    import torch

    torch.set_num_threads(1)  # a shared 2-core machine: one thread each gives stable, comparable timings
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_dir = build_model(tmp, args.preset)
        tasks = our_tasks(args)
        folder = write_lmeval_tasks(tmp, tasks, args.max_new)
        ours, our_times = run_ours(model_dir, tasks, args.batch_size)
        theirs, their_times = run_lmeval(model_dir, folder, args.batch_size)
    section = render(args, tasks, ours, our_times, theirs, their_times)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(section)
    print(section)


def render(args, tasks, ours, our_times, theirs, their_times) -> str:
    import lm_eval
    import torch
    import transformers

    names = {"piqa": "piqa_local", "aqua_direct": "aqua_local", "gsm8k_cot": "gsm_local"}
    speed = []
    for task in tasks:
        ours_s, theirs_s = our_times[task.name], their_times[names[task.name]]
        speed.append(
            f"| {task.name} | {len(task.docs)} | {ours_s:.1f} | {theirs_s:.1f} | {theirs_s / ours_s:.2f}× |"
        )
    return "\n".join(
        [
            "## Evaluation: instructkit vs lm-evaluation-harness",
            "",
            f"Command: `python benchmarks/bench_eval.py --piqa {args.piqa} --aqua {args.aqua} --gsm {args.gsm} "
            f"--preset {args.preset} --batch-size {args.batch_size}`; CPU, fp32, {torch.get_num_threads()} threads; "
            f"lm-eval {lm_eval.__version__}, transformers {transformers.__version__}, torch {torch.__version__}. "
            "Same saved model, same rows, same prompt strings (lm-eval tasks defined as local JSON datasets).",
            "",
            "### Parity (per example)",
            "",
            "| task | loglikelihoods / text | accuracy | score (ours vs lm-eval) |",
            "|---|---|---|---|",
            *parity(ours, theirs, tasks),
            "",
            "### Throughput (one run each after a warm-up, wall seconds; model loaded once for both; lm-eval's time includes its per-task dataset setup)",
            "",
            "| task | docs | instructkit s | lm-eval s | speed-up |",
            "|---|---|---|---|---|",
            *speed,
            "",
        ]
    )


if __name__ == "__main__":
    main()
