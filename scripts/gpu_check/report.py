"""results.json and results.md: the section summary, then one row per case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .context import write_json


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return f"[{len(value)} items]"
    return str(value)


KEY_METRICS = (
    "tokens_per_s",
    "mfu",
    "peak_memory_GB",
    "params_M",
    "trainable_params_M",
    "packing_efficiency",
    "loglikelihood_requests_per_s",
    "generated_tokens_per_s",
    "max_abs_ll_diff",
    "varlen_speedup_vs_dense",
    "varlen_speedup_vs_docs",
    "docs_speedup_vs_dense",
    "peak_memory_GB_one projection",
    "peak_memory_GB_chunked",
    "memory_saving",
    "gpu",
    "transformers",
    "torch_version",
    "sharded_state_dict",
    "bf16",
)


def case_row(section: str, case: dict) -> str:
    """One Markdown row: section | case | status | checks (value op limit) | key metrics."""
    checks = "; ".join(
        f"{'✓' if c['ok'] else '✗'} {c['name']} {_fmt(c['value'])} {c['op']} {_fmt(c['limit'])}"
        for c in case.get("checks", [])
    )
    metrics = case.get("metrics", {})
    shown = {k: metrics[k] for k in KEY_METRICS if k in metrics} or metrics
    note = case.get("reason") or (case.get("traceback", "").strip().splitlines() or [""])[-1]
    detail = _fmt(shown) if isinstance(shown, dict) and len(str(shown)) < 400 else ""
    cells = [section, case["case"], case["status"], checks or note, detail]
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def to_markdown(summary: dict) -> str:
    """The section summary, then one row per case."""
    lines = [
        f"# gpu_check — {summary['mode']} — {summary.get('status', 'running')} ({summary.get('seconds', 0)} s)",
        "",
        f"peak for MFU: {summary['peak_flops'] / 1e12:.0f} TFLOPS ({summary['peak_flops_note']}); "
        f"sections isolated by {summary['isolation']}",
        "",
        "| section | status | seconds | budget |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s['section']} | {s.get('status')} | {s.get('seconds')} | {s.get('budget_s')} |"
        for s in summary["sections"]
    ]
    lines += ["", "| section | case | status | checks / reason | metrics |", "|---|---|---|---|---|"]
    for s in summary["sections"]:
        if s.get("status") in ("error", "timeout") and s.get("traceback"):
            last = s["traceback"].strip().splitlines()[-1] if s["traceback"].strip() else ""
            lines.append(f"| {s['section']} | (section) | {s['status']} | {last.replace('|', '/')} |  |")
        lines += [case_row(s["section"], c) for c in s.get("cases", [])]
    return "\n".join(lines) + "\n"


def write_reports(summary: dict, out: Path) -> None:
    write_json(out / "results.json", summary)
    (out / "results.md").write_text(to_markdown(summary))
