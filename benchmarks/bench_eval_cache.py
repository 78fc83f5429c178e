"""Cost of the evaluation cache's model fingerprint: first time (every weight file hashed) and second
time (digests remembered by path, size and mtime), against the time of a small evaluation.

    python benchmarks/bench_eval_cache.py [--preset tiny:base --aqua 20 --batch-size 16]

The model is saved to a temporary folder and loaded once; each fingerprint is taken by a fresh backend
over the same loaded model (so load time is not counted). The digest memo lives in a fresh temporary
INSTRUCTKIT_CACHE, so the first fingerprint really hashes every byte (from the OS page cache: the files
were just written). Writes benchmarks/results/eval_cache.md (a RESULTS.md section) and .json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("INSTRUCTKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
FIXTURES = REPO / "tests" / "fixtures" / "eval"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, timed, write_section  # noqa: E402


def _save_model(preset: str, folder: Path):
    """A tiny model and tokenizer (trained here, no download) saved as safetensors into `folder`."""
    from instructkit.models.tiny import build_tiny_model, tiny_preset, train_tiny_tokenizer

    corpus = [f"Question {i}: what is {i} plus {2 * i}? The answer is {3 * i}." for i in range(400)]
    tokenizer = train_tiny_tokenizer(corpus, vocab_size=min(2048, tiny_preset(preset).vocab_size))
    model = build_tiny_model(preset, tokenizer, seed=0).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def _eval_tasks(aqua: int) -> tuple[list[str], str, int | None, str]:
    """AQuA direct (first `aqua` questions) when the shared data is here, else the test fixtures."""
    if (DATA / "aqua").is_dir():
        return ["aqua"], str(DATA), aqua, f"AQuA direct, first {aqua} questions ({aqua * 5} loglikelihoods)"
    return (
        ["boolq", "arc", "hellaswag", "mmlu"],
        str(FIXTURES),
        None,
        "test fixtures (boolq, arc, hellaswag, mmlu)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny:base")
    parser.add_argument("--aqua", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["INSTRUCTKIT_CACHE"] = str(Path(tmp) / "user-cache")
        from instructkit.evaluate.backends.hf import HFBackend
        from instructkit.evaluate.runner import evaluate

        folder = Path(tmp) / "model"
        model, tokenizer = _save_model(args.preset, folder)
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())

        def fingerprint() -> str:
            return HFBackend(model, tokenizer, source=str(folder)).fingerprint()

        first, first_s = timed(fingerprint)
        second, second_s = timed(fingerprint, repeat=5)
        in_memory, memory_s = timed(lambda: HFBackend(model, tokenizer).fingerprint(), repeat=3)
        assert first == second

        tasks, data_dir, limit, described = _eval_tasks(args.aqua)
        run = lambda: evaluate(  # noqa: E731
            HFBackend(model, tokenizer, batch_size=args.batch_size, source=str(folder)),
            tasks=tasks,
            data_dir=data_dir,
            limit=limit,
            use_cache=False,
        )
        _, eval_s = timed(run, repeat=2)

    share = 100 * second_s / eval_s
    data = {
        "preset": args.preset,
        "model_folder_bytes": size,
        "first_fingerprint_s": first_s,
        "second_fingerprint_s": second_s,
        "state_dict_fingerprint_s": memory_s,
        "evaluation_s": eval_s,
        "evaluation": described,
        "second_fingerprint_share_percent": share,
        "torch_threads": torch.get_num_threads(),
    }
    markdown = f"""## Evaluation cache: fingerprint overhead

Command: `python benchmarks/bench_eval_cache.py --preset {args.preset} --aqua {args.aqua} --batch-size {args.batch_size}`; {machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads. Model folder: `{args.preset}` saved as safetensors, {size / 2**20:.1f} MiB.

| step | seconds | share of the evaluation |
|---|---:|---:|
| fingerprint, first time (every file hashed) | {first_s:.3f} | {100 * first_s / eval_s:.3f}% |
| fingerprint, second time (digests remembered by path, size, mtime) | {second_s:.4f} | {share:.3f}% |
| fingerprint of an in-memory model (state dict hashed) | {memory_s:.3f} | {100 * memory_s / eval_s:.3f}% |
| small evaluation: {described}, batch {args.batch_size}, cache off | {eval_s:.2f} | 100% |

The first fingerprint hashed {size / 2**20 / first_s:.0f} MiB/s; the second costs {share:.3f}% of the evaluation ({"under" if share < 1 else "NOT under"} the 1% target): a `stat` per file plus hashing the tokenizer and config; the weights are not read again.
"""
    write_section("eval_cache", markdown, data)


if __name__ == "__main__":
    main()
