"""GGUF files as a model source: loaded (dequantized) through transformers' GGUF support, or imported
once into a safetensors directory (`instructkit models import`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InstructkitError
from ..hub import hub_error

GGUF_SUFFIX = ".gguf"


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
        from ..progress import log_event

        log_event(
            "model",
            f"note: {source} holds quantized GGUF weights; they were dequantized to {model.dtype} "
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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, out = Path(gguf).expanduser(), Path(out).expanduser()
    if not gguf.is_file() or gguf.suffix.lower() != GGUF_SUFFIX:
        raise InstructkitError(f"{gguf}: not a GGUF file (expected an existing *.gguf file)")
    if out.exists() and not overwrite:
        raise InstructkitError(f"{out} already exists; pass --overwrite to replace it")
    # Loaded here, not through loading.py: loading resolves `pretrained:` names, whose fetch imports this.
    source, extra = gguf_load_args(str(gguf))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, **extra)
    except Exception as exc:
        raise hub_error("tokenizer", str(gguf), exc) from exc
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
