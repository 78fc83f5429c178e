"""Loading models and tokenizers from a local path, a hub id, a .gguf file or a `tiny:` preset.

Every stage (prepare, train, evaluate, synthesize) loads through here: fast tokenizers only,
safetensors only, `trust_remote_code` off unless asked, fp32 master weights for training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InstructkitError
from ..hub import hub_error
from .gguf import finish_gguf_model, gguf_load_args, gguf_location
from .tiny import build_tiny_model, is_tiny


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    """AutoTokenizer from a local path or hub id (fast tokenizers only: masks need offsets-free exact ids)."""
    from transformers import AutoTokenizer

    from .gguf import gguf_load_args
    from .pretrained import resolve_model_ref

    # `pretrained:<name>` → its cached directory; a GGUF file (or a folder holding one) carries its tokenizer
    source, gguf = gguf_load_args(resolve_model_ref(name))
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **gguf)
    except Exception as exc:  # transformers raises OSError/ValueError/HTTP errors depending on the cause
        raise hub_error("tokenizer", name, exc) from exc


def load_causal_lm(name: str, trust_remote_code: bool = False, **kwargs: Any) -> Any:
    """AutoModelForCausalLM from a local path or hub id, safetensors only, remote code off by default."""
    from transformers import AutoModelForCausalLM

    from .gguf import gguf_load_args
    from .pretrained import resolve_model_ref

    # `pretrained:<name>` → its cached directory; a GGUF file (or a folder holding one): dequantized
    source, gguf = gguf_load_args(resolve_model_ref(name), for_model=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, trust_remote_code=trust_remote_code, use_safetensors=True, **gguf, **kwargs
        )
    except Exception as exc:
        raise hub_error("model", name, exc) from exc
    return finish_gguf_model(model, name) if gguf else model


TRAIN_DTYPE = "float32"  # master weights of full and LoRA training; bf16/fp16 runs autocast around them


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


def model_max_positions(source: str, trust_remote_code: bool = False) -> int | None:
    """`max_position_embeddings` of a local model directory or GGUF file; None when there is no config."""
    from .pretrained import resolve_model_ref

    source = resolve_model_ref(source)
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
