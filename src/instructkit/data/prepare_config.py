"""`PrepareConfig`: every setting of `instructkit data prepare`, declared once, where it is documented.

`PrepareSettings` is what a recipe's `prepare:` section holds; `PrepareConfig` adds the sources and
the output folder a command or a pipeline stage supplies. The CLI options are derived from these
fields (`cli_options.options_from`), so a default or a help text lives here and nowhere else. This
module imports only pydantic, so `--help` stays fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_serializer

LossOn = Literal["assistant", "last_assistant", "all"]
Overlong = Literal["truncate", "drop", "split"]
OnError = Literal["raise", "skip"]
ControlTokens = Literal["text", "refuse"]
# Settings of encoder-decoder (seq2seq) data only; left out of every dump while unset, so adding them
# changed nothing recorded for causal data (prepare.json, stage keys).
SEQ2SEQ_FIELDS = ("max_source_length", "max_target_length")


class PrepareSettings(BaseModel):
    """How conversations become token rows: tokenizer, template, masks, lengths, packing, bad rows."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    tokenizer: str | None = Field(
        None,
        description="Tokenizer path, hub id or .gguf; tiny[:preset] trains a small BPE on the data. "
        "In a recipe, unset means the training model's own tokenizer.",
    )
    max_length: int = Field(2048, ge=8, description="Token limit of one example (and of one pack).")
    max_source_length: int | None = Field(
        None,
        ge=2,
        description="Encoder-decoder models: token limit of an example's input (and of a pack's "
        "encoder row); unset: max_length.",
    )
    max_target_length: int | None = Field(
        None,
        ge=2,
        description="Encoder-decoder models: token limit of an example's target (and of a pack's "
        "decoder row); unset: max_length.",
    )
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

    @model_serializer(mode="wrap")
    def _drop_unset_seq2seq(self, handler):
        """Seq2seq length limits appear in dumps only when set (see SEQ2SEQ_FIELDS)."""
        data = handler(self)
        for name in SEQ2SEQ_FIELDS:
            if data.get(name) is None:
                data.pop(name, None)
        return data

    def seq2seq_limits(self) -> tuple[int, int]:
        """(encoder, decoder) token limits of encoder-decoder data: each its own field, else max_length."""
        return self.max_source_length or self.max_length, self.max_target_length or self.max_length


class PrepareConfig(PrepareSettings):
    """One `data prepare` run: the settings plus where the rows come from and where they go."""

    sources: list[str] = Field(
        description="JSONL/JSON/Parquet/CSV files (also .gz/.bz2/.xz/.zst) or directories (hidden entries "
        "skipped), saved datasets, or hub ids OWNER/NAME[:CONFIG][@SPLIT]."
    )
    out: str = Field(description="Output directory (a datasets directory plus stats.json).")
