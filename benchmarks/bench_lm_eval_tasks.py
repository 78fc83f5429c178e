"""lm-eval's own tasks through lm-eval's `hf` model (HFLM) and through instructkit's `LM`, side by side.

    python benchmarks/bench_lm_eval_tasks.py [--limit 100 --gen-limit 20 --max-gen-toks 128 \
        --batch-size 16 --repeat 3 --threads 1 --device cpu]

SmolLM2-135M-Instruct (`instructkit models fetch`, fp32) loaded once and handed to both (`HFLM(pretrained=
<model>)`, `lm_from_backend(HFBackend(<model>))`): same model object, rows, batch size and lm-eval task
objects (official YAMLs reading ../shared/data through `lm_eval_local.local_task_dir`). Tasks: PIQA,
MMLU anatomy 5-shot, hellaswag- and ARC-shaped rows (built here from PIQA and MMLU rows in those
tasks' hub schemas, since their own data is not in ../shared/data), gsm8k 5-shot, gsm8k CoT 8-shot and
two BBH CoT 3-shot tasks (generation capped at --max-gen-toks). Each repeat runs both on every task
back to back through `lm_eval.evaluator.evaluate` (request building and tokenisation included, task
construction excluded); the speed-up is the median of the per-repeat ratios. Per-sample parity of the
last repeat is reported beside it, and the exact-work ceiling (log-likelihood tasks as in bench_eval.py;
generation tasks by `common.generation_work`). Writes benchmarks/results/lm_eval_tasks.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA as DATA  # noqa: E402
from common import generation_work, linear_work, machine, offline, write_section  # noqa: E402

offline()
LOGLIK = ["piqa", "mmlu_anatomy", "hellaswag", "arc_easy"]
SHOTS = {"mmlu_anatomy": 5}  # the published MMLU setting; the other tasks keep their YAML's shots
GENERATION = [
    "gsm8k",
    "gsm8k_cot",
    "bbh_cot_fewshot_sports_understanding",
    "bbh_cot_fewshot_date_understanding",
]


def shaped_fixtures(folder: Path, rows: int) -> Path:
    """hellaswag rows made from PIQA (goal → context, the two solutions plus two other rows' as endings)
    and ARC-Easy rows made from MMLU test questions, each in its task's hub schema."""
    from instructkit.evaluate.lm_eval_local import _mmlu_rows, _piqa

    folder.mkdir(parents=True, exist_ok=True)
    piqa = [json.loads(x) for x in _piqa(DATA / "piqa", folder / "converted").read_text().splitlines()][:rows]
    with (folder / "hellaswag.validation.jsonl").open("w") as out:
        for i, r in enumerate(piqa):
            other = piqa[(i + 1) % len(piqa)]
            endings = [r["sol1"], r["sol2"], other["sol1"], other["sol2"]]
            row = {"ind": i, "activity_label": "How to", "ctx_a": r["goal"], "ctx_b": "", "ctx": r["goal"]}
            row |= {"endings": endings, "source_id": str(i), "split": "val", "split_type": "indomain"}
            out.write(json.dumps(row | {"label": str(r["label"])}) + "\n")
    mmlu = [
        row
        for f in sorted((DATA / "mmlu" / "test").glob("*_test.csv"))
        if not f.name.startswith("anatomy")
        for row in _mmlu_rows(f, f.stem)
    ][:rows]
    with (folder / "arc_easy.test.jsonl").open("w") as out:
        for i, r in enumerate(mmlu):
            choices = {"text": r["choices"], "label": list("ABCD")}
            row = {"id": f"mmlu_{i}", "question": r["question"], "choices": choices}
            out.write(json.dumps(row | {"answerKey": "ABCD"[r["answer"]]}) + "\n")
    return folder


def parity(ours: dict, theirs: dict) -> dict:
    """Per-sample agreement: max |Δ loglikelihood|, same predictions/greedy flags, identical texts."""
    (mine,), (ref,) = ours["samples"].values(), theirs["samples"].values()
    diffs, same_text, same_metrics = [0.0], 0, 0
    for a, b in zip(mine, ref):
        if a["arguments"] != b["arguments"]:
            raise SystemExit(f"doc {b['doc_id']}: the two runs got different prompts")
        if isinstance(b["resps"][0][0], str):
            same_text += a["resps"][0][0] == b["resps"][0][0]
        else:
            diffs += [abs(x[0][0] - y[0][0]) for x, y in zip(a["resps"], b["resps"])]
            same_text += all(x[0][1] == y[0][1] for x, y in zip(a["resps"], b["resps"]))
        same_metrics += all(a[m] == b[m] for m in b["metrics"])
    return {"samples": len(ref), "max_abs_dll": max(diffs), "same": same_text, "same_metrics": same_metrics}


def work_ceiling(lm, task, batch_size: int) -> dict:
    """Linear-layer FLOPs of HFLM's padded rows over the fewest tokens an exact method needs (every
    distinct token once), and over what instructkit's packed rows feed (`common.linear_work`)."""
    pairs = [lm._truncate(*lm._encode_pair(*inst.args)) for inst in task.instances]
    work = linear_work(pairs, lm.engine, batch_size)
    return {"ratio": work["ratio"], "ceiling": work["ceiling"]}


class GenerationLog:
    """Records the prompt ids and generated token counts of the backend's latest `generate` call."""

    def __init__(self, backend) -> None:
        self.prompts: list[list[int]] = []
        self.generated: list[int] = []
        self._generate = backend.generate
        backend.generate = self

    def __call__(self, requests):
        out = self._generate(requests)
        self.prompts = [list(r.prompt_ids) for r in requests]
        self.generated = [samples[0].num_tokens for samples in out]
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100, help="docs per log-likelihood task")
    parser.add_argument("--gen-limit", type=int, default=20, help="docs per generation task")
    parser.add_argument("--max-gen-toks", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="model folder (default: fetched SmolLM2-135M-Instruct)")
    parser.add_argument("--tasks", default=",".join(LOGLIK + GENERATION), help="comma-separated subset")
    parser.add_argument("--out", default="lm_eval_tasks", help="section name under benchmarks/results/")
    args = parser.parse_args()
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from instructkit.evaluate.backends.hf import HFBackend
    from instructkit.evaluate.lm_eval_local import local_task_dir
    from instructkit.evaluate.lm_eval_model import lm_from_backend
    from instructkit.models.pretrained import fetch

    torch.set_num_threads(args.threads)
    model_dir = args.model or str(fetch("smollm2-135m-instruct").directory)
    backend = HFBackend.from_pretrained(
        model_dir, dtype="float32", device=args.device, batch_size=args.batch_size
    )
    ours = lm_from_backend(backend)
    generation_log = GenerationLog(backend)
    theirs = HFLM(
        pretrained=backend.model, tokenizer=backend.tokenizer, batch_size=args.batch_size, device=args.device
    )
    names = args.tasks.split(",")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        local_task_dir(DATA, tmp / "tasks", fixtures=shaped_fixtures(tmp / "fixtures", args.limit))
        manager = TaskManager(include_path=str(tmp / "tasks"), include_defaults=False)
        task_dicts = {}
        for name in names:
            task_dict = manager.load([name])
            limit = args.gen_limit if name in GENERATION else args.limit
            if name in GENERATION:
                task_dict["tasks"][name].config.generation_kwargs["max_gen_toks"] = args.max_gen_toks
            if (
                name in SHOTS
            ):  # as simple_evaluate(num_fewshot=...) sets it (lm-eval's MMLU default is 0-shot)
                task_dict["tasks"][name].set_config(key="num_fewshot", value=SHOTS[name])
            task_dicts[name] = (task_dict, limit)
        runs: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        results: dict[str, dict] = {}
        for r in range(args.repeat):
            for name, (task_dict, limit) in task_dicts.items():
                mine, our_s = timed(ours, task_dict, limit)
                ref, their_s = timed(theirs, task_dict, limit)
                runs[name].append((our_s, their_s))
                results[name] = parity(mine, ref)
                if name in GENERATION:
                    results[name]["work"] = generation_work(
                        generation_log.prompts, generation_log.generated, backend, args.batch_size
                    )
                print(f"repeat {r} {name}: instructkit {our_s:.1f}s hf {their_s:.1f}s", flush=True)
        for name in names:
            if name in LOGLIK:
                results[name]["work"] = work_ceiling(
                    ours, task_dicts[name][0]["tasks"][name], args.batch_size
                )
    render(args, names, runs, results, load, os.getloadavg())


