"""`tiny:<preset>` models for CPU runs and tests: a random Llama and a byte-level BPE trained here.

Digits are split one per token so small models can learn arithmetic; the tokenizer carries a
built-in chat template (`tulu` unless asked otherwise).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

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


TINY_PRESETS: dict[str, TinyPreset] = {
    # ~0.4M parameters: unit tests.
    "nano": TinyPreset(64, 2, 4, 192, 1024),
    # ~1M parameters: quick CPU runs.
    "micro": TinyPreset(128, 2, 4, 384, 2048),
    # ~8M parameters: the CPU quickstart.
    "small": TinyPreset(256, 4, 8, 768, 4096),
    # ~50M parameters: a longer CPU run or a quick GPU one.
    "base": TinyPreset(512, 8, 8, 1536, 16384),
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
        raise InstructkitError(f"unknown tiny preset {key!r}; presets: {', '.join(TINY_PRESETS)}") from None


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 2048, chat_template: str = "tulu"):
    """Train a byte-level BPE on `texts` and wrap it as a PreTrainedTokenizerFast with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_batched(texts), trainer=trainer)
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


def _batched(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def build_tiny_model(preset: str | TinyPreset, tokenizer, seed: int = 0, max_position_embeddings: int = 4096):
    """A randomly initialised LlamaForCausalLM sized by `preset`, with vocabulary = len(tokenizer)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    p = tiny_preset(preset) if isinstance(preset, str) else preset
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=p.hidden_size,
        intermediate_size=p.intermediate_size,
        num_hidden_layers=p.num_hidden_layers,
        num_attention_heads=p.num_attention_heads,
        num_key_value_heads=p.num_attention_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
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
