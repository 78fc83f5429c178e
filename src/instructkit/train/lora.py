"""LoRA and QLoRA on a loaded model: a new adapter, or an existing adapter folder continued or merged.

`--model ADAPTER_FOLDER` (adapter_config.json, no config.json) loads the adapter's base, then:
with `--method lora`/`qlora` training continues that adapter (its own rank, alpha and target
modules; options given that differ are refused), so the output is again one adapter on the same
base; with `--method full` the adapter is merged into the base first (said in the log) and the
merged weights are trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InstructkitError


def _quiet_peft() -> None:
    """peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`; the warning is theirs, not the user's."""
    import warnings

    warnings.filterwarnings(
        "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
    )


def apply_lora(
    model, r: int = 16, alpha: int = 32, dropout: float = 0.05, target_modules="all-linear", qlora=False
):
    """Wrap `model` with peft LoRA adapters on `target_modules` (names, or "all-linear"); base weights frozen."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    _quiet_peft()
    if qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    task = "SEQ_2_SEQ_LM" if getattr(model.config, "is_encoder_decoder", False) else "CAUSAL_LM"  # T5 & co
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type=task
    )
    return get_peft_model(model, config)


def adapt_model(model, config, adapter: Path | None):
    """The model a run trains: `model` (the base) with a new LoRA, the adapter at `adapter` continued
    (LoRA) or merged in (full), or unchanged (full, no adapter)."""
    lora = config.method in ("lora", "qlora")
    if adapter is not None:
        return continue_lora(model, adapter, config) if lora else merge_adapter(model, adapter)
    if not lora:
        return model
    import torch

    # A new LoRA's A matrices are drawn from torch's global generator, which starts from a random seed in
    # every process and is seeded by the Trainer only later: seeded here, a rerun starts from the same adapter.
    torch.manual_seed(config.seed)
    return apply_lora(
        model,
        config.lora_r,
        config.lora_alpha,
        config.lora_dropout,
        config.lora_target_modules,
        qlora=config.method == "qlora",
    )


def continue_lora(model, adapter: Path, config):
    """`model` (the adapter's base) with the adapter at `adapter` loaded trainable: training continues it,
    with its own rank, alpha and target modules (`check_lora_settings`); a dropout given applies.

    `config` takes the adapter's settings, so train_config.json and the model card say what ran.
    """
    from peft import prepare_model_for_kbit_training

    from ..models.loading import attach_adapter, saved_lora_config

    _quiet_peft()
    saved = saved_lora_config(adapter)
    check_lora_settings(config, saved, model, adapter)
    if "lora_dropout" in config.model_fields_set:
        saved.lora_dropout = config.lora_dropout
    targets = saved.target_modules
    config.lora_r, config.lora_alpha, config.lora_dropout = saved.r, saved.lora_alpha, saved.lora_dropout
    config.lora_target_modules = targets if isinstance(targets, str) else sorted(targets)
    if config.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return attach_adapter(model, adapter, trainable=True, config=saved)


def _target_names(targets: Any, model) -> Any:
    """Target modules comparably: a set of names, "all-linear" resolved on `model` as peft resolves it."""
    if isinstance(targets, str) and targets.lower() == "all-linear":
        from peft import LoraConfig
        from peft.tuners.tuners_utils import _maybe_include_all_linear_layers

        probe = LoraConfig(target_modules="all-linear", task_type="CAUSAL_LM")
        targets = _maybe_include_all_linear_layers(probe, model).target_modules
    return targets if isinstance(targets, str) else frozenset(targets)


def check_lora_settings(config, saved, model, adapter: Path) -> None:
    """Refuse LoRA options the user gave (`model_fields_set`) that differ from the adapter being continued.

    Options left out take the adapter's values; continuing with another rank, scale or set of
    modules would be a different adapter, not this one trained further.
    """
    given = config.model_fields_set
    differences = [
        f"{flag} {mine} given, the adapter has {theirs}"
        for field, flag, mine, theirs in (
            ("lora_r", "--lora-r", config.lora_r, saved.r),
            ("lora_alpha", "--lora-alpha", config.lora_alpha, saved.lora_alpha),
        )
        if field in given and mine != theirs
    ]
    if "lora_target_modules" in given:
        mine, theirs = config.lora_target_modules, saved.target_modules
        if _target_names(mine, model) != _target_names(theirs, model):
            shown = sorted(theirs) if not isinstance(theirs, str) else theirs
            differences.append(f"--lora-target-modules {mine} given, the adapter has {shown}")
    if differences:
        raise InstructkitError(
            f"{adapter}: continuing this LoRA adapter keeps its own settings: {'; '.join(differences)}. "
            "Leave these options out (or match them), or start a new adapter from its base"
        )


def merge_adapter(model, adapter: Path):
    """`model` (the adapter's base) with the adapter at `adapter` merged into its weights, all trainable:
    full fine-tuning of an adapter folder trains base + adapter as one model (`adapter_notes` says so)."""
    from ..models.loading import attach_adapter

    _quiet_peft()
    merged = attach_adapter(model, adapter).merge_and_unload()
    return merged.requires_grad_(True)  # peft froze the base to load the adapter; full training trains it all


def adapter_notes(config, adapter: Path | None, base: str) -> list[str]:
    """What the log says about the adapter a run starts from: merged first, for full fine-tuning."""
    if adapter is None or config.method in ("lora", "qlora"):
        return []
    return [
        f"--method full on adapter {adapter}: it is merged into its base {base} first; the merged "
        "weights are trained and saved as a full model (use --method lora to continue the adapter)"
    ]


def record_base(config, model, adapter: Path | None = None) -> None:
    """Record the base's identity beside the adapters a LoRA run saves (nothing for full runs).

    Written into `output_dir` before training, so the final adapter saved there carries it, and
    `checkpoint.publish` copies it into each adapter checkpoint; loading one later checks it
    (`models.adapters.check_adapter_base`). A merged run keeps it too: the base it was merged onto.
    A continued adapter carries over the record of the adapter it continues (the same base).
    """
    from ..models.adapters import base_record, read_base_record, write_base_record

    if config.method not in ("lora", "qlora"):
        return
    record = read_base_record(adapter) if adapter is not None else None
    reference = str(config.model) if adapter is None else str(model.name_or_path)
    write_base_record(config.output_dir, record or base_record(reference, model))
