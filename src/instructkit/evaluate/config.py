"""Evaluation settings, each declared once with its type, default and description.

`EvalConfig` is what `instructkit eval run` takes (its options are derived from it) and what
results.json records; `EvaluateSpec` is a recipe's `evaluate:` section. Both extend `EvalSettings`,
the settings they share. Imports only pydantic and the standard library, so `--help` stays fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

PromptStyle = Literal["base", "chat", "chat_multiturn"]


class EvalSettings(BaseModel):
    """The settings of a benchmark evaluation that `eval run` and a recipe's `evaluate:` share."""

    model_config = ConfigDict(extra="forbid")

    suite: str | None = Field(None, description="Built-in benchmark suite (flan, tulu) or a suite YAML path.")
    data_dir: str | None = Field(
        None,
        description="Local benchmark files (e.g. ../shared/data); unset: the hub "
        "(a recipe run first looks for ../shared/data).",
    )
    prompt_style: PromptStyle = Field(
        "base",
        description="base: plain text; chat: the prompt as one user turn of the chat template; "
        "chat_multiturn: each exemplar its own user/assistant exchange.",
    )
    batch_size: int = Field(
        16,
        ge=1,
        description="Rows per forward pass (log-likelihoods move only by float rounding: docs/evaluation.md).",
    )


class EvalConfig(EvalSettings):
    """Everything that decides an evaluation's numbers (`eval run` options; recorded in results.json)."""

    tasks: list[str] = Field(
        default_factory=list,
        description="Benchmark specs, e.g. gsm8k:cot=true,num_fewshot=8 or catalog/NAME.",
    )
    limit: int | None = Field(
        None, ge=1, description="First N documents of each task (quick runs); unset: all."
    )
    max_batch_tokens: int | None = Field(
        None, ge=1, description="hf only: at most this many padded tokens per batch; unset: batch_size rows."
    )
    deterministic: bool = Field(
        False, description="hf only: bit-identical results for any batch size (each request alone; slower)."
    )
    seed: int = Field(0, description="Seed of sampled generations and bootstrap intervals.")
    use_cache: bool = Field(
        True, description="Keep scored requests in the run folder's cache.sqlite, so a rerun resumes."
    )
    allow_code_execution: bool = Field(
        False, description="Run generated code against the task's tests (HumanEval)."
    )
    bootstrap: int = Field(1000, ge=1, description="Bootstrap resamples of each task's 95% interval.")
    allow_base_mismatch: bool = Field(
        False,
        description="hf only: evaluate a LoRA adapter on a base whose content differs from the one it "
        "was trained on (refused by default; a warning in results.json and the report names both).",
    )
    lm_eval_tasks: list[str] = Field(
        default_factory=list,
        description="lm-evaluation-harness tasks (comma list, e.g. piqa,arc_easy,gsm8k:num_fewshot=8), run "
        "with lm-eval's own prompts, filters and metrics on the hf backend; --limit and --prompt-style apply.",
    )
    lm_eval_include: list[str] = Field(
        default_factory=list, description="Folders (or files) of extra lm-eval task YAMLs."
    )

    @field_validator("lm_eval_tasks", "lm_eval_include", mode="before")
    @classmethod
    def _split_commas(cls, value: object, info: ValidationInfo) -> object:
        """`piqa,gsm8k` (one option value, or a YAML string) as two names; `gsm8k:num_fewshot=8,k=v,piqa`
        keeps `k=v` (no `:`, an `=`) with the spec before it, as `--tasks` specs take options."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            return value
        out: list[str] = []
        for part in (p.strip() for item in items for p in str(item).split(",")):
            option = info.field_name == "lm_eval_tasks" and "=" in part and ":" not in part
            if out and option and ":" in out[-1]:
                out[-1] += "," + part
            elif part:
                out.append(part)
        return out


class EvalSetSpec(BaseModel):
    """One group of evaluations: catalog tasks (which templates, which shots), or held-out corpus QA."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Label in the report, e.g. heldout_rows.")
    kind: Literal["catalog", "heldout_qa"] = Field(
        "catalog", description="heldout_qa: zero-shot questions about the corpus's held-out texts."
    )
    tasks: list[str] = Field(
        default_factory=list, description="Task names; `@train` means the mixture's tasks."
    )
    clusters: list[str] = Field(default_factory=list, description="Every catalog task of these clusters.")
    templates: Literal["train", "heldout", "eval"] = Field(
        "eval",
        description="train: templates seen in training; heldout: the task's held-out ones; eval: the task's default.",
    )
    k_shot: list[int] = Field(default_factory=lambda: [0], description="Shots to evaluate (one run each).")
    cot: bool = Field(False, description="Chain-of-thought prompts and answer extraction.")
    split: str | None = Field(None, description="Task split to evaluate (default: each task's eval split).")
    limit: int | None = Field(100, description="Rows per task and template (None: all).")


class EvaluateSpec(EvalSettings):
    """A recipe's `evaluate:` section: the base and the tuned model on catalog sets and benchmarks."""

    sets: list[EvalSetSpec] = Field(default_factory=list, description="Catalog or held-out QA eval sets.")
    benchmarks: list[str] = Field(
        default_factory=list, description=EvalConfig.model_fields["tasks"].description
    )
    benchmark_limit: int | None = Field(
        50, ge=1, description="Documents per benchmark task (null: all); the eval sets have their own limit."
    )
    compare_base: bool = Field(True, description="Also evaluate the untrained base model.")
    # The one default that differs from `eval run`: a recipe evaluates the model it has just
    # instruction-tuned, which answers through its chat template; `eval run` may get any model.
    prompt_style: PromptStyle = Field(
        "chat", description=EvalSettings.model_fields["prompt_style"].description
    )

    def eval_config(self, seed: int, default_data_dir: str | None = None) -> EvalConfig:
        """The EvalConfig of this section's benchmarks, with the recipe's seed.

        `benchmark_limit` applies only when there are benchmarks (it is `eval run --limit`).
        """
        shared = self.model_dump(include=set(EvalSettings.model_fields))
        return EvalConfig(
            **{**shared, "data_dir": self.data_dir or default_data_dir},
            tasks=list(self.benchmarks),
            limit=self.benchmark_limit if self.benchmarks or self.suite else None,
            seed=seed,
        )
