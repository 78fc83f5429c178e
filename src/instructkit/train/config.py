"""`TrainConfig`: every training setting, documented once where it is declared, plus optimizer presets.

Presets are starting points from the papers; any explicit field overrides the preset's value:
- `tulu`: AdamW, linear warm-up over 3% of steps, linear decay, lr 2e-5, no weight decay (Tülu).
- `flan`: Adafactor, constant learning rate 1e-3, no warm-up (Flan 2022 / T5 fine-tuning).
- `flan-t5`: the same settings, named for encoder-decoder runs: Flan-T5 was fine-tuned with Adafactor
  at a constant learning rate of 1e-3 (Chung et al. 2022, "Scaling Instruction-Finetuned Language
  Models", Appendix E; T5X's fine-tuning configs). Refusing fp16 for T5 is `setup.check_model_kind`.
A `tiny:` model is trained from random initialisation, so unless `learning_rate` is given it uses 1e-3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from ..models.tiny import is_tiny

Objective = Literal["sft", "pretrain", "dpo"]
PreferenceLoss = Literal["sigmoid", "ipo", "dpo_norm", "simpo", "orpo"]
# Settings of `objective: dpo` only; left out of every dump (run identity, stage keys, train_config.json)
# of other runs, so adding them changed nothing recorded for SFT.
PREFERENCE_FIELDS = ("dpo_loss", "beta", "simpo_gamma", "orpo_lambda", "label_smoothing")
Method = Literal["full", "lora", "qlora"]
Optimizer = Literal["adamw", "adafactor"]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]


class OptimizerSettings(BaseModel):
    """The resolved optimizer/scheduler: a preset with explicit overrides applied."""

    model_config = ConfigDict(frozen=True)

    optimizer: Optimizer
    learning_rate: float
    lr_scheduler: Scheduler
    warmup_ratio: float
    weight_decay: float


PRESETS: dict[str, OptimizerSettings] = {
    "tulu": OptimizerSettings(
        optimizer="adamw", learning_rate=2e-5, lr_scheduler="linear", warmup_ratio=0.03, weight_decay=0.0
    ),
    "flan": OptimizerSettings(
        optimizer="adafactor", learning_rate=1e-3, lr_scheduler="constant", warmup_ratio=0.0, weight_decay=0.0
    ),
    "flan-t5": OptimizerSettings(  # Chung et al. 2022, Appendix E (T5X): Adafactor, constant lr 1e-3
        optimizer="adafactor", learning_rate=1e-3, lr_scheduler="constant", warmup_ratio=0.0, weight_decay=0.0
    ),
}
TINY_LEARNING_RATE = 1e-3

# TrainingArguments names for our optimizer choices (torch AdamW; transformers' Adafactor).
HF_OPTIM = {"adamw": "adamw_torch", "adafactor": "adafactor"}


class TrainSettings(BaseModel):
    """How to train: model, objective, adapters, optimisation, checkpoints and logging (a recipe's `train:`)."""

    model_config = ConfigDict(extra="forbid")

    # --- what to train ---
    model: str = Field("tiny:micro", description="Hub id, local path, or tiny:<nano|micro|small|base>.")
    objective: Objective = Field(
        "sft",
        description="sft: loss where labels say; pretrain: every token; dpo: preference loss on data "
        "prepared from chosen/rejected pairs (see dpo_loss).",
    )
    trust_remote_code: bool = Field(False, description="Allow model code from the hub (off unless asked).")
    attn_implementation: str | None = Field(
        None,
        description="None picks flash_attention_2 on GPU when installed; else for packed data "
        "instructkit_varlen on CUDA (torch's varlen_attn, kept if the isolation check passes) or "
        "instructkit_docs (per-document attention); sdpa for padded data.",
    )
    tiny_seed: int = Field(0, description="Initialisation seed of a tiny: model.")

    # --- adapters ---
    method: Method = Field("full", description="full fine-tuning, LoRA, or QLoRA (4-bit base, GPU only).")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA branch.")
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or all-linear (every Linear except the LM head)."
    )

    @field_validator("lora_target_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        """`q_proj,v_proj` (as typed on a command line) is a list of module names."""
        if isinstance(value, str) and value != "all-linear":
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    merge_lora: bool = Field(False, description="Save the merged full model instead of adapters only.")

    # --- optimisation ---
    preset: Literal["tulu", "flan", "flan-t5"] = Field(
        "tulu",
        description="Optimizer preset (flan-t5: Flan-T5's Adafactor settings); fields below override it.",
    )
    optimizer: Optimizer | None = Field(None, description="Override the preset's optimizer.")
    learning_rate: float | None = Field(None, gt=0, description="Override the preset's peak learning rate.")
    lr_scheduler: Scheduler | None = Field(None, description="Override the preset's schedule.")
    warmup_ratio: float | None = Field(None, ge=0.0, lt=1.0, description="Warm-up as a fraction of steps.")
    weight_decay: float | None = Field(None, ge=0.0, description="Override the preset's weight decay.")
    max_grad_norm: float = Field(1.0, ge=0.0, description="Gradient clipping norm (0 disables).")
    epochs: float = Field(1.0, gt=0, description="Passes over the data (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Optimizer steps to run; -1 means use `epochs`.")
    micro_batch_size: int = Field(
        1, ge=1, description="Rows per micro-batch; packed rows are concatenated into one padding-free row."
    )
    gradient_accumulation_steps: int = Field(8, ge=1, description="Micro-batches per optimizer step.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations to save memory.")
    precision: Precision = Field("auto", description="auto: bf16 on a GPU that supports it, else fp32.")
    seed: int = Field(42, description="Seed of data order and dropout.")

    # --- checkpoints and logging ---
    save_steps: int = Field(500, ge=1, description="Write a checkpoint every N optimizer steps.")
    save_total_limit: int = Field(2, ge=1, description="Keep only the last K checkpoints.")
    logging_steps: int = Field(10, ge=1, description="Log metrics every N optimizer steps.")
    resume: bool = Field(False, description="Continue from the last complete checkpoint in output_dir.")
    overwrite: bool = Field(False, description="Delete existing checkpoints in output_dir and start over.")
    report_to: list[str] = Field(
        default_factory=list, description="e.g. tensorboard, wandb (passed through)."
    )
    progress: bool = Field(True, description="Show the rich progress bar.")
    dataloader_num_workers: int = Field(0, ge=0, description="Workers loading batches.")

    # --- preference tuning (objective dpo; formulas as TRL's DPOTrainer, CPOTrainer and ORPOTrainer) ---
    dpo_loss: PreferenceLoss = Field(
        "sigmoid",
        description="sigmoid (DPO) | ipo | dpo_norm (length-normalized DPO, Tülu 3) | simpo | orpo "
        "(simpo and orpo need no reference model).",
    )
    beta: float = Field(
        0.1,
        gt=0,
        description="β: strength of the reference KL term (sigmoid, ipo, dpo_norm) or SimPO's scale.",
    )
    simpo_gamma: float = Field(0.5, ge=0, description="SimPO's target reward margin γ (the loss uses γ/β).")
    orpo_lambda: float = Field(
        0.1, gt=0, description="ORPO's weight λ of the odds-ratio term beside the SFT loss."
    )
    label_smoothing: float = Field(
        0.0,
        ge=0.0,
        lt=0.5,
        description="Conservative DPO: the assumed chance a pair's labels are flipped (sigmoid, simpo).",
    )

    @model_serializer(mode="wrap")
    def _drop_unused_preference(self, handler):
        """Preference settings appear in dumps only for `objective: dpo` (see PREFERENCE_FIELDS)."""
        data = handler(self)
        if self.objective != "dpo":
            for name in PREFERENCE_FIELDS:
                data.pop(name, None)
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainSettings:
        if self.merge_lora and self.method == "full":
            raise ValueError("merge_lora needs method lora or qlora")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        return self

    def optimizer_settings(self) -> OptimizerSettings:
        """The preset with every explicitly set field applied on top."""
        base = PRESETS[self.preset]
        lr = self.learning_rate or (TINY_LEARNING_RATE if is_tiny(self.model) else base.learning_rate)
        return OptimizerSettings(
            optimizer=self.optimizer or base.optimizer,
            learning_rate=lr,
            lr_scheduler=self.lr_scheduler or base.lr_scheduler,
            warmup_ratio=base.warmup_ratio if self.warmup_ratio is None else self.warmup_ratio,
            weight_decay=base.weight_decay if self.weight_decay is None else self.weight_decay,
        )


class TrainConfig(TrainSettings):
    """One training run: the settings plus the prepared data it reads and the folder it writes."""

    data: Path = Field(description="Directory written by `instructkit data prepare` (save_to_disk).")
    output_dir: Path = Field(description="Checkpoints, final model, metrics.jsonl, model card.")
    # Here, not in TrainSettings: a recipe's `train:` never forces (the pipeline sets stale checkpoints
    # aside instead), and its stage key stays what it was.
    force_resume: bool = Field(
        False,
        description="Resume even when the last checkpoint was made with other settings, data or model "
        "(each difference is named and recorded in train_config.json).",
    )
    allow_base_mismatch: bool = Field(
        False,
        description="Continue a LoRA adapter on a base whose content differs from the one it was "
        "trained on (refused by default; a warning names both).",
    )

    @model_validator(mode="after")
    def _check_force(self) -> TrainConfig:
        if self.force_resume and self.overwrite:
            raise ValueError("force_resume and overwrite exclude each other")
        return self
