"""`PrepareConfig`: every setting of `instructkit data prepare`, declared once, where it is documented.

`PrepareSettings` is what a recipe's `prepare:` section holds; `PrepareConfig` adds the sources and
the output folder a command or a pipeline stage supplies. The CLI options are derived from these
fields (`cli_options.options_from`), so a default or a help text lives here and nowhere else. This
module imports only pydantic, so `--help` stays fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

LossOn = Literal["assistant", "last_assistant", "all"]
Overlong = Literal["truncate", "drop", "split"]
OnError = Literal["raise", "skip"]
ControlTokens = Literal["text", "refuse"]


class PrepareSettings(BaseModel):
    """How conversations become token rows: tokenizer, template, masks, lengths, packing, bad rows."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    tokenizer: str | None = Field(
        None,
        description="Tokenizer path, hub id or .gguf; tiny[:preset] trains a small BPE on the data. "
        "In a recipe, unset means the training model's own tokenizer.",
    )
    max_length: int = Field(2048, ge=8, description="Token limit of one example (and of one pack).")
    pack: bool = Field(False, description="Pack examples with global best-fit decreasing.")
    chat_template: str | None = Field(
        None, description="tulu | chatml | llama3 | plain | a Jinja string; unset: the tokenizer's own."
    )
    loss_on: LossOn = Field(
        "assistant", description="assistant (every reply) | last_assistant | all (pretraining)."
    )
    overlong: Overlong = Field("truncate", description="truncate | drop | split (split: pretraining only).")
    input_format: str | None = Field(
        None,
        validation_alias=AliasChoices("input_format", "format"),
        description="Force the input format (alpaca, sharegpt, messages, ...) instead of detecting it "
        "from the columns.",
    )
    on_error: OnError = Field(
        "raise", description="raise: stop at the first bad row; skip: write it to rejects.jsonl and go on."
    )
    skip_unknown_files: bool = Field(
        False,
        description="In a directory, skip files of unknown kind (listed in stats.json) instead of stopping.",
    )
    control_tokens: ControlTokens = Field(
        "text",
        description="Control-token strings inside content: text (encode as plain text) or refuse the row.",
    )
    num_proc: int = Field(1, ge=1, description="Processes for tokenization (the output does not change).")
    trust_remote_code: bool = Field(False, description="Allow tokenizer code from the hub (off by default).")


class PrepareConfig(PrepareSettings):
    """One `data prepare` run: the settings plus where the rows come from and where they go."""

    sources: list[str] = Field(
        description="JSONL/JSON/Parquet/CSV files (also .gz/.bz2/.xz/.zst) or directories (hidden entries "
        "skipped), saved datasets, or hub ids OWNER/NAME[:CONFIG][@SPLIT]."
    )
    out: str = Field(description="Output directory (a datasets directory plus stats.json).")
