"""Every setting of `synth generate|corpus|train-data` and of the recipe's corpus stage, declared once.

`CorpusDocuments` (how texts become pretraining documents: length, what is mixed in) is shared by the
recipe's `corpus:` section (`CorpusSpec`), the corpus stage (`PretrainCorpusConfig`) and `synth corpus`
(`CorpusConfig`); `Chains` by every model that runs the synthesizer. The CLI options are derived
from these fields (`cli_options.options_from`), so a default or a help text lives here and nowhere
else. This module imports only pydantic, so `--help` stays fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SynthesizerSize = Literal["test", "small"]
DEFAULT_SYNTHESIZER = "default"  # the tiny synthesizer trained offline (`synth.default_synthesizer`)
TRAINED_SYNTHESIZER = "trained"  # a model fine-tuned by the recipe (`corpus.synthesizer_training`)
GENERATED = "generated"  # raw texts: generated paragraphs that carry gold questions


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Chains(_Settings):
    """How the synthesizer reads: texts in multi-round chains."""

    rounds: int = Field(
        2,
        ge=1,
        description="Texts per multi-round chain: each prompt carries the chain's earlier texts and pairs.",
    )


class CorpusDocuments(_Settings):
    """How rendered texts become pretraining documents: their length and what is mixed in."""

    # 2048 like `data prepare --max-length`, so one document fits one training example.
    max_length: int = Field(
        2048, ge=16, description="Tokens per corpus document, EOS included (texts concatenated M-shot)."
    )
    general: str | None = Field(
        None, description="General instruction data to mix in (any format `data prepare` reads)."
    )
    general_ratio: float = Field(
        0.0, ge=0, description="General examples per augmented document (the paper mixes 1:1)."
    )
    plain: str | None = Field(
        None, description="Plain text (a `text` column) mixed in as it is, never augmented."
    )
    plain_ratio: float = Field(0.0, ge=0, description="Plain-text documents per augmented document.")


class CorpusBuild(_Settings):
    """What one corpus build needs besides the recipe section: the tokenizer that counts, and the seed."""

    tokenizer: str | None = Field(
        None,
        description="Tokenizer of the model to pretrain (path or hub id; the corpus stage also takes "
        "tiny[:preset], a BPE trained on the raw texts); unset: the synthesizer's.",
    )
    seed: int = Field(0, description="Seed of template choice, held-out texts, document order and mixing.")


class _PairsIO(_Settings):
    pairs: str = Field(description="A `synth generate` folder or JSONL rows with text + pairs.")
    out: str = Field(description="Output dataset folder (a `text` column).")


class CorpusConfig(CorpusDocuments, CorpusBuild, _PairsIO):
    """`synth corpus`: texts with their pairs (a `synth generate` folder) → an M-shot corpus."""


class SynthesizerTraining(_Settings):
    """A synthesizer fine-tuned from a real (or tiny) model on context-task data, then measured against
    its own untuned base with the same prompt: response F1 on held-out texts of seen and unseen datasets."""

    model: str = Field(description="The base model to tune (`pretrained:…`, path, hub id or tiny:preset).")
    sources: list[str] = Field(
        description="Context-task data (`synth train-data` sources), unseen ones included."
    )
    unseen: list[str] = Field(
        default_factory=list, description="Datasets held out whole: never trained on, evaluated as unseen."
    )
    holdout: float = Field(
        0.2, gt=0, lt=1, description="Share of each seen dataset's texts held out for evaluation."
    )
    max_length: int = Field(
        1024, ge=16, description="Tokens per training row (few-shot examples concatenated)."
    )
    max_shots: int = Field(
        4, ge=1, description="Examples of one dataset per training row (1: one-shot only)."
    )
    method: Literal["full", "lora"] = Field("full", description="Full fine-tuning or LoRA (rank 16).")
    max_steps: int = Field(100, ge=1, description="Optimizer steps.")
    micro_batch_size: int = Field(2, ge=1)
    gradient_accumulation_steps: int = Field(4, ge=1)
    learning_rate: float = Field(2e-5, gt=0, description="Peak learning rate (cosine, 5% warmup).")
    eval_rows: int = Field(40, ge=1, description="Held-out rows per dataset scored by response F1.")
    max_new_tokens: int = Field(32, ge=1, description="Generated tokens per response (response F1).")
    pair_texts: int = Field(16, ge=0, description="Held-out contexts given free generation (parse rate).")
    pair_max_new_tokens: int = Field(200, ge=1, description="Tokens per free generation (parse rate).")
    max_model_len: int = Field(2048, ge=64, description="Prompt + generation budget while evaluating.")


class CorpusSpec(CorpusDocuments, Chains):
    """The recipe's `corpus:` section: the same raw texts as a pretraining corpus, augmented or plain."""

    raw: str = Field(
        GENERATED, description="`generated` paragraphs (they carry gold questions) or a raw-text file."
    )
    texts: int = Field(200, ge=2, description="Raw texts in the corpus, held-out ones included.")
    heldout: int = Field(
        40, ge=0, description="Texts never given pairs; their questions make the `heldout_qa` eval sets."
    )
    augment: bool = Field(
        True, description="Add synthesized instruction–response pairs (else raw texts only)."
    )
    synthesizer: str = Field(
        DEFAULT_SYNTHESIZER,
        description="`default`: train the tiny synthesizer (stage `synthesizer`); `trained`: tune the one "
        "`synthesizer_training` describes (same stage); or a model path.",
    )
    size: SynthesizerSize = Field("small", description="Size of the default synthesizer.")
    synthesizer_training: SynthesizerTraining | None = Field(
        None, description="How stage `synthesizer` tunes and measures the `trained` synthesizer."
    )
    max_model_len: int | None = Field(
        None,
        ge=64,
        description="Synthesizer prompt + generation budget while writing pairs (half is generation); "
        "unset: the model's context, at most 4096.",
    )

    @model_validator(mode="after")
    def _trained_has_training(self) -> CorpusSpec:
        if (self.synthesizer == TRAINED_SYNTHESIZER) != (self.synthesizer_training is not None):
            raise ValueError("synthesizer `trained` goes with a `synthesizer_training` section, and only it")
        return self


