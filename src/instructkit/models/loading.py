"""Resolving and loading every model reference: a local path, a hub id, a .gguf file, `pretrained:<name>`
or a `tiny:` preset.

Every stage (prepare, train, evaluate, synthesize) loads through here: fast tokenizers only,
safetensors only, `trust_remote_code` off unless asked, fp32 master weights for training.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import InstructkitError
from ..hub import check_hub_reachable, check_reference, hub_error, is_local
from .gguf import finish_gguf_model, gguf_load_args, gguf_location
from .pretrained import is_pretrained_ref, resolve_model_ref
from .tiny import (
    build_tiny_model,
    build_tiny_t5_model,
    is_tiny,
    is_tiny_t5,
    is_tiny_tokenizer,
    tiny_tokenizer,
)


def resolve_source(name: str, for_model: bool = False, kind: str = "model") -> tuple[str, dict[str, Any]]:
    """(what `from_pretrained` gets, extra kwargs) for a model reference.

    `pretrained:<name>` becomes its fetched folder; a GGUF file (or a folder holding one) its folder
    plus `gguf_file=` (dequantized when `for_model`); a path or hub id is unchanged. A reference that
    can only be a path (`hub.path_reason`) and is not on disk is refused here, before any hub request.
    """
    if is_tiny_tokenizer(name):
        return name, {}
    if not is_pretrained_ref(name):
        check_reference(name, kind)
    return gguf_load_args(resolve_model_ref(name), for_model=for_model)


def adapter_base(name: str) -> str | None:
    """The base `adapter_config.json` names, for an adapter-only folder (no config.json); else None.

    That is how adapters ship on the hub; the base is any reference (a `pretrained:` name included)
    and is resolved like every other one.
    """
    folder = Path(resolve_model_ref(name)).expanduser()  # models.adapters reads the same file (not
    config = folder / "adapter_config.json"  # imported: it identifies bases through models.identity)
    if not config.is_file() or (folder / "config.json").is_file():
        return None
    base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise InstructkitError(f"{config}: names no base_model_name_or_path to load the adapter onto")
    return str(base)


def saved_lora_config(folder: Path) -> Any:
    """The peft `LoraConfig` saved in an adapter folder; another PEFT method's adapter is refused."""
    from peft import LoraConfig

    path = folder / "adapter_config.json"
    peft_type = json.loads(path.read_text(encoding="utf-8")).get("peft_type")
    if peft_type != "LORA":
        raise InstructkitError(
            f"{path}: a {peft_type} adapter, not LoRA: only LoRA adapters can be continued"
        )
    return LoraConfig.from_pretrained(str(folder))