def timed(lm, task_dict, limit: int) -> tuple[dict, float]:
    from lm_eval.evaluator import evaluate

    for task in task_dict["tasks"].values():  # the same few-shot draw on every run (as simple_evaluate)
        task.set_fewshot_seed(seed=1234)
    start = time.perf_counter()
    out = evaluate(
        lm=lm, task_dict=task_dict, limit=limit, log_samples=True, bootstrap_iters=0, verbosity="ERROR"
    )
    return out, time.perf_counter() - start


def render(args, names, runs, results, load, load_after) -> None:
    import lm_eval
    import torch
    import transformers

    command = (
        f"python benchmarks/bench_lm_eval_tasks.py --limit {args.limit} --gen-limit {args.gen_limit} "
        f"--max-gen-toks {args.max_gen_toks} --batch-size {args.batch_size} --repeat {args.repeat} "
        f"--threads {args.threads} --device {args.device}"
    )
    rows = []
    for name in names:
        ours_s, theirs_s = [o for o, _ in runs[name]], [t for _, t in runs[name]]
        ratio = statistics.median(t / o for o, t in runs[name])
        p = results[name]
        work = p.get("work")
        agree = (
            f"max abs Δll {p['max_abs_dll']:.1e}, same greedy flags {p['same']}/{p['samples']}"
            if name in LOGLIK
            else f"identical text {p['same']}/{p['samples']}"
        )
        ceiling = f"{work['ceiling']:.2f}× ({ratio / work['ceiling']:.0%} of it)" if work else ""
        rows.append(
            f"| {name} | {p['samples']} | {statistics.median(theirs_s):.1f} | {statistics.median(ours_s):.1f} "
            f"| {ratio:.2f}× | {ceiling} | {agree}; same metrics {p['same_metrics']}/{p['samples']} |"
        )
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({machine()})"
    markdown = "\n".join(
        [
            "## lm-eval's tasks: `--model hf` vs instructkit's `LM`",
            "",
            f"`{command}` — SmolLM2-135M-Instruct, fp32, {device}, {torch.get_num_threads()} torch thread(s); "
            f"batch size {args.batch_size} for both. lm-eval {lm_eval.__version__}, transformers "
            f"{transformers.__version__}, torch {torch.__version__}, Python {platform.python_version()}. "
            f"Load average before / after: {load[0]:.1f} / {load_after[0]:.1f}. Same model object, rows and "
            "lm-eval task objects (official YAMLs on local data); hellaswag/ARC rows are shaped from PIQA/MMLU.",
            "",
            f"| task | samples | hf s | instructkit s | speed-up (median of {args.repeat}) "
            "| exact-work ceiling | parity (last repeat) |",
            "|---|---:|---:|---:|---:|---|---|",
            *rows,
        ]
    )
    data = {"command": command, "runs": runs, "parity": results, "load": [load[0], load_after[0]]}
    write_section(args.out, markdown, data)


if __name__ == "__main__":
    main()
