"""One 10 MB conversation through `data prepare`: wall time and peak memory (issue: "seconds, not a minute and 4 GB").

Run: .venv/bin/python benchmarks/bench_big_row.py [MEGABYTES]
Prints the time of the whole prepare call, of the tokenizer's own encode of the same text (the floor
no masking code can go below), and the process's peak resident memory.
"""

from __future__ import annotations

import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from instructkit.data.prepare import PrepareConfig, prepare
from instructkit.models.tiny import train_tiny_tokenizer

WORDS = ["hello", "the", "answer", "is", "47.", "sea", "waves", "\n", "code", "x = 1;", "    indent"]


def main(megabytes: float = 10.0) -> None:
    random.seed(0)
    size = int(megabytes * 1_000_000)
    reply = " ".join(random.choice(WORDS) for _ in range(size // 5))[:size].strip()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        tokenizer = train_tiny_tokenizer([reply[:200_000]], vocab_size=2048)
        tokenizer.save_pretrained(tmp_path / "tok")
        row = {
            "messages": [
                {"role": "user", "content": "Write it out."},
                {"role": "assistant", "content": reply},
            ]
        }
        (tmp_path / "big.jsonl").write_text(json.dumps(row) + "\n")
        start = time.perf_counter()
        tokenizer.backend_tokenizer.encode(reply, add_special_tokens=False)
        floor = time.perf_counter() - start
        cfg = PrepareConfig(
            sources=[str(tmp_path / "big.jsonl")], tokenizer=str(tmp_path / "tok"), out=str(tmp_path / "out"),
            max_length=10**8,
        )  # fmt: skip
        start = time.perf_counter()
        stats = prepare(cfg, progress=False)
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line = (
        f"{megabytes:g} MB row: prepare {seconds:.1f} s (tokenizer encode alone {floor:.1f} s), "
        f"{stats['tokens']:,} tokens, {stats['trainable_tokens']:,} trained, peak RSS {peak_mb:,.0f} MB"
    )
    section = (
        "## One very large row through `data prepare`\n\n"
        f"Command: `python benchmarks/bench_big_row.py {megabytes:g}` (a {megabytes:g} MB assistant reply, "
        "byte-level BPE, exact masks).\n\n"
        f"{line}. The tokenizer's own encode of the same text is the floor no masking code can go below.\n"
    )
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / "big_row.md").write_text(section)
    (results / "big_row.json").write_text(
        json.dumps({"seconds": seconds, "encode_seconds": floor, "peak_mb": peak_mb})
    )
    print(line)


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0)
