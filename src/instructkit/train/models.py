"""Model and tokenizer construction: hub/local loading and `tiny:<preset>` models for CPU runs and tests.

A tiny model is a randomly initialised Llama-architecture `LlamaForCausalLM`; its tokenizer is a
byte-level BPE trained locally with `tokenizers` (digits split one per token, so small models can
learn arithmetic), wrapped as a `PreTrainedTokenizerFast` carrying the `tulu` chat template.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..data.chat_templates import BUILTIN_TEMPLATES, TEMPLATE_SPECIAL_TOKENS
from ..errors import InstructkitError

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


def default_attn_implementation() -> str:
    """flash_attention_2 on a CUDA GPU where flash-attn is installed (varlen packing), else sdpa."""
    import torch
    from transformers.utils import is_flash_attn_2_available

    return "flash_attention_2" if torch.cuda.is_available() and is_flash_attn_2_available() else "sdpa"


def check_qlora_supported() -> None:
    """QLoRA needs a CUDA GPU and bitsandbytes; say so plainly instead of failing deep inside loading."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise InstructkitError("QLoRA (4-bit) needs a CUDA GPU; on CPU use --method lora or --method full")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InstructkitError("QLoRA needs bitsandbytes: pip install 'instructkit[gpu]'")


def _quantization_config(dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )


def load_model_and_tokenizer(
    model: str,
    tokenizer: str | None = None,
    *,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    quantize_4bit: bool = False,
    max_length: int = 4096,
    tiny_seed: int = 0,
):
    """(model, tokenizer) for a hub id, local path or `tiny:<preset>`; weights in fp32 (autocast does bf16).

    `tokenizer` is where to load the tokenizer from (the prepared data's `tokenizer/`); a `tiny:` model
    needs it and is sized to it. Without it a hub/local model's own tokenizer is used.
    """
    from ..hub import load_causal_lm, load_tokenizer

    if is_tiny(model):
        if quantize_4bit:
            check_qlora_supported()
            raise InstructkitError(
                "QLoRA quantizes a pretrained model; train a tiny: model with lora or full"
            )
        if tokenizer is None:
            raise InstructkitError(
                "a tiny: model needs a tokenizer (the prepared data's tokenizer/ directory)"
            )
        tok = load_tokenizer(str(tokenizer))
        lm = build_tiny_model(model, tok, seed=tiny_seed, max_position_embeddings=max(max_length, 64))
        if attn_implementation:
            lm.set_attn_implementation(attn_implementation)
        return lm, tok
    tok = load_tokenizer(str(tokenizer or model), trust_remote_code=trust_remote_code)
    kwargs = {"attn_implementation": attn_implementation or default_attn_implementation()}
    if quantize_4bit:
        import torch

        check_qlora_supported()
        kwargs |= {"quantization_config": _quantization_config(torch.bfloat16), "dtype": torch.bfloat16}
    lm = load_causal_lm(model, trust_remote_code=trust_remote_code, **kwargs)
    if tok.pad_token_id is None:  # padded mode needs one; packed mode never pads
        tok.pad_token = tok.eos_token
    return lm, tok


def apply_lora(
    model, r: int = 16, alpha: int = 32, dropout: float = 0.05, target_modules="all-linear", qlora=False
):
    """Wrap `model` with peft LoRA adapters on `target_modules` (names, or "all-linear"); base weights frozen."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)
