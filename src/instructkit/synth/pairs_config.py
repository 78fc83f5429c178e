"""Every setting of `synth pairs` (on-policy preference pairs checked by an exact answer), declared once.

The CLI options are derived from these fields; this module imports only pydantic, so `--help` stays fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_TASK = "gsm8k:split=train,num_fewshot=0"  # training questions: never the test split


class PairsSampling(BaseModel):
    """What to ask, how to sample and how to split: shared by `synth pairs` and a recipe's `pairs:` stage."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(
        DEFAULT_TASK,
        description="An exact-answer task as `eval --tasks` names it (gsm8k:split=train, catalog/NAME), "
        "or a JSONL file of {question, answer} rows (answers compared by their last number).",
    )
    data_dir: str | None = Field(None, description="Folder of local benchmark files (e.g. ../shared/data).")
    samples: int = Field(8, ge=2, description="Answers sampled per question.")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature.")
    seed: int = Field(0, description="Seed of the sampling (each question draws from its own seed).")
    limit: int | None = Field(None, ge=1, description="Use only the first N questions.")
    max_new_tokens: int | None = Field(None, ge=1, description="Tokens per answer (unset: the task's).")
    stop: list[str] | None = Field(
        None,
        description="Stop sequences (unset: the task's; `--stop ''` or `[]`: none, the reply ends at end-of-turn).",
    )
    prompt_style: Literal["chat", "chat_multiturn"] = Field(
        "chat",
        description="How the task's prompt becomes the pair's prompt messages (as `eval --prompt-style`).",
    )
    holdout: int = Field(
        0, ge=0, description="Pairs (the last ones, in question order) written to heldout.jsonl."
    )
    backend: str = Field("hf", description="Evaluation backend that samples (hf, vllm, openai).")
    batch_size: int = Field(16, ge=1, description="Requests per backend batch.")
    max_model_len: int | None = Field(None, description="Prompt + answer tokens the backend allows.")
    shard_size: int = Field(64, ge=1, description="Questions per shard; a rerun skips finished shards.")


class PairsConfig(PairsSampling):
    """`synth pairs`: sample answers per question, pair a right one (chosen) with a wrong one (rejected)."""

    model: str = Field(
        description="The policy that answers (path, hub id or pretrained: name; needs a chat template)."
    )
    out: str = Field(
        description="Output folder: pairs.jsonl (preference rows), heldout.jsonl, summary.json, shards/."
    )


class PairsSpec(PairsSampling):
    """A recipe's `pairs:` section: the pairs stage builds the preference set that `prepare` tokenizes."""

    model: str | None = Field(None, description="The policy that answers; unset: the recipe's train.model.")