def attach_adapter(model: Any, folder: Path, *, trainable: bool = False, config: Any = None) -> Any:
    """A `PeftModel`: `model` (the adapter's base) with the adapter saved in `folder` (settings from
    `config` when given); `trainable` leaves the adapter's weights trainable, to train it further."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(folder), is_trainable=trainable, config=config)


def _from_pretrained(
    kind: str, name: str, load: Callable[..., Any], source: str, extra: dict[str, Any], **kwargs: Any
) -> Any:
    """`load(source, **extra, **kwargs)` for `name` resolved; a hub id is first checked to be reachable."""
    if not is_local(source):
        check_hub_reachable(kind, source)
    try:
        return load(source, **extra, **kwargs)
    except InstructkitError:
        raise
    except Exception as exc:  # transformers raises OSError/ValueError/HTTP errors depending on the cause
        raise hub_error(kind, name, exc) from exc


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    """AutoTokenizer from a local path or hub id (fast tokenizers only: masks need offsets-free exact ids).

    An adapter-only folder without tokenizer files gives its base's tokenizer.
    """
    from transformers import AutoTokenizer

    base = adapter_base(name)
    if base is not None and not _has_tokenizer(Path(name).expanduser()):
        return load_tokenizer(base, trust_remote_code=trust_remote_code)
    source, gguf = resolve_source(name, kind="tokenizer")  # a GGUF file carries its tokenizer
    return _from_pretrained(
        "tokenizer", name, AutoTokenizer.from_pretrained, source, gguf, trust_remote_code=trust_remote_code
    )


def load_or_train_tokenizer(
    name: str,
    texts: Callable[[], Iterable[str]],
    chat_template: str = "tulu",
    trust_remote_code: bool = False,
) -> Any:
    """The tokenizer `name` names, or for `tiny` / `tiny:<preset>` a BPE trained on `texts()`.

    `texts` is called only for a tiny tokenizer, so a loaded one never reads the data;
    `chat_template` (a built-in name) applies to the trained BPE only.
    """
    if is_tiny_tokenizer(name):
        return tiny_tokenizer(name, texts(), chat_template)
    return load_tokenizer(name, trust_remote_code=trust_remote_code)


def load_causal_lm(name: str, trust_remote_code: bool = False, **kwargs: Any) -> Any:
    """AutoModelForCausalLM from a local path or hub id, safetensors only, remote code off by default.

    An adapter-only folder loads its base (resolved here, so `pretrained:` bases work) and then the
    adapter onto it, as transformers would for a base it can find itself.
    """
    from transformers import AutoModelForCausalLM

    model, gguf = _load_lm(AutoModelForCausalLM, load_causal_lm, name, trust_remote_code, kwargs)
    return finish_gguf_model(model, name) if gguf else model


def _load_lm(
    auto_class: Any, load: Callable[..., Any], name: str, trust_remote_code: bool, kwargs: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """(`auto_class` model of `name`, the GGUF load arguments used): an adapter-only folder loads its
    base through `load` (so `pretrained:` bases work), then the adapter onto it, with no GGUF arguments."""
    base = adapter_base(name)
    if base is not None:
        model = load(base, trust_remote_code=trust_remote_code, **kwargs)
        model.load_adapter(str(Path(name).expanduser()))
        return model, {}
    source, gguf = resolve_source(name, for_model=True)  # GGUF weights: dequantized
    model = _from_pretrained(
        "model",
        name,
        auto_class.from_pretrained,
        source,
        gguf,
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
        **kwargs,
    )
    if is_pretrained_ref(name):
        _name_by_reference(model, name)
    return model, gguf


def _name_by_reference(model: Any, name: str) -> None:
    """Name a `pretrained:` model as given, not by this machine's cache path, so an adapter trained on it
    records `pretrained:NAME` as its base (PEFT copies `name_or_path` into adapter_config.json).

    PEFT then cannot look up that base's config when saving, to see whether the vocabulary was resized;
    instructkit never resizes it (`check_vocab_fits` refuses instead), so its warning is dropped.
    """
    import re
    import warnings

    model.name_or_path = name
    warnings.filterwarnings("ignore", message=re.escape(f"Could not find a config file in {name} "))


def model_kind(config: Any) -> str:
    """`seq2seq` for an encoder-decoder config (T5, Flan-T5, mT5, UL2, BART), else `causal`: the one test."""
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def model_kind_of(name: str, trust_remote_code: bool = False) -> str:
    """The kind of the model (or tokenizer) reference `name`: a `tiny:t5-*` preset is seq2seq, other
    tiny presets causal, anything else by its config; a reference without a readable config (a
    tokenizer-only folder, an unreachable hub id) is causal."""
    if is_tiny_tokenizer(name):
        return "seq2seq" if is_tiny_t5(name) else "causal"
    try:
        return model_kind(load_config(name, trust_remote_code))
    except InstructkitError:
        return "causal"


def load_seq2seq_lm(name: str, trust_remote_code: bool = False, **kwargs: Any) -> Any:
    """AutoModelForSeq2SeqLM from a local path or hub id (an adapter-only folder: its base, then it)."""
    from transformers import AutoModelForSeq2SeqLM

    return _load_lm(AutoModelForSeq2SeqLM, load_seq2seq_lm, name, trust_remote_code, kwargs)[0]


def load_model(
    name: str,
    tokenizer: Any = None,
    *,
    tiny_seed: int = 0,
    max_positions: int = 4096,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> Any:
    """The LM `name` names: a `tiny:` preset built for `tokenizer` (seeded), else loaded weights; an
    encoder-decoder config (`model_kind`) loads as AutoModelForSeq2SeqLM, any other as a causal LM.

    `kwargs` go to `from_pretrained`; for a tiny model `attn_implementation` and `dtype` are applied
    to the built model and `max_positions` sizes it (loaded weights keep their own).
    """
    if not is_tiny(name):
        if model_kind_of(name, trust_remote_code) == "seq2seq":  # T5 & co: encoder-decoder weights
            return load_seq2seq_lm(name, trust_remote_code=trust_remote_code, **kwargs)
        return load_causal_lm(name, trust_remote_code=trust_remote_code, **kwargs)
    if tokenizer is None:
        raise InstructkitError("a tiny: model needs a tokenizer (the prepared data's tokenizer/ directory)")
    if is_tiny_t5(name):
        model = build_tiny_t5_model(name, tokenizer, seed=tiny_seed)
    else:
        model = build_tiny_model(name, tokenizer, seed=tiny_seed, max_position_embeddings=max_positions)
    if kwargs.get("attn_implementation"):
        model.set_attn_implementation(kwargs["attn_implementation"])
    return model.to(kwargs["dtype"]) if kwargs.get("dtype") is not None else model


def load_config(name: str, trust_remote_code: bool = False) -> Any:
    """AutoConfig of a model reference (folder, hub id, GGUF file, `pretrained:`, or an adapter's base)."""
    from transformers import AutoConfig

    base = adapter_base(name)
    if base is not None:
        return load_config(base, trust_remote_code)
    source, extra = resolve_source(name, kind="model config")
    return _from_pretrained(
        "model config", name, AutoConfig.from_pretrained, source, extra, trust_remote_code=trust_remote_code
    )


def config_max_positions(config: Any) -> int | None:
    """`max_position_embeddings` of a config (its text part for a multimodal one), or None."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text_config, "max_position_embeddings", None)


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
    base = adapter_base(source)
    if base is not None:
        return model_max_positions(base, trust_remote_code)
    name, extra = resolve_source(source)
    if not extra and not (Path(name).expanduser() / "config.json").is_file():
        return None  # a tokenizer-only folder, a tiny: preset, or a hub id (not fetched just for this)
    try:
        config = load_config(source, trust_remote_code)
    except InstructkitError:  # a folder whose config transformers cannot read: nothing to check against
        return None
    return config_max_positions(config)


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
        tok = ensure_pad_token(load_tokenizer(str(tokenizer)))  # before building: the model takes its pad id
        kwargs: dict[str, Any] = {"attn_implementation": attn_implementation, "dtype": getattr(torch, dtype)}
    else:
        tok = load_tokenizer(str(tokenizer or model), trust_remote_code=trust_remote_code)
        kwargs = _pretrained_kwargs(model, attn_implementation, quantize_4bit, dtype)
    lm = load_model(
        model,
        tok,
        tiny_seed=tiny_seed,
        max_positions=max(max_length, 64),
        trust_remote_code=trust_remote_code,
        **kwargs,
    )
    return lm, ensure_pad_token(tok)


def _pretrained_kwargs(
    model: str, attn_implementation: str | None, quantize_4bit: bool, dtype: str
) -> dict[str, Any]:
    """`from_pretrained` settings for real weights: attention kernel, dtype, and QLoRA's 4-bit base."""
    import torch

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
    return kwargs
