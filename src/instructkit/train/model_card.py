"""The model card (README.md) of a training run: base model, data, mixture stats, hyper-parameters, loss."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _table(rows: dict[str, Any]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {json.dumps(v) if isinstance(v, (list, dict)) else v} |" for k, v in rows.items()]
    return "\n".join(lines)


def formats_line(formats: dict[str, dict[str, Any]]) -> str:
    """Every input format of the data with its files and rows, e.g. `alpaca: 1 file, 4 rows (a.jsonl)`."""
    parts = []
    for name, group in formats.items():
        files = group.get("files", [])
        names = ", ".join(Path(f).name for f in files)
        parts.append(
            f"{name}: {len(files)} file{'s' if len(files) != 1 else ''}, "
            f"{group.get('rows_kept', 0):,} rows kept of {group.get('rows_read', 0):,} ({names})"
        )
    return "; ".join(parts)


def render_model_card(
    config, data, result, log_history: list[dict], warnings: list[str] | None = None
) -> str:
    """Markdown naming the base model, the data and its mixture stats, the hyper-parameters and the loss.

    `warnings` (e.g. an adapter continued on a base other than its own) get a section under the title.
    """
    opt = config.optimizer_settings()
    losses = [r for r in log_history if "loss" in r]
    hyper = {
        "objective": config.objective,
        "method": config.method,
        **(
            {
                "lora_r": config.lora_r,
                "lora_alpha": config.lora_alpha,
                "lora_target_modules": config.lora_target_modules,
            }
            if config.method != "full"
            else {}
        ),
        "optimizer preset": config.preset,
        **opt.model_dump(),
        "micro batch (rows)": config.micro_batch_size,
        "gradient accumulation": config.gradient_accumulation_steps,
        "effective batch (tokens/step)": f"{result.effective_batch_tokens:,.0f}",
        "max grad norm": config.max_grad_norm,
        "epochs / max steps": f"{config.epochs} / {config.max_steps}",
        "seed": config.seed,
    }
    data_rows = {k: v for k, v in data.meta.items() if not isinstance(v, str) or len(v) < 200}
    if data.meta.get("input_formats"):
        data_rows["input_formats"] = formats_line(data.meta["input_formats"])
    parts = [
        "---\nlibrary_name: transformers\ntags: [instructkit, instruction-tuning]\n---",
        f"# {Path(config.output_dir).name}",
        f"Trained with `instructkit train` from **{config.model}** on `{config.data}`"
        f" ({'packed, padding-free' if data.packed else 'padded'}).",
        *(["## Warnings\n" + "\n".join(f"- {w}" for w in warnings)] if warnings else []),
        "## Data\n" + _table(data_rows or {"rows": len(data.dataset)}),
        "## Mixture stats\n" + (_table(data.stats) if data.stats else "(no stats.json)"),
        "## Hyper-parameters\n" + _table(hyper),
        "## Result\n"
        + _table(
            {
                "optimizer steps": result.global_step,
                "final logged loss": result.final_loss,
                "first logged loss": losses[0]["loss"] if losses else None,
                "resumed from": result.resumed_from.name if result.resumed_from else "-",
            }
        ),
        "Metrics per log step are in `metrics.jsonl`; the resolved config is `train_config.json`.",
    ]
    return "\n\n".join(parts) + "\n"


def write_model_card(
    config, data, result, log_history: list[dict], warnings: list[str] | None = None
) -> Path:
    """Write README.md into the output directory and return its path."""
    path = Path(config.output_dir) / "README.md"
    path.write_text(render_model_card(config, data, result, log_history, warnings))
    return path
