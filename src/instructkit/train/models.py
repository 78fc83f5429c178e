"""Model and tokenizer construction: hub/local loading and `tiny:<preset>` models for CPU runs and tests.

A tiny model is a randomly initialised Llama-architecture `LlamaForCausalLM`; its tokenizer is a
byte-level BPE trained locally with `tokenizers` (digits split one per token, so small models can
learn arithmetic), wrapped as a `PreTrainedTokenizerFast` carrying the `tulu` chat template.

A GGUF file (or a directory holding one) is accepted wherever a model or tokenizer is: transformers
reads it (the `gguf` package) and dequantizes its weights; `import_gguf` writes it out once as a
safetensors directory so later runs load in a fraction of a second.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.chat_templates import BUILTIN_TEMPLATES, TEMPLATE_SPECIAL_TOKENS
from ..errors import InstructkitError

TINY_PREFIX = "tiny:"
GGUF_SUFFIX = ".gguf"
TRAIN_DTYPE = "float32"  # master weights of full and LoRA training; bf16/fp16 runs autocast around them


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


def default_tokenizer(model: str, tokenizer: str | None = None) -> str:
    """The tokenizer to prepare data with for `model`: the one given, else the model's own.

    A `tiny:` model has no tokenizer of its own; its data trains a BPE of the preset's size.
    """
    if tokenizer:
        return tokenizer
    return model if not is_tiny(model) else f"{TINY_PREFIX}{model[len(TINY_PREFIX) :] or 'micro'}"


def gguf_location(source: str | Path) -> tuple[str, str] | None:
    """(directory, file name) when `source` is a GGUF file or a directory holding one; else None.

    A directory with a `config.json` is a transformers directory even if a GGUF sits beside it.
    """
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() == GGUF_SUFFIX:
        return str(path.parent), path.name
    if not path.is_dir() or (path / "config.json").exists():
        return None
    found = sorted(p.name for p in path.iterdir() if p.suffix.lower() == GGUF_SUFFIX)
    if len(found) > 1:
        raise InstructkitError(
            f"{path}: holds {len(found)} GGUF files ({', '.join(found)}); name one of them"
        )
    return (str(path), found[0]) if found else None


def gguf_load_args(source: str, for_model: bool = False) -> tuple[str, dict[str, Any]]:
    """(what to pass to from_pretrained, extra kwargs): `gguf_file=` when `source` is GGUF, else unchanged.

    For a model the weights are always dequantized: transformers would otherwise keep them packed
    (GGUF kernels, where installed), which can be neither trained nor saved as safetensors.
    """
    location = gguf_location(source)
    if location is None:
        return source, {}
    extra: dict[str, Any] = {"gguf_file": location[1]}
    if for_model:
        from transformers import GgufConfig

        extra["quantization_config"] = GgufConfig(gguf_file=location[1], dequantize=True)
    return location[0], extra


def finish_gguf_model(model: Any, source: str, quiet: bool = False) -> Any:
    """Drop the GGUF quantizer marker (the weights are already dequantized; saving refuses while it is set)."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if not quiet:
        from rich.console import Console

        Console(stderr=True).print(
            f"[yellow]note:[/] {source} holds quantized GGUF weights; they were dequantized to {model.dtype} "
            "(training updates these, the GGUF quantization is not kept). Run "
            "`instructkit models import FILE.gguf --out DIR` once to load faster next time.",
            highlight=False,
        )
    return model


