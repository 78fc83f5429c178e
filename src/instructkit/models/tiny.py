"""`tiny:<preset>` models for CPU runs and tests: a random Llama and a byte-level BPE trained here.

Digits are split one per token so small models can learn arithmetic; the tokenizer carries a
built-in chat template (`tulu` unless asked otherwise). `tiny:t5-<preset>` is a random encoder-decoder
(T5) instead, with a T5-style tokenizer (pad, eos appended, no bos, no chat template).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import InstructkitError
from .chat_templates import BUILTIN_TEMPLATES, TEMPLATE_SPECIAL_TOKENS

TINY_PREFIX = "tiny:"


@dataclass(frozen=True)
class TinyPreset:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int  # BPE vocabulary to train when the tokenizer is built for this preset
    num_key_value_heads: int | None = None  # None: one per attention head (no grouped-query attention)


TINY_PRESETS: dict[str, TinyPreset] = {
    # ~0.4M parameters: unit tests.
    "nano": TinyPreset(64, 2, 4, 192, 1024),
    # ~1M parameters: quick CPU runs.
    "micro": TinyPreset(128, 2, 4, 384, 2048),
    # ~8M parameters: the CPU quickstart.
    "small": TinyPreset(256, 4, 8, 768, 4096),
    # ~50M parameters: a longer CPU run or a quick GPU one.
    "base": TinyPreset(512, 8, 8, 1536, 16384),
    # SmolLM2-135M's shape (its weights do not travel to the GPU check): GPU throughput checks.
    "135m": TinyPreset(576, 30, 9, 1536, 49152, num_key_value_heads=3),
    # Llama-3.2-1B's shape, 1.24 B parameters with tied embeddings: GPU throughput checks.
    "1b": TinyPreset(2048, 16, 32, 8192, 128256, num_key_value_heads=8),
}


SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"] + sorted({t for ts in TEMPLATE_SPECIAL_TOKENS.values() for t in ts})


def is_tiny(name: str) -> bool:
    return name.startswith(TINY_PREFIX)


def tiny_preset(name: str) -> TinyPreset:
    """Resolve `tiny:<preset>` (or a bare preset name) to its sizes."""
    key = name[len(TINY_PREFIX) :] if is_tiny(name) else name
    try:
        return TINY_PRESETS[key or "micro"]
    except KeyError:
        raise InstructkitError(
            f"unknown tiny preset {key!r}; presets: {', '.join([*TINY_PRESETS, *TINY_T5_PRESETS])}"
        ) from None


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 2048, chat_template: str = "tulu"):
    """Train a byte-level BPE on `texts` and wrap it as a PreTrainedTokenizerFast with a chat template."""
    from transformers import PreTrainedTokenizerFast

    bpe = _byte_level_bpe(texts, vocab_size, SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<pad>", "<s>", "</s>")],
    )
    tokenizer.chat_template = BUILTIN_TEMPLATES[chat_template]
    tokenizer.model_max_length = 1 << 20
    return tokenizer


def is_tiny_tokenizer(name: str) -> bool:
    """`tiny` or `tiny:<preset>`: a tokenizer trained on the data at hand, not one to load."""
    return name == "tiny" or is_tiny(name)


def tiny_tokenizer(name: str, texts: Iterable[str], chat_template: str = "tulu"):
    """The BPE `tiny[:preset]` names (bare `tiny` is `tiny:micro`), trained on `texts`."""
    if is_tiny_t5(name):  # an encoder-decoder tokenizer: eos appended, no chat template
        return train_tiny_t5_tokenizer(texts, vocab_size=tiny_t5_preset(name).vocab_size)
    preset = tiny_preset(name if is_tiny(name) else f"{TINY_PREFIX}micro")
    return train_tiny_tokenizer(texts, vocab_size=preset.vocab_size, chat_template=chat_template)


def _byte_level_bpe(texts: Iterable[str], vocab_size: int, special_tokens: list[str]):
    """A byte-level BPE (digits split one by one) trained on `texts`, specials first in the vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_batched(texts), trainer=trainer)
    return bpe


