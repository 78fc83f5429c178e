"""The command line: `run`, `section` (internal), `wheels`, `install-wheels`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .config import CPU_SIZES, CUDA_SIZES, H200_BF16_PEAK_FLOPS, SECTIONS
from .context import Ctx
from .runner import run, run_section_here
from .wheels import download_wheels, install_wheels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gpu_check",
        description="One prepared check that the toolkit's GPU paths work (scripts/gpu_check).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the check (default device: cuda)")
    r.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    r.add_argument("--out", default=os.environ.get("OUT") or "out/gpu_check")
    r.add_argument("--sections", default=",".join(SECTIONS))
    r.add_argument("--isolation", choices=("fork", "spawn"), default="fork")
    r.add_argument("--peak-tflops", type=float, default=H200_BF16_PEAK_FLOPS / 1e12)
    r.add_argument("--accelerate-config", default=None, help="default: configs/accelerate/fsdp.yaml")
    r.add_argument(
        "--work", default=None, help="scratch folder (default: a new temporary one, deleted after)"
    )
    r.add_argument("--keep-work", action="store_true")
    r.add_argument(
        "--budget", action="append", default=[], metavar="SECTION=SECONDS", help="override a budget"
    )
    s = sub.add_parser("section", help="(internal) run one section in this process")
    s.add_argument("name", choices=SECTIONS)
    s.add_argument("--device", required=True)
    s.add_argument("--work", required=True)
    s.add_argument("--result", required=True)
    s.add_argument("--budget", type=float, required=True)
    s.add_argument("--options", default="{}")
    w = sub.add_parser("wheels", help="download the wheels the GPU machine lacks")
    w.add_argument("--dest", default="benchmarks/_work/gpu_wheels")
    w.add_argument("--python-version", default="3.12")
    w.add_argument("--limit-mib", type=float, default=56.0)
    i = sub.add_parser("install-wheels", help="install carried wheels the running Python lacks")
    i.add_argument("folder")
    i.add_argument("target")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "run":
        return run(args)
    if args.command == "section":
        sizes = CUDA_SIZES if args.device == "cuda" else CPU_SIZES
        ctx = Ctx(
            args.device,
            sizes,
            Path(args.work),
            Path(args.result),
            time.monotonic() + args.budget,
            args.budget,
            json.loads(args.options),
        )
        return run_section_here(args.name, ctx)
    if args.command == "wheels":
        return download_wheels(Path(args.dest), args.python_version, args.limit_mib)
    manifest = install_wheels(Path(args.folder), Path(args.target))
    print(
        f"installed {sum(m['installed'] for m in manifest)} of {len(manifest)} carried wheels into {args.target}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
