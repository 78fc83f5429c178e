"""How long `instructkit --help` and every `SUBCOMMAND --help` take (issue: under 1 s each).

Run: .venv/bin/python benchmarks/bench_cli.py [REPEATS]
Each command runs in a fresh interpreter (what a user's shell does); the median of REPEATS runs is
reported next to `python -c pass` (the interpreter's own start-up) and to importing torch,
transformers and datasets (what the CLI must not do before it is asked to).
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMANDS = [
    [],
    ["data", "prepare"],
    ["data", "build"],
    ["data", "show"],
    ["tasks", "list"],
    ["train"],
    ["eval", "run"],
    ["eval", "compare"],
    ["synth", "generate"],
    ["run"],
    ["models", "import"],
    ["doctor"],
]


def seconds(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(repeats: int = 5) -> None:
    python = sys.executable
    baseline = seconds([python, "-c", "pass"], repeats)
    heavy = seconds([python, "-c", "import torch, transformers, datasets"], max(1, repeats // 2))
    rows = []
    for command in COMMANDS:
        label = " ".join(["instructkit", *command, "--help"])
        rows.append((label, seconds([python, "-m", "instructkit", *command, "--help"], repeats)))
    lines = [
        "## CLI start-up: `--help` latency",
        "",
        f"Command: `python benchmarks/bench_cli.py {repeats}`; median of {repeats} fresh processes each; "
        f"Python {platform.python_version()}, {platform.machine()}, 2 cores.",
        "",
        "| command | seconds |",
        "|---|---|",
        *[f"| `{label}` | {s:.2f} |" for label, s in rows],
        f"| `python -c pass` (interpreter start-up) | {baseline:.2f} |",
        f"| `import torch, transformers, datasets` (what --help no longer pays) | {heavy:.2f} |",
        "",
    ]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "cli.md").write_text("\n".join(lines))
    (HERE / "results" / "cli.json").write_text(json.dumps({"rows": rows, "python": baseline, "heavy": heavy}))
    print("\n".join(lines))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