def _batched(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def tiny_llama_config(
    preset: str | TinyPreset, vocab_size: int | None = None, *, config_class: Any = None, **overrides: Any
):
    """The config of a preset (a LlamaConfig unless `config_class`, e.g. MistralConfig, says otherwise):
    tied embeddings, sdpa, the preset's vocabulary unless `vocab_size`; `overrides` are config fields.

    The one place tiny shapes are spelled out: the tiny models, doctor, the GPU check and tests use it.
    """
    if config_class is None:
        from transformers import LlamaConfig as config_class

    p = tiny_preset(preset) if isinstance(preset, str) else preset
    fields = {
        "vocab_size": vocab_size or p.vocab_size,
        "hidden_size": p.hidden_size,
        "intermediate_size": p.intermediate_size,
        "num_hidden_layers": p.num_hidden_layers,
        "num_attention_heads": p.num_attention_heads,
        "num_key_value_heads": p.num_key_value_heads or p.num_attention_heads,
        "tie_word_embeddings": True,
        "attn_implementation": "sdpa",
    }
    return config_class(**(fields | overrides))


def build_tiny_model(preset: str | TinyPreset, tokenizer, seed: int = 0, max_position_embeddings: int = 4096):
    """A randomly initialised LlamaForCausalLM sized by `preset`, with vocabulary = len(tokenizer)."""
    import torch
    from transformers import LlamaForCausalLM

    config = tiny_llama_config(
        preset,
        vocab_size=len(tokenizer),
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def default_tokenizer(model: str, tokenizer: str | None = None) -> str:
    """The tokenizer to prepare data with for `model`: the one given, else the model's own.

    A `tiny:` model has no tokenizer of its own; its data trains a BPE of the preset's size.
    """
    if tokenizer:
        return tokenizer
    return model if not is_tiny(model) else f"{TINY_PREFIX}{model[len(TINY_PREFIX) :] or 'micro'}"


# --- encoder-decoder (T5) presets: `tiny:t5-<preset>` -------------------------------------------------

T5_PREFIX = "t5-"


@dataclass(frozen=True)
class TinyT5Preset:
    d_model: int
    num_layers: int  # encoder layers, and as many decoder layers
    num_heads: int
    d_ff: int
    vocab_size: int  # vocabulary of the tokenizer trained for this preset


TINY_T5_PRESETS: dict[str, TinyT5Preset] = {
    # ~0.3M parameters: unit tests.
    "t5-nano": TinyT5Preset(64, 2, 4, 128, 1024),
    # ~6M parameters: quick CPU runs.
    "t5-small": TinyT5Preset(256, 4, 4, 512, 4096),
}
T5_SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]  # T5's ids 0, 1, 2; no bos (T5 has none)


def is_tiny_t5(name: str) -> bool:
    """`tiny:t5-<preset>`: a random encoder-decoder (T5) built here, not a causal tiny model."""
    return is_tiny(name) and name[len(TINY_PREFIX) :].startswith(T5_PREFIX)


def tiny_t5_preset(name: str) -> TinyT5Preset:
    """Resolve `tiny:t5-<preset>` to its sizes."""
    key = name[len(TINY_PREFIX) :] if is_tiny(name) else name
    try:
        return TINY_T5_PRESETS[key]
    except KeyError:
        raise InstructkitError(
            f"unknown tiny encoder-decoder preset {key!r}; presets: {', '.join(TINY_T5_PRESETS)}"
        ) from None


def train_tiny_t5_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """A byte-level BPE with what T5 needs: `<pad>` (0, also the decoder start), `</s>` (1) appended to
    every encoded text by the post-processor, `<unk>` (2), and no bos token; no chat template."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    bpe = _byte_level_bpe(texts, vocab_size, T5_SPECIAL_TOKENS)
    eos = bpe.token_to_id("</s>")
    bpe.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.model_max_length = 1 << 20
    return tokenizer


def build_tiny_t5_model(name: str, tokenizer, seed: int = 0):
    """A randomly initialised T5ForConditionalGeneration (T5 v1.1 / Flan-T5 layout: gated-GELU,
    untied head) sized by `tiny:t5-<preset>`, vocabulary = len(tokenizer), decoder start = pad.

    Dropout is 0 so that CPU runs and parity checks are deterministic; relative-position buckets as T5.
    """
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    p = tiny_t5_preset(name)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=p.d_model,
        d_kv=p.d_model // p.num_heads,
        d_ff=p.d_ff,
        num_layers=p.num_layers,
        num_decoder_layers=p.num_layers,
        num_heads=p.num_heads,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    with torch.no_grad():  # HF draws the untied head with std 1: logits of std ~sqrt(d_model), a first
        model.lm_head.weight.mul_(p.d_model**-0.5)  # loss near 90 nats; scaled as a tied head is, ~ln V
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.decoder_start_token_id = tokenizer.pad_token_id
    return model
