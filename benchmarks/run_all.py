"""Run every benchmark (prepare, packing, train, DPO, attention, eval, caches, seq2seq, Ray, CLI) and assemble benchmarks/RESULTS.md from their sections.

`make bench` (installs the `bench` extra: TRL and lm-evaluation-harness) or
`python benchmarks/run_all.py [prepare train eval]` to run some; sections not rerun are kept;
`python benchmarks/run_all.py --assemble` rebuilds RESULTS.md from the sections without running any.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "prepare": "bench_prepare.py",
    "packing": "bench_packing.py",
    "big_row": "bench_big_row.py",
    "train": "bench_train.py",
    "train_real": "bench_train_real.py",
    "dpo": "bench_dpo.py",
    "attention": "bench_attention.py",
    "eval": "bench_eval.py",
    "eval_tiny": None,  # the previous landing's tiny-model comparison, kept as written
    "eval_cache": "bench_eval_cache.py",
    "lm_eval_tasks": "bench_lm_eval_tasks.py",
    "seq2seq": "bench_seq2seq.py",
    "synth_ray": "bench_synth_ray.py",
    "cli": "bench_cli.py",
}
HEADER = """# Benchmark results

Side-by-side runs against the reference tools, same data, tokenizer, model and machine in one run.
Regenerate with `make bench` (or `python benchmarks/run_all.py`). Numbers come from the scripts, never
typed by hand; each section names its command and machine.
"""


def main(names: list[str]) -> None:
    for name in names or [n for n, script in BENCHMARKS.items() if script]:
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, str(HERE / BENCHMARKS[name])], check=True)
    assemble()


def assemble() -> Path:
    """Concatenate results/<name>.md in a fixed order into RESULTS.md."""
    parts = [HEADER]
    for name in BENCHMARKS:
        section = HERE / "results" / f"{name}.md"
        parts.append(section.read_text() if section.is_file() else f"## {name}\n\nNot run yet.\n")
    path = HERE / "RESULTS.md"
    path.write_text("\n".join(parts))
    return path


if __name__ == "__main__":
    if sys.argv[1:] == ["--assemble"]:
        print(assemble())
    else:
        main(sys.argv[1:])