def import_gguf(gguf: str | Path, out: str | Path, dtype: str = "float32", overwrite: bool = False) -> Path:
    """Convert a GGUF model (weights, tokenizer, chat template) into a safetensors directory `out`.

    Written next to `out` and renamed into place, so a crash (or a concurrent import) never leaves a
    half-written directory.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from ..hub import hub_error, load_tokenizer

    gguf, out = Path(gguf).expanduser(), Path(out).expanduser()
    if not gguf.is_file() or gguf.suffix.lower() != GGUF_SUFFIX:
        raise InstructkitError(f"{gguf}: not a GGUF file (expected an existing *.gguf file)")
    if out.exists() and not overwrite:
        raise InstructkitError(f"{out} already exists; pass --overwrite to replace it")
    tokenizer = load_tokenizer(str(gguf))
    try:
        source, extra = gguf_load_args(str(gguf), for_model=True)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype), **extra)
    except Exception as exc:  # transformers raises ValueError/OSError for unsupported architectures
        raise hub_error("model", str(gguf), exc) from exc
    model = finish_gguf_model(model, str(gguf), quiet=True)
    from ..atomic import atomic_dir

    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        meta = {"source": gguf.name, "source_bytes": gguf.stat().st_size, "dtype": dtype}
        (tmp / "instructkit_import.json").write_text(json.dumps(meta, indent=2))
    return out


def model_max_positions(source: str, trust_remote_code: bool = False) -> int | None:
    """`max_position_embeddings` of a local model directory or GGUF file; None when there is no config."""
    name, extra = gguf_load_args(source)
    if not extra and not (Path(source).expanduser() / "config.json").is_file():
        return None  # a tokenizer-only folder, a tiny: preset, or a hub id (not fetched just for this)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, **extra)
    except Exception:  # a folder whose config transformers cannot read: nothing to check against
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text_config, "max_position_embeddings", None)


def check_max_length(source: str, max_length: int, trust_remote_code: bool = False) -> None:
    """Refuse a `max_length` beyond the positions the model at `source` was built for."""
    positions = model_max_positions(source, trust_remote_code)
    if positions is not None and max_length > positions:
        raise InstructkitError(
            f"--max-length {max_length} exceeds the {positions} positions model {source} supports "
            f"(max_position_embeddings); use --max-length {positions} or less"
        )


def ensure_pad_token(tokenizer: Any) -> Any:
    """Give a tokenizer without a pad token its EOS (or UNK) as pad: padded batches need an id, never trained."""
    if tokenizer.pad_token_id is None:
        fallback = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
        if fallback is None:
            raise InstructkitError("the tokenizer has no pad, EOS or UNK token to pad batches with")
        tokenizer.pad_token = fallback
    return tokenizer


def load_model_and_tokenizer(
    model: str,
    tokenizer: str | None = None,
    *,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    quantize_4bit: bool = False,
    max_length: int = 4096,
    tiny_seed: int = 0,
    dtype: str = TRAIN_DTYPE,
):
    """(model, tokenizer) for a hub id, local path, GGUF file or `tiny:<preset>`.

    Weights load in `dtype` (fp32 master weights; a bf16 run autocasts around them) whatever the
    checkpoint's own dtype; QLoRA keeps a 4-bit base with bf16 compute. `tokenizer` is where to load
    the tokenizer from (the prepared data's `tokenizer/`); a `tiny:` model needs it and is sized to
    it. Without it a hub/local model's own tokenizer is used.
    """
    import torch

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
        tok = ensure_pad_token(load_tokenizer(str(tokenizer)))
        lm = build_tiny_model(model, tok, seed=tiny_seed, max_position_embeddings=max(max_length, 64))
        if attn_implementation:
            lm.set_attn_implementation(attn_implementation)
        return lm.to(getattr(torch, dtype)), tok
    tok = load_tokenizer(str(tokenizer or model), trust_remote_code=trust_remote_code)
    kwargs: dict[str, Any] = {
        "attn_implementation": attn_implementation or default_attn_implementation(),
        "dtype": getattr(torch, dtype),
    }
    if quantize_4bit:
        check_qlora_supported()
        if gguf_location(model) is not None:
            raise InstructkitError(
                f"{model}: QLoRA needs unquantized weights to quantize; run "
                "`instructkit models import FILE.gguf --out DIR` and train DIR"
            )
        kwargs |= {"quantization_config": _quantization_config(torch.bfloat16), "dtype": torch.bfloat16}
    lm = load_causal_lm(model, trust_remote_code=trust_remote_code, **kwargs)
    return lm, ensure_pad_token(tok)


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