class PretrainCorpusConfig(CorpusSpec, CorpusBuild):
    """The corpus stage: the recipe section plus the tokenizer, the seed and the output folder."""

    out: str = Field(
        description="Folder: corpus/ (text dataset), tokenizer/, heldout_qa.jsonl, pairs/ when augmented."
    )


class SynthEngine(_Settings):
    """How the synthesizer model runs: its backend, batch and length budget (`generate` and `evaluate`)."""

    backend: str = Field("hf", description="hf (batched generate with KV cache) or vllm (GPU).")
    batch_size: int = Field(16, ge=1, description="Prompts per generate call (hf backend).")
    max_model_len: int = Field(4096, ge=8, description="Prompt + generation budget in tokens.")


class _GenerateIO(_Settings):
    model: str = Field(
        DEFAULT_SYNTHESIZER,
        description="Synthesizer path or hub id (model + tokenizer); `default`: train the tiny one "
        "(size small) into OUT/default_synthesizer.",
    )
    input: str = Field(description="Raw texts: JSONL/JSON/Parquet/CSV file or folder, saved dataset, .txt.")
    out: str = Field(description="Output folder (shards/, config.json, summary.json).")


# Bases in this order so that the options list model, input and out first (pydantic orders fields by
# reversed MRO); the same holds for `_PairsIO` above and `_MeasureIO` below.
class GenerateConfig(SynthEngine, Chains, _GenerateIO):
    """`synth generate`: raw texts → instruction–response pairs, sharded and resumable."""

    text_field: str = Field("text", description="Column holding the raw text.")
    group_field: str | None = Field(
        None, description="Column grouping texts of one document (e.g. article title) into chains."
    )
    max_new_tokens: int = Field(
        400, ge=1, description="Generated tokens per text (the released synthesizer's)."
    )
    shard_size: int = Field(
        1000, ge=1, description="Texts per shard (whole chains, so a shard may hold a few more)."
    )
    num_workers: int = Field(
        1, ge=1, description="Parallel processes over shards (one GPU each where present; Ray: actors)."
    )
    max_shards: int | None = Field(None, description="Stop after this many unfinished shards.")
    limit: int | None = Field(None, description="Read only the first N texts.")

    @property
    def budget(self) -> int:
        """Prompt tokens: what generation leaves of the model's length."""
        return self.max_model_len - self.max_new_tokens


class TrainDataConfig(_Settings):
    """`synth train-data`: context-based task data → tokenized synthesizer training rows."""

    sources: list[str] = Field(
        description="Context-task data (files/folders/saved datasets), or procedural:NAME[:N] / "
        "paragraphs:NAME[:N]."
    )
    out: str = Field(description="Output folder in the `data prepare` layout.")
    tokenizer: str = Field("tiny:micro", description="Tokenizer path/hub id, or tiny[:preset] to train one.")
    max_length: int = Field(1024, ge=8, description="Tokens per training row.")
    max_shots: int = Field(4, ge=1, description="Examples of one dataset concatenated per row.")
    holdout: float = Field(
        0.0, ge=0, lt=1, description="Share of each dataset's examples held out for `synth evaluate`."
    )
    seed: int = Field(0, description="Seed of the hold-out split and the row order.")


class MeasureSettings(SynthEngine):
    """How `synth evaluate` measures a synthesizer: response F1, then pair statistics of free generation."""

    max_new_tokens: int = Field(48, ge=1, description="Generated tokens per response (response F1).")
    pair_texts: int = Field(
        32, ge=0, description="Contexts the synthesizer writes pairs for freely (pair statistics)."
    )
    pair_max_new_tokens: int = Field(
        200, ge=1, description="Generated tokens per free generation (pair statistics)."
    )

    @model_validator(mode="after")
    def _prompt_fits(self) -> MeasureSettings:
        if self.pair_max_new_tokens >= self.max_model_len:
            raise ValueError("pair_max_new_tokens must be below max_model_len (the prompt needs room)")
        return self


class _MeasureIO(_Settings):
    model: str = Field(description="Synthesizer path or hub id.")
    data: list[str] = Field(description="Context-task rows (e.g. a train-data folder's held_out.jsonl).")
    train_data: str | None = Field(
        None, description="The synthesizer's train-data folder: its datasets are 'seen'."
    )
    seen: str | None = Field(None, description="Comma-separated dataset names seen in training.")
    out: str | None = Field(None, description="Write the report JSON here.")


class SynthEvalConfig(MeasureSettings, _MeasureIO):
    """`synth evaluate`: response F1 (seen/unseen datasets) and pair statistics of a synthesizer."""
