"""Run sections one after the other, each in its own process within its time budget; write the reports."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .config import CPU_BUDGETS, CPU_SIZES, CUDA_BUDGETS, CUDA_SIZES, PACKAGE, TOLERANCES
from .context import Ctx
from .report import write_reports
from .sections import SECTION_FUNCS


def section_status(record: dict) -> str:
    """error (the section itself raised) > failed (a case failed or errored) > passed > skipped."""
    if record.get("traceback"):
        return "error"
    statuses = [c["status"] for c in record.get("cases", [])]
    if any(s in ("failed", "error", "running") for s in statuses):
        return "failed"
    return "passed" if "passed" in statuses else "skipped"


def run_section_here(name: str, ctx: Ctx) -> int:
    """Run one section in this process and save its record; 0 unless the section raised."""
    ctx.record = {"section": name, "status": "running", "cases": []}
    ctx.save()
    try:
        SECTION_FUNCS[name](ctx)
    except Exception:
        ctx.record["traceback"] = traceback.format_exc(limit=12)
    ctx.record["status"] = section_status(ctx.record)
    ctx.save()
    return 0 if ctx.record["status"] != "error" else 1


def _child_main(name: str, ctx: Ctx, log: Path) -> None:
    """In the forked child: own process group (so a timeout kills launched grandchildren), logs to a file."""
    os.setpgid(0, 0)
    fd = os.open(str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = 1
    try:
        code = run_section_here(name, ctx)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _start(name: str, ctx: Ctx, log: Path, isolation: str) -> int:
    """Start the section: fork (modules already imported) or spawn a fresh interpreter; return its pid."""
    if isolation == "fork":
        pid = os.fork()
        if pid == 0:
            _child_main(name, ctx, log)
        return pid
    cmd = [
        sys.executable,
        str(PACKAGE),
        "section",
        name,
        "--device",
        ctx.device,
        "--work",
        str(ctx.work),
        "--result",
        str(ctx.result_path),
        "--budget",
        str(ctx.budget),
        "--options",
        json.dumps(ctx.options),
    ]
    with log.open("w") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True).pid


def _wait(pid: int, deadline: float) -> tuple[int | None, bool]:
    """(exit code, timed out): kill the section's whole process group at its deadline."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None, True
        time.sleep(0.2)


def run_isolated(name: str, ctx: Ctx, isolation: str, logs: Path) -> dict:
    """Run a section in its own process within its budget; return its record, however it ended."""
    log = logs / f"{name}.log"
    start = time.monotonic()
    pid = _start(name, ctx, log, isolation)
    code, timed_out = _wait(pid, ctx.deadline)
    record = (
        json.loads(ctx.result_path.read_text())
        if ctx.result_path.is_file()
        else {"section": name, "cases": []}
    )
    record["seconds"] = round(time.monotonic() - start, 1)
    record["budget_s"] = ctx.budget
    tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
    if timed_out:
        record["status"] = "timeout"
        record["traceback"] = f"killed at its {ctx.budget:.0f} s budget; log tail:\n{tail}"
    elif code != 0 and not record.get("traceback"):
        record["status"] = "error"
        record["traceback"] = f"section process exited with {code}; log tail:\n{tail}"
    return record


def _preimport() -> None:
    """Import the heavy modules once so forked sections start at once (never touches CUDA here)."""
    for module in (
        "torch",
        "transformers",
        "datasets",
        "accelerate",
        "peft",
        "instructkit.train.trainer",
        "instructkit.evaluate.backends.hf",
    ):
        with contextlib.suppress(Exception):
            __import__(module)


def run(args: argparse.Namespace) -> int:
    """All chosen sections, one after the other; results.json and results.md rewritten after each."""
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = CUDA_SIZES if args.device == "cuda" else CPU_SIZES
    budgets = dict(CUDA_BUDGETS if args.device == "cuda" else CPU_BUDGETS)
    for item in args.budget:
        name, seconds = item.split("=")
        budgets[name] = float(seconds)
    isolation = args.isolation
    if isolation == "fork":
        _preimport()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            isolation = "spawn"  # a forked child cannot use CUDA the parent initialised
    options = {"peak_flops": args.peak_tflops * 1e12, "accelerate_config": args.accelerate_config}
    summary = {
        "mode": args.device,
        "isolation": isolation,
        "peak_flops": options["peak_flops"],
        "peak_flops_note": "H200 SXM dense bf16 (989 TFLOPS) unless --peak-tflops says otherwise",
        "tolerances": TOLERANCES,
        "budgets_s": budgets,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sections": [],
    }
    t0 = time.monotonic()
    try:
        for name in args.sections.split(","):
            ctx = Ctx(
                args.device,
                sizes,
                work,
                work / f"{name}.json",
                time.monotonic() + budgets[name],
                budgets[name],
                options,
            )
            record = run_isolated(name, ctx, isolation, out / "logs")
            if name == "env" and isolation == "fork" and args.device == "cuda" and not _cuda_ok(record):
                isolation = summary["isolation"] = (
                    "spawn"  # forked sections could not use CUDA: use fresh ones
                )
                ctx = Ctx(
                    args.device,
                    sizes,
                    work,
                    work / "env.json",
                    time.monotonic() + budgets[name],
                    budgets[name],
                    options,
                )
                record = run_isolated(name, ctx, isolation, out / "logs")
            summary["sections"].append(record)
            summary["seconds"] = round(time.monotonic() - t0, 1)
            write_reports(summary, out)
    finally:
        summary["status"] = overall_status(summary["sections"])
        summary["seconds"] = round(time.monotonic() - t0, 1)
        write_reports(summary, out)
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    print((out / "results.md").read_text())
    return 0 if summary["status"] == "passed" else 1


def _cuda_ok(env_record: dict) -> bool:
    """Whether the env section's process could use CUDA."""
    return any(c["case"] == "device" and c["status"] == "passed" for c in env_record.get("cases", []))


def overall_status(sections: list[dict]) -> str:
    bad = [s["section"] for s in sections if s.get("status") not in ("passed", "skipped")]
    return "passed" if not bad else "failed: " + ", ".join(bad)
